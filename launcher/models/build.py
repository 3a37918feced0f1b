"""The recipe's `model:` section made into a module: sized for the data, pretrained weights, a new head, frozen layers."""

from __future__ import annotations

import fnmatch
import math
import urllib.error
from pathlib import Path
from typing import Any

import torch
from torch import nn

from launcher.config import components
from launcher.config.components import Kind
from launcher.config.problems import did_you_mean
from launcher.config.schema import Model
from launcher.data.datasets import DataInfo
from launcher.errors import UserError
from launcher.models.builtin import BUILTIN_MODELS

IMAGE_DIMS = 3  # (channels, height, width): the models take in_channels


class WeightsUnavailable(UserError):
    """Pretrained weights could not be had (typically: no network and nothing cached)."""


def build_model(section: Model, info: DataInfo) -> nn.Module:
    """Build the model, load pretrained weights, freeze, then fit a new (trainable) head."""
    factory = components.resolve(section.name, MODEL)
    kwargs = dict(section.kwargs)
    pretrained = section.weights is not None
    if not pretrained and components.accepts(factory, "num_classes"):
        kwargs.setdefault("num_classes", info.outputs)
    for name, value in _input_arguments(info).items():
        if components.accepts(factory, name, by_name=True):
            kwargs.setdefault(name, value)
    model = _pretrained(section, kwargs) if pretrained else components.call(factory, section.name, MODEL, **kwargs)
    components.expect(model, MODEL, section.name)
    freeze(model, section.freeze)
    if section.replace_head if section.replace_head is not None else pretrained:
        replace_head(model, info.outputs)
    return model


def _input_arguments(info: DataInfo) -> dict[str, int]:
    shape = info.input_shape
    values = {"in_features": math.prod(shape)} if shape else {}
    if len(shape) == IMAGE_DIMS:
        values["in_channels"] = shape[0]
    if info.vocab_size is not None:  # token sequences: the vocabulary, and the longest sequence (the block)
        values["vocab_size"] = info.vocab_size
        if shape:
            values["block_size"] = shape[-1]
    return values


def _pretrained(section: Model, kwargs: dict) -> nn.Module:
    # torchvision only where needed: its import takes seconds (torch._dynamo through torchvision.ops)
    import torchvision

    choices = torchvision.models.get_model_weights(section.name)
    weights = choices.DEFAULT if section.weights == "DEFAULT" else choices[section.weights]
    try:
        return torchvision.models.get_model(section.name, weights=weights, **kwargs)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise WeightsUnavailable(
            f"model.weights: could not download the {weights} weights of {section.name} from {weights.url} "
            f"({error.__class__.__name__}: {getattr(error, 'reason', error)}). This machine looks offline: "
            f"download them once where there is a network, or copy the file to {cached}; "
            "or set model.weights=null model.freeze=[] to train from scratch."
        ) from None


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the last Linear layer for a fresh one with `num_classes` outputs."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise components.ComponentError(f"cannot replace the head of {type(model).__name__}: it has no Linear layer")
    name, old = linears[-1]
    if old.out_features == num_classes:
        return
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attribute, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))


def freeze(model: nn.Module, patterns: list[str]) -> None:
    """Set requires_grad=False on the parameters whose names match any pattern."""
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise components.ComponentError(
                f"model.freeze: {pattern!r} matches no parameter; names look like {names[:6]}"
            )
    for name, parameter in model.named_parameters():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            parameter.requires_grad_(False)


def modules_of_classes(model: nn.Module, class_names: list[str], key: str) -> list[nn.Module]:
    """The submodules of `model` (itself included) whose class is named in `class_names`, in
    `named_modules` order; a UserError naming `key` (the recipe key that gave the names) and the
    model's own classes where a name matches none."""
    found = {type(module).__name__ for module in model.modules()}
    for name in class_names:
        if name not in found:
            raise UserError(
                f"{key}: {name!r} matches no module of {type(model).__name__}; its module classes: "
                f"{', '.join(sorted(found))}{did_you_mean(name, found)}"
            )
    return [module for module in model.modules() if type(module).__name__ in class_names]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all, trainable) parameter counts."""
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad)


def _models() -> dict[str, Any]:
    # torchvision only where needed: its import takes seconds (torch._dynamo through torchvision.ops)
    import torchvision

    names = {name: torchvision.models.get_model_builder(name) for name in torchvision.models.list_models()}
    return {**BUILTIN_MODELS, **names}


MODEL = Kind(
    "model",
    "torchvision.models",
    torch.nn.Module,
    _models,
    frozenset({"num_classes", "in_features", "in_channels", "vocab_size", "block_size"}),
    lambda: BUILTIN_MODELS,
)
