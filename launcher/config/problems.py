"""A recipe's problems: each with its dotted path, all reported at once, with a did-you-mean."""

from __future__ import annotations

import difflib
import typing
from typing import Any


class Problem(typing.NamedTuple):
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class RecipeError(Exception):
    """Every problem found in a recipe, each with its dotted path."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source}: {len(problems)} {noun} in the recipe; nothing was run.\n{lines}")


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean '{lowered[close[0]]}'?)" if close else ""


def dotted(loc: typing.Iterable[Any]) -> str:
    return ".".join(str(part) for part in loc)
