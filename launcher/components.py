"""Turning a component's name into the callable it names, and checking it is of the right kind.

A name is looked up, in order, among the launcher's built-ins, in the library of its kind
(torchvision.datasets, torchvision.transforms, torchvision.models, torch.nn, torch.optim,
torch.optim.lr_scheduler), and as `module:attribute` in the user's own code.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torchvision

from launcher.recipe import Component, Problem, Recipe, RecipeError, did_you_mean


@dataclass(frozen=True)
class Kind:
    """One kind of component: where its names come from and what it must build."""

    noun: str
    library: str
    base: type | None  # classes must subclass this; factories are checked when called
    names: Callable[[], dict[str, Any]]


def _classes_in(module: Any, base: type) -> dict[str, Any]:
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and isinstance(value, type) and issubclass(value, base) and value is not base
    }


def _datasets() -> dict[str, Any]:
    from launcher import data

    return {**data.BUILTIN_DATASETS, **_classes_in(torchvision.datasets, torch.utils.data.Dataset)}


def _transforms() -> dict[str, Any]:
    import torchvision.transforms as transforms

    return {name: value for name, value in vars(transforms).items() if isinstance(value, type) and name[0].isupper()}


def _models() -> dict[str, Any]:
    from launcher import models

    names = {name: torchvision.models.get_model_builder(name) for name in torchvision.models.list_models()}
    return {**models.BUILTIN_MODELS, **names}


def _losses() -> dict[str, Any]:
    return {name: cls for name, cls in _classes_in(torch.nn, torch.nn.Module).items() if name.endswith("Loss")}


LR_SCHEDULER = torch.optim.lr_scheduler.LRScheduler

DATASET = Kind("dataset", "torchvision.datasets", torch.utils.data.Dataset, _datasets)
TRANSFORM = Kind("transform", "torchvision.transforms", None, _transforms)
MODEL = Kind("model", "torchvision.models", torch.nn.Module, _models)
LOSS = Kind("loss", "torch.nn", torch.nn.Module, _losses)
OPTIMIZER = Kind("optimizer", "torch.optim", torch.optim.Optimizer, lambda: _classes_in(torch.optim, torch.optim.Optimizer))
SCHEDULER = Kind(
    "scheduler",
    "torch.optim.lr_scheduler",
    LR_SCHEDULER,
    lambda: {**_classes_in(torch.optim.lr_scheduler, LR_SCHEDULER), "ReduceLROnPlateau": torch.optim.lr_scheduler.ReduceLROnPlateau},
)


class ComponentError(Exception):
    """A name that does not resolve, or resolves to the wrong kind of thing."""


def use_import_paths(paths: typing.Iterable[str]) -> None:
    """Make the user's own modules importable: the recipe's folder, then the working directory."""
    for path in [*paths, "."]:
        if path not in sys.path:
            sys.path.append(path)


def resolve(name: str, kind: Kind) -> Any:
    """The class or factory that `name` stands for, or a ComponentError that says why not."""
    if ":" in name:
        return _import(name, kind)
    names = kind.names()
    if name in names:
        return names[name]
    raise ComponentError(f"no {kind.noun} named '{name}' among the built-ins or in {kind.library}{did_you_mean(name, names)}")


def _import(reference: str, kind: Kind) -> Any:
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ComponentError(f"cannot import module '{module_name}' for '{reference}': {error}") from None
    try:
        value = getattr(module, attribute)
    except AttributeError:
        public = [n for n in vars(module) if not n.startswith("_")]
        raise ComponentError(f"module '{module_name}' has no '{attribute}'{did_you_mean(attribute, public)}") from None
    if kind.base is not None and isinstance(value, type) and not issubclass(value, kind.base):
        raise ComponentError(f"'{reference}' is the class {_describe(value)}, not a {_qualname(kind.base)}")
    if not callable(value):
        raise ComponentError(f"'{reference}' is {_describe(value)}, not a {kind.noun} class or function")
    return value


def build(spec: Component, kind: Kind, **extra: Any) -> Any:
    """Call the named component with the recipe's keyword arguments plus `extra`; check the result."""
    return expect(resolve(spec.name, kind)(**spec.kwargs, **extra), kind, spec.name)


def expect(made: Any, kind: Kind, name: str) -> Any:
    """`made`, if it is of the kind's type; else a ComponentError that says what it is instead."""
    if kind.base is not None and not isinstance(made, kind.base):
        raise ComponentError(f"{kind.noun} '{name}' built {_describe(made)}, expected a {_qualname(kind.base)}")
    return made


def accepts(factory: Any, parameter: str) -> bool:
    """Whether `factory` takes a keyword argument called `parameter`."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return parameter in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _unknown_arguments(factory: Any, names: typing.Iterable[str]) -> list[tuple[str, str]]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # some builtins have no signature: let the call decide
        return []
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    known = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return [(name, did_you_mean(name, known)) for name in names if name not in known]


def _describe(value: Any) -> str:
    if isinstance(value, type):
        return f"'{_qualname(value)}' (a {', '.join(_qualname(b) for b in value.__mro__[1:3])} subclass)"
    return f"a {type(value).__name__} ({value!r:.60})"


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_one(path: str, spec: Component, kind: Kind) -> list[Problem]:
    try:
        factory = resolve(spec.name, kind)
    except ComponentError as error:
        return [Problem(f"{path}.name", f"{error} (got {spec.name!r})")]
    where = spec.name.split(":")[-1]
    return [
        Problem(f"{path}.{arg}", f"{where} takes no argument '{arg}'{hint}")
        for arg, hint in _unknown_arguments(factory, spec.kwargs)
    ]


def check(recipe: Recipe, source: str = "recipe") -> None:
    """Resolve every component in the recipe; raise one RecipeError listing every problem."""
    use_import_paths(recipe.run.import_paths)
    problems = _check_one("data.dataset", recipe.data.dataset, DATASET)
    for split in ("train", "val"):
        for index, spec in enumerate(getattr(recipe.data.transforms, split)):
            problems += _check_one(f"data.transforms.{split}.{index}", spec, TRANSFORM)
    problems += _check_one("model", recipe.model, MODEL)
    problems += _check_one("loss", recipe.loss, LOSS)
    problems += _check_one("optimizer", recipe.optimizer, OPTIMIZER)
    if recipe.scheduler is not None:
        problems += _check_one("scheduler", recipe.scheduler, SCHEDULER)
    if recipe.checkpoint.best is not None and recipe.checkpoint.best.metric not in VAL_METRICS:
        metric = recipe.checkpoint.best.metric
        problems.append(Problem("checkpoint.best.metric", f"unknown metric {metric!r}{did_you_mean(metric, VAL_METRICS)}"))
    if problems:
        raise RecipeError(source, problems)


VAL_METRICS = ("val/loss", "val/acc1", "val/acc5")
