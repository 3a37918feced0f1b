"""A sweep's grid: `key=a,b,c` choices and the recipe's `sweep:`, their combinations, and a readable, safe name for each run."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher.config.overrides import parse_override
from launcher.config.problems import Problem, RecipeError

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")  # what a run folder's name may not hold (besides its own = and ,)


MAX_NAME = 120  # characters of a run folder's name, a hash included where it had to be cut


def split_choices(text: str) -> list[str]:
    """An override's value cut at its top-level commas: those outside [], {} and quotes.
    `0.1,0.03` -> ['0.1', '0.03']; `[a,b]` -> ['[a,b]']; `[a,b],[c]` -> ['[a,b]', '[c]']."""
    parts, current, depth, quote = [], "", 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]


def parse_command_line(overrides: Sequence[str]) -> tuple[dict[str, list[Any]], list[str]]:
    """The overrides of `launch sweep`: (the grid of those with several values, the others as given)."""
    grid: dict[str, list[Any]] = {}
    fixed: list[str] = []
    problems: list[Problem] = []
    for text in overrides:
        key, _, raw = text.partition("=")
        choices = split_choices(raw)
        if len(choices) == 1:
            parse_override(text)  # the key=value form and the YAML, checked now
            fixed.append(text)
            continue
        if any(not choice.strip() for choice in choices):
            problems.append(Problem(key, f"'{raw}' has an empty choice between its commas"))
            continue
        grid[key] = [parse_override(f"{key}={choice}")[1] for choice in choices]
    if problems:
        raise RecipeError("command line", problems)
    return grid, fixed


def merge_grids(
    from_recipe: dict[str, list[Any]], from_command_line: dict[str, list[Any]], fixed: list[str]
) -> dict[str, list[Any]]:
    """The recipe's grid with the command line's over it: its lists replace the recipe's for the
    same key (in the recipe's order; new keys after), and a key given one value leaves the grid."""
    fixed_keys = {text.partition("=")[0] for text in fixed}
    grid = {key: values for key, values in from_recipe.items() if key not in fixed_keys}
    grid.update(from_command_line)
    return grid


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key by its last part, or by as many of its last parts as tell it from the others:
    optimizer.lr -> lr; data.transforms.train.0.size and data.transforms.val.0.size -> train.0.size, val.0.size."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if sum(other == suffix or other.endswith(f".{suffix}") for other in keys) == 1:
                break
        short[key] = suffix
    return short


def value_text(value: Any) -> str:
    """A value as it appears in a run folder's name: filesystem-safe characters only."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        text = repr(value)
    else:
        text = json.dumps(value, separators=(",", ":"))  # true, null, [a,b] ...
    return UNSAFE.sub("_", text).strip("_") or "_"


def run_names(grid: dict[str, list[Any]], combos: list[dict[str, Any]]) -> list[str]:
    """Readable, unique, filesystem-safe folder names: `lr=0.1,batch_size=32`. A name cut to
    MAX_NAME characters, or one that two combinations would share, ends with a hash of its values."""
    short = short_keys(list(grid))
    names = [",".join(f"{short[key]}={value_text(value)}" for key, value in params.items()) for params in combos]
    for i, (name, params) in enumerate(zip(names, combos, strict=True)):
        if len(name) > MAX_NAME or names.count(name) > 1:
            names[i] = f"{name[: MAX_NAME - 9]}-{_digest(params)}"
    return names


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:8]


def sweep_id(recipe_path: str, grid: dict[str, list[Any]], overrides: list[str]) -> str:
    """The same for the same recipe file, grid and other overrides: the same command finds its folder again."""
    return _digest({"recipe": str(Path(recipe_path).resolve()), "grid": grid, "overrides": overrides})
