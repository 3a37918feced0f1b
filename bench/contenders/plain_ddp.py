"""The reference: a minimal hand-written DDP script, as a torchrun user writes it.

    torchrun --standalone --nproc-per-node 2 bench/contenders/plain_ddp.py w1
    python bench/contenders/plain_ddp.py w1 --batch-size 128     # one process, every core

DistributedSampler, set_epoch, AdamW, an evaluation each epoch; no logging, no checkpoints.
"""

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import probe, workloads  # noqa: E402


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
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=w.lr)
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
        val, batch_size=256, sampler=DistributedSampler(val, num_replicas=world, rank=rank, shuffle=False)
    )

    for epoch in range(w.epochs):
        sampler.set_epoch(epoch)
        ddp.train()
        for batch_x, batch_y in loader:
            x, y = batch_x.to(device, non_blocking=True), batch_y.to(device, non_blocking=True)
            if w.gpu:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=w.gpu):
                loss = F.cross_entropy(ddp(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        ddp.eval()
        correct = torch.zeros(2, device=device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=w.gpu):
            for batch_x, batch_y in val_loader:
                x, y = batch_x.to(device), batch_y.to(device)
                correct += torch.stack([(ddp(x).argmax(1) == y).sum(), torch.tensor(len(y), device=device)])
        if distributed:
            dist.all_reduce(correct)
        probe.validated((correct[0] / correct[1]).item())
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
