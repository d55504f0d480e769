"""zoo's own small architectures. Each exposes ``features(x)`` (penultimate features), ``head`` and
``num_features``; ``num_classes=0`` gives a backbone whose head is the identity."""

from __future__ import annotations

import torch
from torch import nn

from .factory import register_model, register_split


class _Classifier(nn.Module):
    """Backbone + linear head; the head is ``nn.Identity`` when ``num_classes == 0``."""

    def __init__(self, body: nn.Module, num_features: int, num_classes: int):
        super().__init__()
        self.body = body
        self.num_features = num_features
        self.num_classes = num_classes
        self.head = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features φ(x)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def init_conv_weights(module: nn.Module) -> None:
    """He (fan-out) init for every conv and unit/zero BatchNorm affine parameters in ``module``."""
    # He (fan-out) init for convs and unit BN, the usual CIFAR-ResNet recipe; explicit so results do not
    # depend on PyTorch's default init.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_model
def mlp(num_classes: int = 10, in_features: int = 64, hidden: int = 256, depth: int = 2,
        dropout: float = 0.0) -> nn.Module:
    """Multi-layer perceptron on flattened inputs (digits: 64 features; feature streams: the embedding size)."""
    layers: list[nn.Module] = [nn.Flatten()]
    dim = in_features
    for _ in range(depth):
        layers += [nn.Linear(dim, hidden), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        dim = hidden
    return _Classifier(nn.Sequential(*layers), dim, num_classes)


def _mlp_split(in_features: int = 64, hidden: int = 256, depth: int = 2, dropout: float = 0.0) -> tuple[str, ...]:
    # The last hidden layer is specialized; the flatten and the earlier hidden layers are shared.
    if depth < 1:
        return ()
    return (f"body.{1 + (depth - 1) * (3 if dropout else 2)}.",)


register_split("mlp", _mlp_split)


@register_model
def convnet(num_classes: int = 10, in_chans: int = 1, width: int = 32, img_size: int = 28) -> nn.Module:
    """A small 3-block convnet with BatchNorm and global average pooling."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    body = nn.Sequential(*block(in_chans, width), nn.MaxPool2d(2), *block(width, 2 * width), nn.MaxPool2d(2),
                         *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return _Classifier(body, 4 * width, num_classes)


register_split("convnet", ("body.8.", "body.9."))  # the third conv block (conv + BN; its ReLU and pooling follow)


@register_model
def lenet5(num_classes: int = 10, in_chans: int = 1, img_size: int = 28) -> nn.Module:
    """LeNet-5 (the Ex-Model paper's Split-MNIST expert): two conv/pool stages and two hidden FC layers."""
    pad = 2 if img_size == 28 else 0
    side = ((img_size + 2 * pad - 4) // 2 - 4) // 2
    body = nn.Sequential(
        nn.Conv2d(in_chans, 6, 5, padding=pad), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * side * side, 120), nn.ReLU(inplace=True), nn.Linear(120, 84), nn.ReLU(inplace=True))
    return _Classifier(body, 84, num_classes)
