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

from launcher.config.problems import Problem, did_you_mean
from launcher.config.schema import EXPLICIT_KWARGS, Component, component_arguments
from launcher.errors import UserError


@dataclass(frozen=True)
class Kind:
    """One kind of component: where its names come from and what it must build."""

    noun: str
    library: str
    base: type | None  # classes must subclass this; factories are checked when called
    names: Callable[[], dict[str, Any]]
    provided: frozenset[str] = frozenset()  # arguments the launcher passes itself
    # The launcher's own names, looked up first: a recipe naming only these never imports
    # torchvision, whose import (torch._dynamo through torchvision.ops) takes seconds.
    builtins: Callable[[], dict[str, Any]] = dict
    # Whether an argument given as {name: ...}, or a list of them, is a component of this kind
    # too (SequentialLR's `schedulers`). Only where no component of the kind takes such a mapping
    # as plain data: a dataset's or a model's may (a Hugging Face config), a schedule's does not.
    composes: bool = False


def classes_in(module: Any, base: type) -> dict[str, Any]:
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and isinstance(value, type) and issubclass(value, base) and value is not base
    }


class ComponentError(UserError):
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
    if name in (builtins := kind.builtins()):
        return builtins[name]
    names = kind.names()
    if name in names:
        return names[name]
    raise ComponentError(
        f"no {kind.noun} named '{name}' among the built-ins or in {kind.library}{did_you_mean(name, names)}"
    )


# Modules that hold no dataset, model, loss, optimizer, scheduler or transform, but the means to
# run commands, open sockets or load code: a recipe naming them is refused before any import.
REFUSED_MODULES = frozenset(
    {
        "os", "posix", "nt", "sys", "subprocess", "builtins", "shutil", "socket", "importlib", "pickle", "marshal",
        "shelve", "ctypes", "multiprocessing", "signal", "pty", "code", "codeop", "runpy", "tempfile", "urllib",
        "http", "ftplib", "smtplib", "asyncio", "threading", "webbrowser", "pdb",
    }
)  # fmt: skip


