"""PyTorch Lightning: a LightningModule and a Trainer with the DDP strategy, as its docs show.

    python bench/contenders/lightning_ddp.py w1 [--bare]

--bare turns off what a Trainer adds by default (logger, progress bar, checkpointing, model
summary); without it, the user's defaults.
"""

import argparse
import sys
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import probe, workloads  # noqa: E402


class Classifier(L.LightningModule):
    def __init__(self, workload: str) -> None:
        super().__init__()
        self.w = workloads.WORKLOADS[workload]
        self.model = probe.attach(workloads.model(workload), workload, "lightning")
        self.memory_format = torch.channels_last if self.w.gpu else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)

    def training_step(self, batch, batch_index):
        x, y = batch
        x = x.contiguous(memory_format=self.memory_format)
        return F.cross_entropy(self.model(x), y)

    def validation_step(self, batch, batch_index):
        x, y = batch
        self.log("val_acc", (self.model(x).argmax(1) == y).float().mean(), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            probe.validated(float(self.trainer.callback_metrics["val_acc"]))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.w.lr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=sorted(workloads.WORKLOADS))
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--bare", action="store_true")
    parser.add_argument("--output", default="lightning_logs")
    args = parser.parse_args()
    w = workloads.WORKLOADS[args.workload]
    L.seed_everything(workloads.SEED)
    train, val = workloads.datasets(args.workload)
    extras = (
        {"logger": False, "enable_progress_bar": False, "enable_checkpointing": False, "enable_model_summary": False}
        if args.bare
        else {}
    )
    trainer = L.Trainer(
        accelerator="gpu" if w.gpu else "cpu", devices=args.nproc, strategy="ddp", max_epochs=w.epochs,
        precision="bf16-mixed" if w.gpu else "32-true", default_root_dir=args.output, **extras,
    )  # fmt: skip
    trainer.fit(
        Classifier(args.workload),
        DataLoader(train, batch_size=w.batch_size, shuffle=True, num_workers=w.loader_workers, pin_memory=w.gpu),
        DataLoader(val, batch_size=256, num_workers=0),
    )


if __name__ == "__main__":
    main()
