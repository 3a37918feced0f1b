"""Loss, optimizer (with the recipe's parameter groups) and learning-rate schedule from their recipe sections."""

from __future__ import annotations

import fnmatch
import inspect
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from launcher.config import components
from launcher.config.components import Kind, classes_in
from launcher.config.schema import Component, Loss, Optimizer, ParamGroup, Scheduler

log = logging.getLogger("launcher")

# Arguments that say how long a schedule lasts; filled in from the run's length when left out.
LENGTH_ARGUMENTS = ("T_max", "total_steps")


def build_loss(section: Loss) -> nn.Module:
    return components.build(section, LOSS)


def build_optimizer(section: Optimizer, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer over the model's trainable parameters, in the recipe's parameter groups if it
    gives any (then logged, with their sizes)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise components.ComponentError("optimizer: the model has no trainable parameter (model.freeze froze them all)")
    if not section.param_groups:
        return components.build(section, OPTIMIZER, params=trainable)
    groups = param_groups(section.param_groups, model)
    for label, names, group in groups:
        if not names:
            log.info("optimizer group %s: no trainable parameter left (frozen, or in an earlier group): dropped", label)
            continue
        options = {key: value for key, value in group.items() if key != "params"} or "the optimizer's own arguments"
        size = sum(p.numel() for p in group["params"])
        log.info(
            "optimizer group %s: %d tensors, %s parameters with %s: %s",
            label,
            len(names),
            f"{size:,}",
            options,
            _some(names),
        )
    # Empty groups are left out: torch would keep them, and their options would say nothing.
    return components.build(section, OPTIMIZER, params=[group for _, names, group in groups if names])


def param_groups(groups: list[ParamGroup], model: nn.Module) -> list[tuple[str, list[str], dict[str, Any]]]:
    """Torch's parameter groups for the recipe's: (label, trainable parameter names, group), the
    names empty where none is left. Each trainable parameter joins the first group that chooses it;
    the rest come first, with the optimizer's own arguments, so that group 0 (the logged train/lr)
    is the optimizer's. A ComponentError where a pattern, or a whole group, chooses no parameter of
    the model at all (a typo, as model.freeze reports one)."""
    named = list(model.named_parameters())
    if problems := _choice_problems(groups, named):
        raise components.ComponentError("\n".join(problems))
    members: list[list[tuple[str, nn.Parameter]]] = [[] for _ in range(len(groups) + 1)]
    for name, parameter in named:
        if parameter.requires_grad:  # frozen parameters join no group: the optimizer never sees them
            index = next((i for i, group in enumerate(groups) if _chooses(group, name, parameter)), -1)
            members[index + 1].append((name, parameter))
    labelled = [("the rest", {}), *((f"optimizer.param_groups.{i}", g.options) for i, g in enumerate(groups))]
    return [
        (label, [name for name, _ in chosen], {"params": [p for _, p in chosen], **options})
        for (label, options), chosen in zip(labelled, members, strict=True)
    ]


def _choice_problems(groups: list[ParamGroup], named: list[tuple[str, nn.Parameter]]) -> list[str]:
    """A pattern that matches no parameter of the model, or a group that chooses none."""
    problems = []
    for index, group in enumerate(groups):
        path = f"optimizer.param_groups.{index}"
        problems += [
            f"{path}.params: {pattern!r} matches no parameter; names look like {_some(n for n, _ in named)}"
            for pattern in group.params
            if not any(fnmatch.fnmatchcase(name, pattern) for name, _ in named)
        ]
        if not any(_chooses(group, name, parameter) for name, parameter in named) and group.ndim is not None:
            problems.append(
                f"{path}: no parameter is {_choice(group)}"
                if group.params
                else f"{path}.ndim: no parameter has {_choice(group)}"
            )
    return problems


def _chooses(group: ParamGroup, name: str, parameter: nn.Parameter) -> bool:
    dims = group.dims
    return (not group.params or any(fnmatch.fnmatchcase(name, pattern) for pattern in group.params)) and (
        dims is None or parameter.ndim in dims
    )


def _choice(group: ParamGroup) -> str:
    words = [f"named {' or '.join(map(repr, group.params))}"] if group.params else []
    dims = sorted(group.dims or ())
    words += [f"{' or '.join(map(str, dims))} dimension(s)"] if dims else []
    return " with ".join(words)


def _some(names: Iterable[str], shown: int = 6) -> str:
    names = list(names)
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


@dataclass(frozen=True)
class EndsWithRun:
    """A schedule whose length (`argument`: T_max, total_steps) the launcher filled in so that it
    ends with the run: the whole schedule, or the last one of a SequentialLR."""

    scheduler: Any
    argument: str
    start: int  # the run's step (or epoch) at which it starts


def build_scheduler(
    section: Scheduler | None, optimizer: torch.optim.Optimizer, length: int
) -> tuple[Any, list[EndsWithRun]]:
    """The schedule, or None; and the schedules in it that end with the run (their length filled
    in). `length` is the run's length in the schedule's interval (steps or epochs).

    An argument given as {name: ...}, or a list of them (SequentialLR's `schedulers`), is built as
    a schedule on the same optimizer first. Inside a SequentialLR, each one's length is what lies
    between its milestones (the last: the rest of the run); inside any other, the whole run's."""
    if section is None:
        return None, []
    return _schedule(section, "scheduler", optimizer, length)


def _schedule(
    spec: Component, path: str, optimizer: torch.optim.Optimizer, length: int
) -> tuple[Any, list[EndsWithRun]]:
    factory = components.resolve(spec.name, SCHEDULER)
    arguments, ends = dict(spec.kwargs), []
    for argument, value in spec.kwargs.items():
        inner = components.nested(value)
        if inner is None:
            continue
        built = []
        for index, (raw, (start, span)) in enumerate(
            zip(inner, _spans(factory, spec.kwargs, len(inner), length), strict=True)
        ):
            where = f"{path}.{argument}.{index}" if isinstance(value, list) else f"{path}.{argument}"
            child, child_ends = _schedule(components.spec_of(raw, where), where, optimizer, span)
            built.append(child)
            if start + span == length:
                ends += [replace(end, start=end.start + start) for end in child_ends]
        arguments[argument] = built if isinstance(value, list) else built[0]
    filled = _lengths_to_fill(factory, spec.kwargs)
    if filled and length <= 0:
        raise components.ComponentError(
            f"{path} ({spec.name}): the milestones before it reach the run's end, and leave nothing for its "
            f"{filled[0]}: lower them, lengthen the run, or give {filled[0]}"
        )
    label = spec.name if path == "scheduler" else f"{spec.name} ({path})"
    scheduler = components.make(
        spec.name, SCHEDULER, arguments, {"optimizer": optimizer, **dict.fromkeys(filled, length)}, label
    )
    return scheduler, [*ends, *(EndsWithRun(scheduler, argument, 0) for argument in filled)]


def _lengths_to_fill(factory: Any, arguments: dict[str, Any]) -> list[str]:
    """The length arguments `factory` takes, needs or defaults to None, and the recipe leaves out."""
    params = components.parameters_of(factory) or {}
    return [
        name
        for name in LENGTH_ARGUMENTS
        if name in params and name not in arguments and params[name].default in (inspect.Parameter.empty, None)
    ]


def _spans(factory: Any, arguments: dict[str, Any], count: int, length: int) -> list[tuple[int, int]]:
    """(start, length) of each of `count` schedules inside `factory`'s: between SequentialLR's
    milestones, else the whole run. Milestones torch refuses are left for it to say so."""
    milestones = arguments.get("milestones")
    if (
        isinstance(factory, type)
        and issubclass(factory, torch.optim.lr_scheduler.SequentialLR)
        and isinstance(milestones, list)
        and len(milestones) == count - 1
        and all(isinstance(m, int) for m in milestones)
    ):
        bounds = [0, *milestones, length]
        return [(start, end - start) for start, end in itertools.pairwise(bounds)]
    return [(0, length)] * count


def stretch_cosine(cosine: torch.optim.lr_scheduler.CosineAnnealingLR, done: int, length: int) -> float:
    """Make a cosine `done` steps into its curve (negative: not started; less than its T_max) last
    `length` steps in all instead, going on from the same fraction of its curve, so that the rate
    neither jumps nor climbs back after its old end. That fraction."""
    if done <= 0:
        cosine.T_max = length
        return 0.0
    fraction, left = done / cosine.T_max, length - done
    # Not a whole number of steps: the same curve, at another pace. Torch annotates T_max as an
    # int, but its formula (a cosine of last_epoch / T_max) takes any number.
    cosine.T_max = left / (1 - fraction)  # type: ignore[assignment]
    cosine.last_epoch = cosine.T_max - left
    return fraction


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
    frozenset({"optimizer", *LENGTH_ARGUMENTS}), composes=True,
)  # fmt: skip


def measure_grad_norm(net: torch.nn.Module, clip: float | None) -> float:
    """The gradients' total 2-norm, before clipping them to `clip` where it is set. Every rank
    calls it: under FSDP each holds a shard, and the norm is all-reduced."""
    parameters = [p for p in net.parameters() if p.grad is not None]
    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(parameters, clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
    whole = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # a DTensor under FSDP
    return float(whole.item())