def _import(reference: str, kind: Kind) -> Any:
    module_name, _, attribute = reference.partition(":")
    if module_name.split(".")[0] in REFUSED_MODULES:
        raise ComponentError(
            f"'{reference}' points into {module_name}, which holds no {kind.noun}: refused (a recipe names datasets, "
            "models, losses, optimizers, schedulers and transforms, not system functions)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ComponentError(f"cannot import module '{module_name}' for '{reference}': {error}") from None
    except Exception as error:  # noqa: BLE001 - the user's module failed while importing: say where
        raise ComponentError(
            f"importing '{module_name}' for '{reference}' failed: {type(error).__name__}: {error}"
        ) from None
    try:
        value = getattr(module, attribute)
    except AttributeError:
        public = [n for n in vars(module) if not n.startswith("_")]
        raise ComponentError(f"module '{module_name}' has no '{attribute}'{did_you_mean(attribute, public)}") from None
    if kind.base is not None and isinstance(value, type) and not issubclass(value, kind.base):
        raise ComponentError(f"'{reference}' is the class {_describe(value)}, not a {_qualname(kind.base)}")
    if not callable(value):  # also catches 'module:' with nothing after it
        raise ComponentError(f"'{reference}' is {_describe(value)}, not a {kind.noun} class or function")
    return value


def build(spec: Component, kind: Kind, /, **extra: Any) -> Any:
    """Call the named component with the recipe's keyword arguments plus `extra` (what the
    launcher passes itself: `params`, `optimizer`...); check the result."""
    return make(spec.name, kind, spec.kwargs, extra)


def make(name: str, kind: Kind, arguments: dict[str, Any], extra: dict[str, Any], label: str | None = None) -> Any:
    """`build` with the arguments given apart from their spec (components built from nested specs
    in place of those); `label` names it in errors (default: `name`)."""
    label = label or name
    if given_twice := sorted(set(arguments) & set(extra)):
        raise ComponentError(
            f"{kind.noun} {label}: {', '.join(given_twice)} is passed by the launcher; leave it out of the recipe"
        )
    return expect(call(resolve(name, kind), label, kind, **arguments, **extra), kind, label)


def is_spec(value: Any) -> bool:
    """Whether `value` is a component written as a mapping with a `name`."""
    return isinstance(value, dict) and isinstance(value.get("name"), str)


def nested(value: Any) -> list[Any] | None:
    """For a kind that composes: the components an argument's value holds, in order (a `{name: ...}`
    mapping, or a list with any; other items of such a list are reported by check_one), or None
    where the value is plain data."""
    if is_spec(value):
        return [value]
    if isinstance(value, list) and any(map(is_spec, value)):
        return value
    return None


def spec_of(raw: Any, path: str) -> Component:
    """A nested component's raw recipe data as a Component (check_one has checked it)."""
    if not is_spec(raw):
        raise ComponentError(f"{path}: {raw!r} is not a component; write it as {{name: ..., <arguments>}}")
    try:
        return Component.model_validate(raw)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise ComponentError(f"{path}: {error}") from None


def call(factory: Any, name: str, kind: Kind, /, **kwargs: Any) -> Any:
    """`factory(**kwargs)`; arguments it rejects (torch raises TypeError or ValueError) become a ComponentError.

    The parameters before `/` are positional-only, so that every keyword argument, `kind` or
    `factory` too, reaches the user's callable."""
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as error:
        raise ComponentError(f"{kind.noun} {name}: {error}") from error


def expect(made: Any, kind: Kind, name: str) -> Any:
    """`made`, if it is of the kind's type; else a ComponentError that says what it is instead."""
    if kind.base is not None and not isinstance(made, kind.base):
        raise ComponentError(f"{kind.noun} '{name}' built {_describe(made)}, expected a {_qualname(kind.base)}")
    return made


def parameters_of(factory: Any) -> typing.Mapping[str, inspect.Parameter] | None:
    """`factory`'s parameters by name, or None where it has no signature (some builtins)."""
    try:
        return inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None


def accepts(factory: Any, parameter: str, *, by_name: bool = False) -> bool:
    """Whether `factory` takes a keyword argument called `parameter` (with `by_name`, one it
    names itself: not only through **kwargs)."""
    params = parameters_of(factory)
    if params is None:
        return False
    return parameter in params or (not by_name and any(p.kind is p.VAR_KEYWORD for p in params.values()))


def _argument_problems(
    factory: Any, arguments: dict[str, Any], provided: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """(argument, problem) for each argument `factory` does not take, takes as a number but got as
    text, or needs but was not given (and the launcher does not pass: `provided`)."""
    params = parameters_of(factory)
    if params is None:  # some builtins have no signature: let the call decide
        return []
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    known = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    where = getattr(factory, "__name__", "it")
    problems = []
    for name, value in arguments.items():
        if name not in known and not open_ended:
            problems.append((name, f"{where} takes no argument '{name}'{did_you_mean(name, known)}"))
        elif name in params and isinstance(value, str) and _wants_a_number(params[name]):
            problems.append((name, f"{where} wants a number for '{name}', got the text {value!r}"))
    for name, param in params.items():
        required = param.default is param.empty and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
        if required and name not in arguments and name not in provided:
            problems.append((name, f"{where} needs '{name}', which the recipe does not give"))
    return problems


def _wants_a_number(param: inspect.Parameter) -> bool:
    """True where the annotation or the default says int/float and nothing textual."""
    annotation = param.annotation
    if isinstance(annotation, str):  # postponed annotations: read the words
        words = set(annotation.replace("|", " ").replace(",", " ").replace("[", " ").replace("]", " ").split())
        return (
            bool(words)
            and words <= {"float", "int", "Tensor", "Union", "Optional", "None", "bool"}
            and bool(words & {"float", "int"})
        )
    if annotation is inspect.Parameter.empty:
        return type(param.default) in (int, float)
    members = set(typing.get_args(annotation)) or {annotation}
    return bool(members & {int, float}) and str not in members and not members & {typing.Any, object}


def _describe(value: Any) -> str:
    if isinstance(value, type):
        return f"'{_qualname(value)}' (a {', '.join(_qualname(b) for b in value.__mro__[1:3])} subclass)"
    return f"a {type(value).__name__} ({value!r:.60})"


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def check_one(path: str, spec: Any, kind: Kind, schema: type[Component] = Component) -> list[Problem]:
    """The problems of one component given as raw recipe data: a name, or a mapping with `name`.

    `schema` gives the section's own keys (not arguments) and its default name, if any.
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    default = schema.model_fields["name"].default
    if isinstance(spec, dict) and "name" not in spec and isinstance(default, str):
        spec = {**spec, "name": default}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return []  # the schema reports a missing or mistyped name
    arguments = component_arguments(spec, schema.model_fields)
    explicit = spec.get(EXPLICIT_KWARGS)

    def where(arg: str) -> str:
        return f"{path}.{EXPLICIT_KWARGS}.{arg}" if isinstance(explicit, dict) and arg in explicit else f"{path}.{arg}"

    # Inner components are checked whether or not the outer name resolves: every problem at once.
    inner = _nested_problems({where(arg): value for arg, value in arguments.items()}, kind) if kind.composes else []
    try:
        factory = resolve(spec["name"], kind)
    except ComponentError as error:
        return [Problem(f"{path}.name", str(error)), *inner]
    return [
        *(Problem(where(arg), message) for arg, message in _argument_problems(factory, arguments, kind.provided)),
        *inner,
    ]


def _nested_problems(arguments: dict[str, Any], kind: Kind) -> list[Problem]:
    """The problems of the components inside arguments (by their dotted paths) of a kind that composes."""
    problems = []
    for path, value in arguments.items():
        for index, item in enumerate(nested(value) or []):
            item_path = f"{path}.{index}" if isinstance(value, list) else path
            if is_spec(item):
                problems += check_one(item_path, item, kind)
            else:
                problems.append(Problem(item_path, f"{item!r}: write each {kind.noun} of the list as {{name: ...}}"))
    return problems


def option_problems(path: str, factory: Any, options: dict[str, Any]) -> list[Problem]:
    """The problems of arguments that a component takes by name but that are given apart from it
    (a parameter group's `weight_decay`): ones it does not take, or takes as a number but got as text."""
    return [
        Problem(f"{path}.{arg}", message)
        for arg, message in _argument_problems(factory, options, provided=frozenset(parameters_of(factory) or ()))
    ]
