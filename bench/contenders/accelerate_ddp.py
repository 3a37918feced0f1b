"""Hugging Face Accelerate: the loop of its docs, prepared by an Accelerator.

    accelerate launch --multi_gpu --num_processes 2 bench/contenders/accelerate_ddp.py w1

(`--multi_gpu` is how `accelerate launch` starts several processes; without a GPU they run on
the CPU with gloo.)
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import probe, workloads  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=sorted(workloads.WORKLOADS))
    args = parser.parse_args()
    w = workloads.WORKLOADS[args.workload]
    set_seed(workloads.SEED)
    accelerator = Accelerator(cpu=not w.gpu, mixed_precision="bf16" if w.gpu else "no")
    model = probe.attach(workloads.model(args.workload), args.workload, "accelerate")
    memory_format = torch.channels_last if w.gpu else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=w.lr)
    train, val = workloads.datasets(args.workload)
    loader = DataLoader(train, batch_size=w.batch_size, shuffle=True, num_workers=w.loader_workers, pin_memory=w.gpu)
    val_loader = DataLoader(val, batch_size=256)
    model, optimizer, loader, val_loader = accelerator.prepare(model, optimizer, loader, val_loader)

    for _ in range(w.epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x.contiguous(memory_format=memory_format)), y)
            accelerator.backward(loss)
            optimizer.step()
        model.eval()
        correct, seen = 0, 0
        with torch.no_grad():
            for x, y in val_loader:
                predictions, targets = accelerator.gather_for_metrics((model(x).argmax(1), y))
                correct, seen = correct + int((predictions == targets).sum()), seen + len(targets)
        if accelerator.is_main_process:
            probe.validated(correct / seen)
    accelerator.end_training()


if __name__ == "__main__":
    main()
