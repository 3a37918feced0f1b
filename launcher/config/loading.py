"""Loading a recipe: file, then overrides, then the schema and the component checks, every problem at once.

Precedence, written down once: command line (`key.sub=value`) > recipe file > the schema's defaults."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from launcher.config.overrides import apply_override, parse_override
from launcher.config.problems import Problem, RecipeError, did_you_mean, dotted
from launcher.config.schema import Recipe
from launcher.config.yaml_io import read_yaml


def _section_class_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema class that owns the keys at `loc`, to suggest names for an unknown key."""
    cls: Any = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            return None
        cls = _model_in(field.annotation)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def problems_from(error: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not (isinstance(part, str) and "[" in part))
        path = dotted(loc)
        if path in seen:  # a union reports one error per member: the first says enough
            continue
        seen.add(path)
        kind = item["type"]
        if kind == "extra_forbidden":
            owner = _section_class_at(loc[:-1])
            hint = did_you_mean(str(loc[-1]), owner.model_fields) if owner else ""
            problems.append(Problem(path, f"unknown key{hint}"))
        elif kind == "missing":
            problems.append(Problem(path, "required, but missing"))
        elif kind == "value_error":
            problems.append(Problem(path, item["msg"].removeprefix("Value error, ")))
        else:
            problems.append(Problem(path, f"{item['msg'][0].lower()}{item['msg'][1:]}, got {item['input']!r}"))
    return problems


def in_recipe_order(problems: list[Problem]) -> list[Problem]:
    """Problems section by section, in the order the schema lists its sections (data, model, ...)."""
    order = list(Recipe.model_fields)

    def section(problem: Problem) -> int:
        first = problem.path.split(".")[0]
        return order.index(first) if first in order else len(order)

    return sorted(problems, key=section)


def load_recipe(
    path: str | Path,
    overrides: typing.Sequence[str] = (),
    check: typing.Callable[[dict[str, Any]], list[Problem]] | None = None,
    check_in_workers: bool = False,
) -> Recipe:
    """Read, override and validate a recipe; every problem is raised together as a RecipeError.

    `check` looks further than the schema (`launcher.cli.recipe_checks.problems_in`: do the names
    resolve, do the arguments fit); its problems are reported with the schema's. With
    `check_in_workers`, `check` is left to the workers, which run it first thing (it imports the
    user's modules, which they import anyway): unless the schema finds problems, where it runs
    here too, so that every problem is listed at once.
    """
    path = Path(path)
    tree = read_yaml(path)
    for text in overrides:
        apply_override(tree, *parse_override(text))
    run = tree.get("run")
    if isinstance(run, dict) or run is None:
        run = dict(run or {})
        if not run.get("name"):
            run["name"] = path.name.removesuffix(".yaml").removesuffix(".yml")
        recipe_dir = str(path.resolve().parent)
        paths = run.get("import_paths") or []
        if isinstance(paths, list) and recipe_dir not in paths:
            run["import_paths"] = [*paths, recipe_dir]
        tree["run"] = run
    recipe, problems = None, []
    try:
        recipe = Recipe.model_validate(tree)
    except ValidationError as error:
        problems = problems_from(error)
    if check is not None and (problems or not check_in_workers):
        problems += check(tree)
    if problems:
        raise RecipeError(str(path), in_recipe_order(problems))
    assert recipe is not None
    return recipe


def dump_recipe(recipe: Recipe, path: Path, header: str = "") -> None:
    text = yaml.safe_dump(recipe.to_dict(), sort_keys=False)
    path.write_text(header + text)


def json_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "launcher recipe"
    return schema
