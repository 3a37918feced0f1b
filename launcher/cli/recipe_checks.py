"""The recipe checks that need the components themselves: names resolve to the right kind,
arguments fit their signatures, files and pretrained weights the recipe names exist. They run
before any process starts, with the schema's (`load_recipe(check=problems_in)`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.config.components import ComponentError, check_one, option_problems, resolve, use_import_paths
from launcher.config.problems import Problem, did_you_mean
from launcher.config.schema import (
    BUILTIN_TASKS,
    DEFAULT_TRACKERS,
    Loss,
    Model,
    Optimizer,
    ParamGroup,
    Scheduler,
    TaskSpec,
    metric_names,
)
from launcher.data.build import DATASET, TRANSFORM
from launcher.data.loaders import COLLATE
from launcher.models.build import MODEL
from launcher.tracking.run_logger import missing_package
from launcher.training.optim import LOSS, OPTIMIZER, SCHEDULER
from launcher.training.tasks import TASK, TASK_METRICS


def problems_in(tree: dict[str, Any]) -> list[Problem]:
    """Check every component of a raw recipe: names resolve to the right kind, arguments fit."""

    def section(*keys: str) -> Any:
        node: Any = tree
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    paths = section("run", "import_paths")
    use_import_paths(paths if isinstance(paths, list) else [])
    problems = check_one("data.dataset", section("data", "dataset"), DATASET)
    for split in ("train", "val"):
        specs = section("data", "transforms", split)
        for index, spec in enumerate(specs if isinstance(specs, list) else []):
            problems += check_one(f"data.transforms.{split}.{index}", spec, TRANSFORM)
    problems += check_one("model", section("model"), MODEL, Model)
    problems += check_one("loss", section("loss"), LOSS, Loss)
    problems += check_one("optimizer", section("optimizer"), OPTIMIZER, Optimizer)
    problems += _param_group_problems(section("optimizer"))
    problems += check_one("scheduler", section("scheduler"), SCHEDULER, Scheduler)
    problems += _weights_problems(section("model"))
    problems += _data_path_problems(section("data", "dataset"))
    problems += _collate_problems(section("data", "collate_fn"))
    problems += _task_and_metric_problems(section("task"), section("eval", "metrics"), section("checkpoint", "best"))
    problems += _strategy_problems(section("distributed", "strategy"), section("train", "precision"))
    problems += _tracker_problems(section("logging"))
    return problems


def _tracker_problems(logging: Any) -> list[Problem]:
    """Each tracker's package is installed (found now, not by rank 0 after the workers have
    started), and TensorBoard is among them where the recipe asks for what only it shows."""
    logging = logging if isinstance(logging, dict) else {}
    trackers = logging.get("trackers", DEFAULT_TRACKERS)
    if not isinstance(trackers, list):
        return []  # the schema reports what it is
    problems = [
        Problem("logging.trackers", message) for t in trackers if isinstance(t, str) and (message := missing_package(t))
    ]
    problems += [
        Problem(f"logging.{key}", f"{key} are TensorBoard's alone: add tensorboard to logging.trackers")
        for key in ("histograms", "image_grid")
        if logging.get(key) is True and "tensorboard" not in trackers
    ]
    return problems


def _strategy_problems(strategy: Any, precision: Any) -> list[Problem]:
    if strategy == "fsdp" and precision == "fp16":
        # FSDP2 has no loss scaler of its own (torch.amp.GradScaler does not know sharded gradients).
        return [Problem("train.precision", "fp16 is not supported with distributed.strategy=fsdp: use bf16")]
    return []


def _param_group_problems(optimizer: Any) -> list[Problem]:
    """Each parameter group's own optimizer arguments are ones the optimizer takes. (Whether its
    patterns match a parameter is known once the model is built: at setup, as for model.freeze.)"""
    groups = optimizer.get("param_groups") if isinstance(optimizer, dict) else None
    name = optimizer.get("name", Optimizer.model_fields["name"].default) if isinstance(optimizer, dict) else None
    if not isinstance(groups, list) or not isinstance(name, str):
        return []  # none, or the schema reports what it is
    try:
        factory = resolve(name, OPTIMIZER)
    except ComponentError:
        return []  # check_one reports the name
    own = set(ParamGroup.model_fields)
    return [
        problem
        for index, group in enumerate(groups)
        if isinstance(group, dict)
        for problem in option_problems(
            f"optimizer.param_groups.{index}", factory, {k: v for k, v in group.items() if k not in own}
        )
    ]


def _task_and_metric_problems(task: Any, metrics: Any, best: Any) -> list[Problem]:
    """A task this version trains, metrics it measures, and a best.metric among them."""
    task = "classification" if task is None else task
    name = task.get("name", "classification") if isinstance(task, dict) else task if isinstance(task, str) else None
    if name is None:
        return []  # the schema reports what it is
    if name not in TASK_METRICS and ":" not in name:
        choices = ", ".join(TASK_METRICS)
        return [
            Problem(
                "task",
                f"{name!r} is not a task this version trains: choose one of {choices}, or 'module:attr' (your own "
                f"Task){did_you_mean(name, TASK_METRICS)}",
            )
        ]
    problems = check_one("task", task, TASK, TaskSpec)
    if name not in TASK_METRICS:
        return problems  # a user's task says what it measures when it is built
    known = TASK_METRICS[name]
    names = metrics if isinstance(metrics, list) else list(BUILTIN_TASKS[name][0])
    problems += [
        Problem(
            f"eval.metrics.{i}",
            f"{m!r}: {name} measures {', '.join(known)}, or a module:attr torchmetrics Metric{did_you_mean(m, known)}",
        )
        for i, m in enumerate(names)
        if isinstance(m, str) and m not in known and ":" not in m
    ]
    measured = metric_names(n for n in names if isinstance(n, str))
    chosen = best.get("metric") if isinstance(best, dict) else None
    if isinstance(chosen, str) and chosen not in measured:
        problems.append(
            Problem(
                "checkpoint.best.metric",
                f"{chosen} is not measured: choose one of {', '.join(measured)}{did_you_mean(chosen, measured)}",
            )
        )
    return problems


def _collate_problems(name: Any) -> list[Problem]:
    if not isinstance(name, str):
        return []  # none, or the schema reports what it is
    if ":" not in name:
        return [Problem("data.collate_fn", f"{name!r}: name your function as 'module:attribute'")]
    try:
        resolve(name, COLLATE)
    except ComponentError as error:
        return [Problem("data.collate_fn", str(error))]
    return []


# The built-in datasets that read the user's files, and the arguments that name them.
DATA_PATHS = {"csv": ("path", "val_path"), "ImageFolder": ("root", "val_root")}


def _data_path_problems(dataset: Any) -> list[Problem]:
    """Files the recipe names that are not there: found now, not after the workers have started."""
    if not isinstance(dataset, dict) or dataset.get("name") not in DATA_PATHS:
        return []
    problems = []
    for key in DATA_PATHS[dataset["name"]]:
        value = dataset.get(key)
        if isinstance(value, str) and not Path(value).exists():
            problems.append(Problem(f"data.dataset.{key}", f"no such file or folder: {Path(value).resolve()}"))
    return problems


def _weights_problems(model: Any) -> list[Problem]:
    if not isinstance(model, dict) or not isinstance(model.get("weights"), str):
        return []
    # torchvision only where needed: its import takes seconds (torch._dynamo through torchvision.ops)
    import torchvision

    name, weights = model.get("name"), model["weights"]
    if name not in torchvision.models.list_models():
        return [Problem("model.weights", f"pretrained weights come from torchvision models; {name!r} is not one")]
    choices = [w.name for w in torchvision.models.get_model_weights(name)] + ["DEFAULT"]
    if weights not in choices:
        return [
            Problem(
                "model.weights",
                f"{name} has no weights {weights!r}; choose from {choices}{did_you_mean(weights, choices)}",
            )
        ]
    return []
