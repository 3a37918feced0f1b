"""The reference: a minimal hand-written DDP script, as a torchrun user writes it.

    torchrun --standalone --nproc-per-node 2 bench/contenders/plain_ddp.py w1
    torchrun --standalone --nproc-per-node 2 bench/contenders/plain_ddp.py w4 --fsdp   # FSDP2 instead of DDP
    python bench/contenders/plain_ddp.py w1 --batch-size 128     # one process, every core

DistributedSampler, set_epoch, AdamW, an evaluation each epoch; no logging, no checkpoints.
The language model (W4) as nanoGPT trains it: no weight decay on biases and norms, warmup then
a cosine, gradient clipping, the cross-entropy of every token, the validation loss per token.
`--fsdp`: FSDP2 as torchtitan writes it (`fully_shard` each block, then the root); `--compile`:
torch.compile.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import probe, workloads  # noqa: E402

BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=sorted(workloads.WORKLOADS))
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--fsdp", action="store_true", help="FSDP2 instead of DDP")
    parser.add_argument("--compile", action="store_true", help="torch.compile")
    parser.add_argument("--max-steps", type=int, help="stop the epoch after this many steps (bench/gpu.sh's dry run)")
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
    images = w.channels_last and not (args.fsdp and distributed)
    if images:
        model = model.to(memory_format=torch.channels_last)
    ddp = wrap(model, w, device, args.fsdp, args.compile)
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
    steps = min(len(loader) * w.epochs, args.max_steps or len(loader) * w.epochs)
    optimizer, scheduler = optimization(w, ddp, steps)

    for epoch in range(w.epochs):
        sampler.set_epoch(epoch)
        ddp.train()
        for step, (batch_x, batch_y) in enumerate(loader, epoch * len(loader)):
            if step >= steps:
                break
            x, y = batch_x.to(device, non_blocking=True), batch_y.to(device, non_blocking=True)
            if images:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=w.gpu):
                output = ddp(x)  # W4: every token of every block counts
                loss = (
                    F.cross_entropy(output.flatten(0, 1), y.flatten()) if w.block_size else F.cross_entropy(output, y)
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if w.block_size:
                torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)  # FSDP's DTensors too
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        probe.validated(evaluate(w, ddp, val_loader, device))
    if distributed:
        dist.destroy_process_group()


def wrap(
    model: torch.nn.Module, w: workloads.Workload, device: torch.device, fsdp: bool, compile_: bool
) -> torch.nn.Module:
    """What the loop calls: the model in DDP, or sharded with FSDP2; compiled if asked: the whole
    model before DDP (as nanoGPT), each block before fully_shard (as torchtitan)."""
    if fsdp and dist.is_initialized():
        return fully_sharded(model, w, device, compile_)
    if compile_:
        model.compile()
    return DistributedDataParallel(model) if dist.is_initialized() else model


def fully_sharded(
    model: torch.nn.Module, w: workloads.Workload, device: torch.device, compile_: bool
) -> torch.nn.Module:
    """FSDP2: each of the workload's blocks a unit, then the root; on a GPU bf16 parameters with
    fp32 gradient reduction. The mesh on the CPU for gloo (one on CUDA with a gloo group
    crashes on a machine with GPUs)."""
    for tensor in [*model.parameters(), *model.buffers()]:  # fully_shard keeps each rank's own weights
        dist.broadcast(tensor.detach(), src=0)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if w.gpu else None, reduce_dtype=torch.float32)
    if policy.param_dtype is not None:
        # BatchNorm's weights in bf16 beside its fp32 running statistics: batch_norm refuses them. FSDP2's
        # answer (https://github.com/pytorch/torchtitan/issues/674): each one a unit of its own, in fp32.
        for norm in [m for m in model.modules() if isinstance(m, BATCH_NORMS)]:
            fully_shard(norm, mesh=mesh, mp_policy=MixedPrecisionPolicy(reduce_dtype=torch.float32))
    blocks = [m for m in model.modules() if type(m).__name__ in w.fsdp_units]
    for block in blocks:
        if compile_:
            block.compile()
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


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
    warmup = LinearLR(optimizer, start_factor=0.01, total_iters=w.lm_warmup)
    cosine = CosineAnnealingLR(optimizer, T_max=steps - w.lm_warmup, eta_min=w.lr / 10)
    return optimizer, SequentialLR(optimizer, [warmup, cosine], milestones=[w.lm_warmup])


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
