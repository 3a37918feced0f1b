"""Loss, optimizer and learning-rate schedule from their recipe sections."""

from __future__ import annotations

import inspect
from collections.abc import Iterable

import torch
from torch import nn

from launcher import components
from launcher.recipe import Loss, Optimizer, Scheduler

# Arguments that say how long a schedule lasts; filled in from the run's length when left out.
LENGTH_ARGUMENTS = ("T_max", "total_steps")


def build_loss(section: Loss) -> nn.Module:
    return components.build(section, components.LOSS)


def build_optimizer(section: Optimizer, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise components.ComponentError("optimizer: the model has no trainable parameter (model.freeze froze them all)")
    return components.build(section, components.OPTIMIZER, params=trainable)


def build_scheduler(section: Scheduler | None, optimizer: torch.optim.Optimizer, length: int) -> object | None:
    """The schedule, or None. `length` is the run's length in the schedule's interval (steps or epochs)."""
    if section is None:
        return None
    factory = components.resolve(section.name, components.SCHEDULER)
    params = inspect.signature(factory).parameters
    extra = {
        name: length
        for name in LENGTH_ARGUMENTS
        if name in params and name not in section.kwargs and params[name].default in (inspect.Parameter.empty, None)
    }
    return components.build(section, components.SCHEDULER, optimizer=optimizer, **extra)


def needs_metric(scheduler: object | None) -> bool:
    """ReduceLROnPlateau steps on the validation loss, not on a count."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
