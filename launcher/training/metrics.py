"""Evaluation metrics by name.

acc1 and acc5 are counted here, as float64 sums added up across ranks in one all-reduce (exact,
and no import). The others come from torchmetrics (the field's library, distributed-aware):
each rank updates them on its own exact shard of the validation set (no padded duplicates:
data.loaders.ShardSampler), and `compute()` gathers every rank's states over the default process
group, so a metric is that of the whole validation set on any number of ranks. Sums are kept in
float64 (torchmetrics' float32 drifts by about 2e-6 over a few million values). A name is a
built-in one below or `module:attr`, a torchmetrics Metric class of the user's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch

from launcher.config import components
from launcher.config.components import Kind
from launcher.config.schema import metric_tag
from launcher.distributed.process_group import gather

if TYPE_CHECKING:
    from torchmetrics import Metric

TOP_K = {"acc1": 1, "acc5": 5}  # counted by the task itself
CLASSIFICATION = ("f1_macro", "auroc")
REGRESSION = ("mae", "mse", "rmse", "r2")
LANGUAGE_MODEL = ("perplexity",)  # exp(val/loss), from the exact mean loss: no torchmetrics


def _torchmetrics() -> Any:
    # start-up: torchmetrics' import takes 1.3 to 3 s (it imports torchvision, matplotlib, scipy):
    # only where a recipe names a metric it computes.
    import torchmetrics

    return torchmetrics


def _builtin(name: str, num_classes: int) -> Metric:
    tm = _torchmetrics()
    factories: dict[str, Callable[[], Metric]] = {
        "f1_macro": lambda: tm.classification.MulticlassF1Score(num_classes=num_classes, average="macro"),
        "auroc": lambda: tm.classification.MulticlassAUROC(num_classes=num_classes, average="macro"),
        "mae": tm.regression.MeanAbsoluteError,
        "mse": tm.regression.MeanSquaredError,
        "rmse": lambda: tm.regression.MeanSquaredError(squared=False),
        "r2": tm.regression.R2Score,
    }
    return factories[name]().set_dtype(torch.float64)


def user_metric(name: str) -> Metric:
    """A `module:attr` metric: a torchmetrics Metric class (or factory) of the user's, built with no argument."""
    kind = Kind("metric", "torchmetrics", _torchmetrics().Metric, dict)
    factory = components.resolve(name, kind)
    return components.expect(components.call(factory, name, kind), kind, name)


def build_metrics(names: Sequence[str], builtin: Sequence[str], num_classes: int = 0) -> dict[str, Metric]:
    """The torchmetrics metrics among `names` (built-in ones from `builtin`, or `module:attr`),
    by the tag they are logged under; top-k accuracies are left to the task."""
    return {
        metric_tag(name): _builtin(name, num_classes) if name in builtin else user_metric(name)
        for name in names
        if name not in TOP_K
    }


def measured_topk(names: Sequence[str], num_classes: int) -> tuple[int, ...]:
    """The k of each top-k accuracy asked for that makes sense for the class count."""
    return tuple(k for name, k in TOP_K.items() if name in names and k <= num_classes)


def empty_list_states(metrics: Mapping[str, Metric]) -> int:
    """How many list states (torchmetrics' "cat" states: exact AUROC's scores and targets, a
    user's metric's) are empty on this rank: one that saw no validation batch has them all empty."""
    return sum(isinstance(v, list) and not v for m in metrics.values() for v in m.metric_state.values())


def fill_empty_list_states(metrics: Mapping[str, Metric]) -> None:
    """Give each list state that is empty here an empty tensor shaped as another rank's (0 rows
    of the same columns and dtype), so that `compute()` gathers the same kind of tensor from
    every rank. Every rank calls it: it gathers what each holds.

    torchmetrics gathers an empty list state as a placeholder of its own (`torch.tensor([])`:
    1-D, of the metric's dtype; Lightning-AI/torchmetrics#2468, for #2463), which does not match
    the other ranks' (N, C) float scores and (N,) int64 targets: gloo aborts with "op.preamble.length
    <= op.nbytes" (seen with MulticlassAUROC, 3 ranks, one of them with no sample), NCCL would hang.
    """
    held: dict[tuple[str, str], tuple[tuple[int, ...], torch.dtype]] = {
        (tag, name): (tuple(value[0].shape[1:]), value[0].dtype)
        for tag, metric in metrics.items()
        for name, value in metric.metric_state.items()
        if isinstance(value, list) and value
    }
    like: dict[tuple[str, str], tuple[tuple[int, ...], torch.dtype]] = {}
    for on_rank in gather(held):
        like = {**cast(dict, on_rank), **like}
    for tag, metric in metrics.items():
        for name, value in metric.metric_state.items():
            if isinstance(value, list) and not value and (tag, name) in like:
                shape, dtype = like[tag, name]
                value.append(torch.empty((0, *shape), dtype=dtype, device=metric.device))
