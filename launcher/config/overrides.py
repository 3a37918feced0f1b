"""Command-line overrides, `key.sub=value`: the grammar and how one lands in a recipe tree."""

from __future__ import annotations

from typing import Any

import yaml

from launcher.config.problems import Problem, RecipeError
from launcher.config.yaml_io import yaml_load


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=4` -> (['train', 'epochs'], 4). The value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError("command line", [Problem(text, "an override is written key.sub=value")])
    try:
        return key.split("."), yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise RecipeError("command line", [Problem(key, f"the value {raw!r} is not valid YAML: {error}")]) from None


def is_override(text: str) -> bool:
    key, sep, _ = text.partition("=")
    return bool(sep) and key.replace(".", "").replace("_", "").isalnum()


def apply_override(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node: Any = tree
    for depth, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            index = _list_index(node, key, keys[: depth + 1])
            if isinstance(node[index], str):  # `- ToTensor` is `- {name: ToTensor}`
                node[index] = {"name": node[index]}
            node = node[index]
            continue
        if not isinstance(node, dict):
            raise RecipeError(
                "command line", [Problem(".".join(keys[:depth]), f"is {node!r}, not a section with keys")]
            )
        if not isinstance(node.get(key), (dict, list)):
            node[key] = {}
        node = node[key]
    last = keys[-1]
    if isinstance(node, list):
        node[_list_index(node, last, keys)] = value
    else:
        node[last] = value


def _list_index(node: list[Any], key: str, keys: list[str]) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise RecipeError("command line", [Problem(".".join(keys), f"no item {key} in a list of {len(node)}")])
    return int(key)
