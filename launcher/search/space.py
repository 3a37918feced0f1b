"""A search's space: `key=uniform:a:b`, `loguniform:a:b`, `int:a:b`, `choice:a,b,c` on the command line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from launcher.config.overrides import parse_override
from launcher.config.problems import Problem, RecipeError
from launcher.sweep.grid import split_choices

if TYPE_CHECKING:
    import optuna

Kind = Literal["uniform", "loguniform", "int", "choice"]
KINDS: tuple[Kind, ...] = ("uniform", "loguniform", "int", "choice")
SYNTAX = "uniform:LOW:HIGH, loguniform:LOW:HIGH, int:LOW:HIGH or choice:A,B,C"


@dataclass(frozen=True)
class Dimension:
    """One key of the space, as given (`text`) and as understood."""

    text: str  # loguniform:1e-4:1e-1
    kind: Kind
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The dimension as Optuna samples it."""
        # start-up: optuna's import takes about 1 s: only for searches and their trials
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(self.choices)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(self.low, self.high, log=self.kind == "loguniform")

    def corners(self) -> list[Any]:
        """The values that a recipe is checked with before the search starts: the bounds, each choice."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


def parse_dimension(key: str, text: str) -> Dimension | str:
    """The dimension `text` gives `key`, or what is wrong with it (for a Problem at `key`)."""
    kind, _, rest = text.partition(":")
    return _choices(key, text, rest) if kind == "choice" else _range(text, cast(Kind, kind), rest)


def _choices(key: str, text: str, rest: str) -> Dimension | str:
    parts = split_choices(rest)
    if any(not part.strip() for part in parts):
        return f"'{text}': an empty choice; give choice:A,B,C"
    choices = tuple(parse_override(f"{key}={part}")[1] for part in parts)
    if len({json.dumps(choice) for choice in choices}) < len(choices):
        return f"'{text}': a choice comes twice"
    if any(isinstance(choice, (list, dict)) for choice in choices):
        return f"'{text}': a choice must be a number, a string, true/false or null (Optuna stores no lists)"
    return Dimension(text, "choice", choices=choices)


def _range(text: str, kind: Kind, rest: str) -> Dimension | str:
    bounds = rest.split(":")
    if len(bounds) != len(("LOW", "HIGH")):
        return f"'{text}': give {kind}:LOW:HIGH, two bounds"
    try:
        low, high = (int(b) if kind == "int" else float(b) for b in bounds)
    except ValueError:
        return f"'{text}': the bounds must be {'integers' if kind == 'int' else 'numbers'}"
    if not low < high:
        return f"'{text}': LOW must be below HIGH"
    if kind == "loguniform" and low <= 0:
        return f"'{text}': a log-uniform range must be above 0"
    return Dimension(text, kind, low=low, high=high)


def parse_space(overrides: Sequence[str]) -> tuple[dict[str, Dimension], list[str]]:
    """The overrides of `launch search`: (the space: those whose value starts with a kind and a
    colon, by key; the others as given, the same for every trial). Every problem raised at once."""
    space: dict[str, Dimension] = {}
    fixed: list[str] = []
    problems: list[Problem] = []
    for text in overrides:
        key, _, value = text.partition("=")
        if value.partition(":")[0] not in KINDS:
            parse_override(text)  # the key=value form and the YAML, checked now
            fixed.append(text)
            continue
        dimension = parse_dimension(key, value)
        if isinstance(dimension, str):
            problems.append(Problem(key, f"{dimension} ({SYNTAX})"))
        else:
            space[key] = dimension
    if problems:
        raise RecipeError("command line", problems)
    return space, fixed


def probes(space: dict[str, Dimension]) -> list[dict[str, Any]]:
    """Points of the space that together hold every corner of every key: the recipes to check."""
    corners = {key: dimension.corners() for key, dimension in space.items()}
    longest = max(len(values) for values in corners.values())
    return [{key: values[min(i, len(values) - 1)] for key, values in corners.items()} for i in range(longest)]
