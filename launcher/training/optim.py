"""Loss, optimizer and learning-rate schedule from their recipe sections."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from launcher.config import components
from launcher.config.components import Kind, classes_in
from launcher.config.schema import Loss, Optimizer, Scheduler

# Arguments that say how long a schedule lasts; filled in from the run's length when left out.
LENGTH_ARGUMENTS = ("T_max", "total_steps")


def build_loss(section: Loss) -> nn.Module:
    return components.build(section, LOSS)


def build_optimizer(section: Optimizer, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise components.ComponentError("optimizer: the model has no trainable parameter (model.freeze froze them all)")
    return components.build(section, OPTIMIZER, params=trainable)


def build_scheduler(section: Scheduler | None, optimizer: torch.optim.Optimizer, length: int) -> object | None:
    """The schedule, or None. `length` is the run's length in the schedule's interval (steps or epochs)."""
    if section is None:
        return None
    factory = components.resolve(section.name, SCHEDULER)
    params = components.parameters_of(factory) or {}
    extra = {
        name: length
        for name in LENGTH_ARGUMENTS
        if name in params and name not in section.kwargs and params[name].default in (inspect.Parameter.empty, None)
    }
    return components.build(section, SCHEDULER, optimizer=optimizer, **extra)


def needs_metric(scheduler: object | None) -> bool:
    """ReduceLROnPlateau steps on the validation loss, not on a count."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def _losses() -> dict[str, Any]:
    return {name: cls for name, cls in classes_in(torch.nn, torch.nn.Module).items() if name.endswith("Loss")}


LR_SCHEDULER = torch.optim.lr_scheduler.LRScheduler


LOSS = Kind("loss", "torch.nn", torch.nn.Module, _losses)


OPTIMIZER = Kind(
    "optimizer",
    "torch.optim",
    torch.optim.Optimizer,
    lambda: classes_in(torch.optim, torch.optim.Optimizer),
    frozenset({"params"}),
)


SCHEDULER = Kind(
    "scheduler", "torch.optim.lr_scheduler", LR_SCHEDULER, lambda: classes_in(torch.optim.lr_scheduler, LR_SCHEDULER),
    frozenset({"optimizer", "T_max", "total_steps"}),
)  # fmt: skip
