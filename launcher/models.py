"""Models from the recipe's `model` section: built-ins for small data, torchvision models, the user's own.

Transfer learning lives here too: pretrained weights, freezing by name pattern, and a new head
sized for the dataset's classes.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from launcher import components
from launcher.data import DataInfo
from launcher.errors import UserError
from launcher.recipe import Model


class MLP(nn.Module):
    """A multi-layer perceptron for tables and tiny images (inputs are flattened)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: list[int] | tuple[int, ...] = (256, 128),
        dropout: float = 0.0,
        normalize_input: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        if normalize_input:
            # Learns the feature scales from the batches: tables need no separate standardization
            # step, and the statistics travel in the checkpoint with the model.
            layers.append(nn.BatchNorm1d(in_features))
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Three convolution blocks and a linear head; sized for 8x8 to 32x32 images."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.0) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(
            block(in_channels, width),
            block(width, width * 2),
            nn.MaxPool2d(2),
            block(width * 2, width * 4),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width * 4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def resnet_cifar(num_classes: int, arch: str = "resnet18") -> nn.Module:
    """A torchvision ResNet adapted to 32x32 images, as in the CIFAR literature.

    The ImageNet stem (7x7 stride-2 convolution, then max pooling) shrinks a 32x32 image to 8x8
    before the first block; a 3x3 stride-1 convolution and no pooling keep the detail.
    """
    import torchvision

    model = torchvision.models.get_model(arch, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


IMAGE_DIMS = 3  # (channels, height, width): the models take in_channels
BUILTIN_MODELS = {"mlp": MLP, "small_cnn": SmallCNN, "resnet_cifar": resnet_cifar}


class WeightsUnavailable(UserError):
    """Pretrained weights could not be had (typically: no network and nothing cached)."""


def build_model(section: Model, info: DataInfo) -> nn.Module:
    """Build the model, load pretrained weights, freeze, then fit a new (trainable) head."""
    factory = components.resolve(section.name, components.MODEL)
    kwargs = dict(section.kwargs)
    pretrained = section.weights is not None
    if not pretrained and components.accepts(factory, "num_classes"):
        kwargs.setdefault("num_classes", info.num_classes)
    for name, value in _input_arguments(info).items():
        if _names_parameter(factory, name):
            kwargs.setdefault(name, value)
    model = (
        _pretrained(section, kwargs)
        if pretrained
        else components.call(factory, section.name, components.MODEL, **kwargs)
    )
    components.expect(model, components.MODEL, section.name)
    freeze(model, section.freeze)
    if section.replace_head if section.replace_head is not None else pretrained:
        replace_head(model, info.num_classes)
    return model


def _input_arguments(info: DataInfo) -> dict[str, int]:
    shape = info.input_shape
    values = {"in_features": math.prod(shape)} if shape else {}
    if len(shape) == IMAGE_DIMS:
        values["in_channels"] = shape[0]
    return values


def _names_parameter(factory: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _pretrained(section: Model, kwargs: dict) -> nn.Module:
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


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all, trainable) parameter counts."""
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad)
