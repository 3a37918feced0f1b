"""The reference: a minimal hand-written DDP script, as a torchrun user writes it.

    torchrun --standalone --nproc-per-node 2 bench/contenders/plain_ddp.py w1
    python bench/contenders/plain_ddp.py w1 --batch-size 128     # one process, every core

DistributedSampler, set_epoch, AdamW, an evaluation each epoch; no logging, no checkpoints.
The language model (W4) as nanoGPT trains it: no weight decay on biases and norms, warmup then
a cosine, gradient clipping, the cross-entropy of every token, the validation loss per token.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import probe, workloads  # noqa: E402

LM_WARMUP = 40  # steps, as recipes/tiny_lm.yaml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=sorted(workloads.WORKLOADS))
    parser.add_argument("--batch-size", type=int)
    args = parser.parse_args()
    w = workloads.WORKLOADS[args.workload]
    distributed = "RANK" in os.environ
    cuda = w.gpu and torch.cuda.is_available()
    if distributed:
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)

    model = probe.attach(workloads.model(args.workload), args.workload, "plain").to(device)
    if w.gpu:
        model = model.to(memory_format=torch.channels_last)
    ddp = DistributedDataParallel(model) if distributed else model
    train, val = workloads.datasets(args.workload)
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=workloads.SEED)
    loader = DataLoader(
        train,
        batch_size=args.batch_size or w.batch_size,
        sampler=sampler,
        num_workers=w.loader_workers,
        pin_memory=cuda,
    )
    val_loader = DataLoader(
        val,
        batch_size=w.val_batch_size,
        sampler=DistributedSampler(val, num_replicas=world, rank=rank, shuffle=False),
    )
    optimizer, scheduler = optimization(w, ddp, steps=len(loader) * w.epochs)

    for epoch in range(w.epochs):
        sampler.set_epoch(epoch)
        ddp.train()
        for batch_x, batch_y in loader:
            x, y = batch_x.to(device, non_blocking=True), batch_y.to(device, non_blocking=True)
            if w.gpu:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=w.gpu):
                output = ddp(x)  # W4: every token of every block counts
                loss = (
                    F.cross_entropy(output.flatten(0, 1), y.flatten()) if w.block_size else F.cross_entropy(output, y)
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if w.block_size:
                torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        probe.validated(evaluate(w, ddp, val_loader, device))
    if distributed:
        dist.destroy_process_group()


def optimization(
    w: workloads.Workload, model: torch.nn.Module, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """AdamW; for the language model with no decay on biases and norms, and a warmup then a cosine."""
    if not w.block_size:
        return torch.optim.AdamW(model.parameters(), lr=w.lr), None
    matrices = [p for p in model.parameters() if p.ndim > 1]  # and the embeddings
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups: list[dict[str, Any]] = [{"params": matrices}, {"params": rest, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=w.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = LinearLR(optimizer, start_factor=0.01, total_iters=LM_WARMUP)
    cosine = CosineAnnealingLR(optimizer, T_max=steps - LM_WARMUP, eta_min=w.lr / 10)
    return optimizer, SequentialLR(optimizer, [warmup, cosine], milestones=[LM_WARMUP])


def evaluate(w: workloads.Workload, model: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Top-1 accuracy, or a language model's loss per token, over every rank's share."""
    model.eval()
    sums = torch.zeros(2, device=device)  # (correct, samples), or (summed loss, tokens)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=w.gpu):
        for batch_x, batch_y in loader:
            x, y = batch_x.to(device), batch_y.to(device)
            if w.block_size:
                summed = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum")
                sums += torch.stack([summed, torch.tensor(y.numel(), device=device)])
            else:
                sums += torch.stack([(model(x).argmax(1) == y).sum(), torch.tensor(len(y), device=device)])
    if dist.is_initialized():
        dist.all_reduce(sums)
    return (sums[0] / sums[1]).item()


if __name__ == "__main__":
    main()
