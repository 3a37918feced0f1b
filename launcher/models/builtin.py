"""The launcher's own models, found by name before torchvision's."""

from __future__ import annotations

import torch
from torch import nn

from launcher.models.gpt import GPT


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
    # torchvision only where needed: its import takes seconds (torch._dynamo through torchvision.ops)
    import torchvision

    model = torchvision.models.get_model(arch, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


BUILTIN_MODELS = {"mlp": MLP, "small_cnn": SmallCNN, "resnet_cifar": resnet_cifar, "gpt": GPT}
