"""The workloads every contender trains: the same model, data, batch per process and seed.

W1  digits_cnn  the launcher's small CNN on scikit-learn's digits (per-step overhead dominates)
W2  mlp_10m     a 10.5M-parameter MLP on synthetic 1024-d features (gradient communication)
W3  resnet18    torchvision's ResNet-18 on synthetic 32x32 images (convolutions dominate)
W4  tiny_lm     the launcher's byte-level GPT (recipes/tiny_lm.yaml) on the standard library's source
W5  startup     W1's training, 2 epochs, its data and model in a user module that imports scikit-learn
                and a library taking 2 s (bench/startup/): the time to the first step and the wall time
G1  resnet50    (GPU) torchvision's ResNet-50 on synthetic 224x224 images, bf16, channels_last
G2  gpt         (GPU) W4's GPT, larger: width 512, 8 blocks, 512 tokens a block, bf16

Each contender imports this module, builds its model with `model(name)` and its data with
`datasets(name)`, and calls `probe.attach(model, ...)`, which notes when each step starts and
ends: the figures come from the same clock in every contender.

BENCH_DRY=1 (bench/gpu.sh --dry-run) shrinks G1 and G2 to run on a CPU in seconds: 32x32
images, a GPT of width 64 and 2 blocks; the same code paths, not the same figures.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

SEED = 0
LM_BLOCK = 128  # W4: tokens per sample
DRY = os.environ.get("BENCH_DRY") == "1"
GPU_LM = {"width": 64, "layers": 2, "heads": 2} if DRY else {"width": 512, "layers": 8, "heads": 8}  # G2


@dataclass(frozen=True)
class Workload:
    name: str
    batch_size: int  # per process
    epochs: int
    lr: float
    loader_workers: int  # the same for every contender
    target_accuracy: float | None = None  # W1: time to reach it
    gpu: bool = False
    block_size: int | None = None  # a language model's tokens per sample: its figure is tokens/s
    val_batch_size: int = 256
    reps: int = 3  # bench/run.py's repetitions where --reps is left out
    lm_warmup: int = 40  # a language model's steps of linear warmup (as recipes/tiny_lm.yaml)
    fsdp_units: tuple[str, ...] = ()  # the module classes FSDP shards as units (then the root)

    @property
    def channels_last(self) -> bool:
        """The GPU's image workload (G1) trains in channels_last, except under FSDP2, which shards
        no parameter that is not contiguous (torch 2.14: NotImplementedError)."""
        return self.gpu and not self.block_size

    @property
    def val_metric(self) -> str:
        """What the contenders' evaluation reports: top-1 accuracy, a language model's loss (nats per token)."""
        return "loss" if self.block_size else "acc1"


WORKLOADS = {
    "w1": Workload("w1", batch_size=64, epochs=5, lr=0.003, loader_workers=0, target_accuracy=0.97),
    "w2": Workload("w2", batch_size=64, epochs=1, lr=0.001, loader_workers=0),
    "w3": Workload("w3", batch_size=32, epochs=1, lr=0.001, loader_workers=2, fsdp_units=("BasicBlock",)),
    # recipes/tiny_lm.yaml's model, data, batch and optimization, for one epoch (247 steps on 2 processes)
    "w4": Workload(
        "w4",
        batch_size=32,
        epochs=1,
        lr=3e-3,
        loader_workers=0,
        block_size=LM_BLOCK,
        val_batch_size=64,
        reps=5,
        fsdp_units=("TransformerBlock",),
    ),  # fmt: skip
    # W1's data and model from the user's own module (bench/startup/user_code.py): start-up.
    "w5": Workload("w5", batch_size=64, epochs=2, lr=0.003, loader_workers=0),
    "g1": Workload("g1", batch_size=64, epochs=1, lr=0.001, loader_workers=8, gpu=True, fsdp_units=("Bottleneck",)),
    # One epoch of 512-token blocks (3,942 of them: 123 steps on 1 GPU, 15 on 8): a short warmup.
    "g2": Workload(
        "g2",
        batch_size=32,
        epochs=1,
        lr=1e-3,
        loader_workers=0,
        gpu=True,
        block_size=512,
        val_batch_size=64,
        lm_warmup=5,
        fsdp_units=("TransformerBlock",),
    ),  # fmt: skip
}


def model(name: str) -> nn.Module:
    if name == "w5":
        import bench.startup.user_code  # noqa: F401  (the user's module, as the plain script imports it)
    torch.manual_seed(SEED)
    if name in ("w1", "w5"):
        from launcher.models.builtin import SmallCNN

        return SmallCNN(in_channels=1, num_classes=10, width=32)
    if name in ("w4", "g2"):
        from launcher.data.text import BYTES
        from launcher.models.gpt import GPT

        if name == "g2":
            return GPT(vocab_size=BYTES, block_size=WORKLOADS[name].block_size or 0, **GPU_LM)
        return GPT(vocab_size=BYTES, block_size=LM_BLOCK, width=96, layers=4, heads=4)
    if name == "w2":
        return nn.Sequential(
            nn.Linear(1024, 2048),
            nn.ReLU(),
            nn.Linear(2048, 2048),
            nn.ReLU(),
            nn.Linear(2048, 2048),
            nn.ReLU(),
            nn.Linear(2048, 10),
        )
    import torchvision

    return (
        torchvision.models.resnet18(num_classes=10) if name == "w3" else torchvision.models.resnet50(num_classes=1000)
    )


@functools.cache  # `launch` opens the train and validation splits apart
def datasets(name: str) -> tuple[Dataset, Dataset]:
    """(train, validation): real digits for W1, the standard library's source for W4 (packed
    blocks of bytes, every tenth module validating: 256 blocks), seeded synthetic tensors for the others."""
    if name in ("w4", "g2"):
        from launcher.data.text import python_source

        return python_source(block_size=WORKLOADS[name].block_size or LM_BLOCK, val_blocks=256)
    generator = torch.Generator().manual_seed(SEED)
    if name in ("w1", "w5"):
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        x = (x - 0.33) / 0.37
        y = torch.tensor(digits.target)
        order = torch.randperm(len(y), generator=generator)
        val, train = order[:360], order[360:]
        return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])
    if name == "w2":
        teacher = torch.randn(1024, 10, generator=generator)
        x = torch.randn(2560, 1024, generator=generator)
        y = (x @ teacher).argmax(1)
        return TensorDataset(x[:2048], y[:2048]), TensorDataset(x[2048:], y[2048:])
    n, size, classes = (768, 32, 10) if name == "w3" else (640, 32, 1000) if DRY else (4096, 224, 1000)
    x = torch.randn(n, 3, size, size, generator=generator)
    y = torch.randint(0, classes, (n,), generator=generator)
    return TensorDataset(x, y), TensorDataset(x[:256], y[:256])


# --- the same, as components a `launch` recipe names (bench/recipes/*.yaml) ---


def launch_model(workload: str, num_classes: int = 10) -> nn.Module:
    """`model(workload)` with the probe; `num_classes` (W4: the vocabulary) is the model's already."""
    from bench import probe

    return probe.attach(model(workload), workload, "launch")


class LaunchData(Dataset):
    """`datasets(workload)` as one split, for the recipe's `data.dataset` (train=True or False)."""

    def __init__(self, workload: str, train: bool = True) -> None:
        self.data = datasets(workload)[0 if train else 1]
        self.classes = [str(i) for i in range(10 if workload != "g1" else 1000)]

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data[index]
