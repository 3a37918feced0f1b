"""The task: what a batch's loss is and what an evaluation measures. Today classification (the
loss named by the recipe, top-k accuracy); a regression, segmentation or language-model task
plugs in here, behind the same three methods. A batch is whatever the loader yields (tuples,
dicts, nested), moved to the device by the loop (`training.batches`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from launcher.config.schema import metric_names
from launcher.training.evaluate import evaluate

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class Step(NamedTuple):
    """One batch through the model: the loss to go backward from, and what the model returned."""

    loss: torch.Tensor
    outputs: Any


class Task(Protocol):
    def step(self, model: nn.Module, batch: Any) -> Step:
        """Run the model on one batch (already on the device) and compute its loss."""
        ...

    def evaluate(
        self, model: nn.Module, batches: Batches, device: torch.device, autocast: contextlib.AbstractContextManager
    ) -> dict[str, float]:
        """Each metric over the whole validation set (every rank's shard), as logged: val/loss, ..."""
        ...

    def metric_names(self) -> list[str]:
        """What `evaluate` returns: the names checkpoint.best.metric and a sweep's --metric may take."""
        ...


class Classification:
    """The recipe's loss on class scores; val/loss and top-k accuracy for each k asked for."""

    def __init__(self, loss_fn: nn.Module, topk: tuple[int, ...]) -> None:
        self.loss_fn, self.topk = loss_fn, topk

    def step(self, model: nn.Module, batch: Any) -> Step:
        inputs, targets = batch
        outputs = model(inputs)
        return Step(self.loss_fn(outputs, targets), outputs)

    def evaluate(
        self, model: nn.Module, batches: Batches, device: torch.device, autocast: contextlib.AbstractContextManager
    ) -> dict[str, float]:
        return evaluate(model, batches, self.loss_fn, device, autocast=autocast, topk=self.topk)

    def metric_names(self) -> list[str]:
        return metric_names(f"acc{k}" for k in self.topk)
