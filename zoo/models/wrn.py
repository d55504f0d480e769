"""Wide ResNets (Zagoruyko & Komodakis) for 32x32 inputs; Model Zoo trains its experts on WRN-16-4."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from .factory import register_model, register_split
from .nets import _Classifier, init_conv_weights


class WideBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv3x3, (dropout), BN-ReLU-conv3x3, plus the shortcut.

    A block that changes shape projects its input with a 1x1 conv taken from the shared pre-activation, as in
    the reference WRN; otherwise the shortcut is the raw input.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = (nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
                         if stride != 1 or in_planes != planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not in place: with an identity shortcut the raw x is still needed for the sum.
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


def wide_resnet(depth: int, widen: int, num_classes: int = 10, in_chans: int = 3,
                dropout: float = 0.0) -> _Classifier:
    """WRN-``depth``-``widen``: a 16-channel 3x3 stem, three groups of (depth-4)/6 wide blocks at 16k, 32k and
    64k channels (k = ``widen``; strides 1, 2, 2), a final BN-ReLU and global average pooling."""
    if (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    widths = [16, 16 * widen, 32 * widen, 64 * widen]
    layers: OrderedDict[str, nn.Module] = OrderedDict(stem=nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False))
    for g, stride in enumerate((1, 2, 2), start=1):
        blocks = [WideBlock(widths[g - 1] if i == 0 else widths[g], widths[g], stride if i == 0 else 1, dropout)
                  for i in range(n)]
        layers[f"group{g}"] = nn.Sequential(*blocks)
    layers["bn"] = nn.BatchNorm2d(widths[3])
    layers["relu"] = nn.ReLU(inplace=True)
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    body = nn.Sequential(layers)
    init_conv_weights(body)
    return _Classifier(body, widths[3], num_classes)


@register_model
def wrn16_4(num_classes: int = 10, in_chans: int = 3, dropout: float = 0.0) -> nn.Module:
    """WRN-16-4 (Model Zoo's expert): 2 wide blocks per group at 64/128/256 channels, 256-d features;
    2,748,890 parameters with a 10-class head (2,746,320 without)."""
    return wide_resnet(16, 4, num_classes, in_chans, dropout)


register_split("wrn16_4", ("body.group3.", "body.bn."))  # the last group (and its final BatchNorm)
