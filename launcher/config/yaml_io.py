"""YAML read safely, with YAML 1.2's numbers (`1e-3` is a float, not a string)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from launcher.config.problems import Problem, RecipeError


class _Loader(yaml.SafeLoader):
    """The safe loader, also reading exponent floats without a dot (1e-3) as numbers, not text."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a subclass of SafeLoader


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as error:
        raise RecipeError(str(path), [Problem("", f"cannot read the recipe: {error.strerror}")]) from None
    try:
        tree = yaml_load(text)
    except yaml.constructor.ConstructorError as error:
        if error.problem_mark is not None and "python/" in str(error.problem):
            line = error.problem_mark.line + 1
            tag = str(error.problem).split("'")[-2] if "'" in str(error.problem) else "a Python tag"
            problem = f"line {line}: the tag {tag.removeprefix('tag:yaml.org,2002:')} is refused: recipes are read as plain data, never as Python objects"
            raise RecipeError(str(path), [Problem("", problem)]) from None
        raise RecipeError(str(path), [Problem("", f"not valid YAML: {error}")]) from None
    except yaml.YAMLError as error:
        raise RecipeError(str(path), [Problem("", f"not valid YAML: {error}")]) from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise RecipeError(str(path), [Problem("", f"a recipe is a mapping of sections, got {type(tree).__name__}")])
    return tree
