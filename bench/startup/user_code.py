"""W5's user code, as a user's project holds it: a dataset and a model in a module of its own that
imports, at the top, what projects import: scikit-learn, and a library that takes about 2 s
(slow_library). bench/recipes/w5.yaml names them as `module:attr` components; the plain torchrun
script imports this same module (bench/workloads.py). The data and model are W1's (digits, the
small CNN)."""

from __future__ import annotations

import sklearn.datasets  # noqa: F401  (a user's data code imports it at the top)
from torch import nn

from bench.startup import slow_library  # noqa: F401  (about 2 s of CPU)
from bench.workloads import LaunchData, launch_model


class Digits(LaunchData):
    """The digits, as the recipe's `data.dataset` (train=True or False)."""

    def __init__(self, train: bool = True) -> None:
        super().__init__("w5", train)


def cnn(num_classes: int = 10) -> nn.Module:
    """W1's small CNN, with the bench's stopwatch attached."""
    return launch_model("w5", num_classes)
