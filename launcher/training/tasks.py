"""The recipe's `task:` made into a Task: a built-in one by name, or the user's own (`module:attr`).

A user's task is a class (or factory) called with the recipe's arguments beside `name`, plus
what the launcher passes where it takes them by name: `loss_fn` (the recipe's `loss:`),
`metrics` (the recipe's eval.metrics, built: {tag: torchmetrics Metric}) and `info` (what the
data is: classes, input shape, vocabulary). It must implement `training.task.Task`; subclassing
`TaskBase` gives every part but `step`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from launcher.config import components
from launcher.config.components import Kind
from launcher.config.schema import TaskSpec
from launcher.data.datasets import DataInfo
from launcher.errors import UserError
from launcher.training.language_model import LanguageModel
from launcher.training.metrics import CLASSIFICATION, LANGUAGE_MODEL, REGRESSION, build_metrics, measured_topk
from launcher.training.task import Classification, Regression, Task

# What each built-in task measures by name, besides `module:attr` metrics (a user's task: any of these but the top-k accuracies).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("acc1", "acc5", *CLASSIFICATION),
    "regression": REGRESSION,
    "language_model": LANGUAGE_MODEL,
}
TASK_PARTS = ("step", "update", "counts", "derived", "answer")


def classification(loss_fn: nn.Module, metrics: list[str], info: DataInfo) -> Task:
    return Classification(
        loss_fn, measured_topk(metrics, info.num_classes), build_metrics(metrics, CLASSIFICATION, info.num_classes)
    )


def regression(loss_fn: nn.Module, metrics: list[str], info: DataInfo) -> Task:
    return Regression(loss_fn, build_metrics(metrics, REGRESSION))


def language_model(
    loss_fn: nn.Module,
    metrics: list[str],
    info: DataInfo,
    model_computes_loss: bool = False,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 40,
    seed: int = 0,
) -> Task:
    """Next-token prediction; the arguments after `info` are `launch predict`'s sampling (and
    whether the model returns its own loss, Hugging Face style)."""
    return LanguageModel(
        loss_fn, build_metrics([m for m in metrics if m != "perplexity"], ()), perplexity="perplexity" in metrics,
        model_computes_loss=model_computes_loss, max_new_tokens=max_new_tokens, temperature=temperature,
        top_k=top_k, seed=seed,
    )  # fmt: skip


BUILTIN_TASK_FACTORIES = {"classification": classification, "regression": regression, "language_model": language_model}

TASK = Kind(
    "task", "the launcher's tasks", None, lambda: BUILTIN_TASK_FACTORIES, frozenset({"loss_fn", "metrics", "info"}),
    lambda: BUILTIN_TASK_FACTORIES,
)  # fmt: skip


def wants_classes(spec: TaskSpec) -> bool | None:
    """Whether the task's targets are classes (data.classes, the dataset's): classification's are,
    regression's and a language model's are not; a user's task gets them where the data says them."""
    return True if spec.name == "classification" else None if spec.name not in BUILTIN_TASK_FACTORIES else False


def build_task(spec: TaskSpec, metrics: list[str] | None, loss_fn: nn.Module, info: DataInfo) -> Task:
    """The recipe's task with its metrics (eval.metrics, or the task's defaults)."""
    names = metrics or []
    factory = components.resolve(spec.name, TASK)
    if spec.name in BUILTIN_TASK_FACTORIES:
        return components.call(factory, spec.name, TASK, loss_fn=loss_fn, metrics=names, info=info, **spec.kwargs)
    given: dict[str, Any] = {"loss_fn": loss_fn, "info": info}
    if components.accepts(factory, "metrics", by_name=True):
        builtin = tuple(n for known in TASK_METRICS.values() for n in known if n not in ("acc1", "acc5", "perplexity"))
        given["metrics"] = build_metrics(names, builtin, info.num_classes)
    elif names:
        raise UserError(
            f"eval.metrics={names}: the task {spec.name} takes no `metrics` argument; let it take one, or name its "
            "metrics in the task itself"
        )
    passed = {key: value for key, value in given.items() if components.accepts(factory, key, by_name=True)}
    task = components.call(factory, spec.name, TASK, **passed, **spec.kwargs)
    missing = [part for part in TASK_PARTS if not callable(getattr(task, part, None))]
    missing += [part for part in ("counted", "metrics", "unit") if not hasattr(task, part)]
    if missing:
        raise UserError(
            f"task {spec.name} built a {type(task).__name__} without {', '.join(missing)}: a task implements "
            "launcher.training.task.Task (subclass launcher.training.task.TaskBase to have all but `step`)"
        )
    return task
