"""Evaluation metrics by name, from torchmetrics (the field's library, distributed-aware).

Each rank updates its metrics on its own exact shard of the validation set (no padded
duplicates: data.loaders.ShardSampler), and `compute()` gathers the states of every rank over
the default process group, so a metric is that of the whole validation set on any number of
ranks. A name is a built-in one below or `module:attr`, a torchmetrics Metric class of the user's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torchmetrics
from torchmetrics import classification, regression

from launcher.config import components
from launcher.config.components import Kind
from launcher.config.schema import LOWER_IS_BETTER

METRIC = Kind("metric", "torchmetrics", torchmetrics.Metric, lambda: {})

# name -> factory(num_classes); the classification metrics need the class count.
CLASSIFICATION: dict[str, Callable[[int], torchmetrics.Metric]] = {
    "acc1": lambda n: classification.MulticlassAccuracy(num_classes=n, top_k=1, average="micro"),
    "acc5": lambda n: classification.MulticlassAccuracy(num_classes=n, top_k=5, average="micro"),
    "f1_macro": lambda n: classification.MulticlassF1Score(num_classes=n, average="macro"),
    "auroc": lambda n: classification.MulticlassAUROC(num_classes=n, average="macro"),
}
REGRESSION: dict[str, Callable[[], torchmetrics.Metric]] = {
    "mae": regression.MeanAbsoluteError,
    "mse": regression.MeanSquaredError,
    "rmse": lambda: regression.MeanSquaredError(squared=False),
    "r2": regression.R2Score,
}
TOP_K = {"acc1": 1, "acc5": 5}


def tag(name: str) -> str:
    """How a metric is logged: val/<name>, a `module:attr` one under its attribute's name."""
    return f"val/{name.rpartition(':')[2]}"


def user_metric(name: str) -> torchmetrics.Metric:
    """A `module:attr` metric: a torchmetrics Metric class (or factory) of the user's, built with no argument."""
    factory = components.resolve(name, METRIC)
    return components.expect(components.call(factory, name, METRIC), METRIC, name)


def classification_metrics(names: Sequence[str], num_classes: int) -> dict[str, torchmetrics.Metric]:
    """The metrics `names` asks for, by their logged tag; acc<k> only where k <= the class count."""
    built = {}
    for name in names:
        if name in CLASSIFICATION:
            if TOP_K.get(name, 0) <= num_classes:
                built[tag(name)] = CLASSIFICATION[name](num_classes)
        else:
            built[tag(name)] = user_metric(name)
    return built


def regression_metrics(names: Sequence[str]) -> dict[str, torchmetrics.Metric]:
    return {tag(name): REGRESSION[name]() if name in REGRESSION else user_metric(name) for name in names}


def lower_is_better(metric_tag: str, metrics: dict[str, Any]) -> bool:
    """The direction of a logged metric: the table's for built-in names, else the Metric's own."""
    name = metric_tag.rpartition("/")[2]
    made = metrics.get(metric_tag)
    if name in LOWER_IS_BETTER or made is None:
        return name in LOWER_IS_BETTER
    return getattr(made, "higher_is_better", True) is False
