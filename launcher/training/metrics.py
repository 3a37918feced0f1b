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

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from launcher.config import components
from launcher.config.components import Kind
from launcher.config.schema import metric_tag

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
