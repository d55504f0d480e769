"""Small-image ResNets: the CIFAR ResNet-32 of PyCIL/MEMO and the slim ResNet-18 of GEM/Ex-Model.

Both use post-activation basic blocks (conv-BN-ReLU-conv-BN, add the shortcut, ReLU) and keep a 3x3 stride-1
stem, so 32x32 inputs reach the last stage at 8x8 (ResNet-32) or 4x4 (slim ResNet-18).

ResNet-32's backbone is split the way MEMO splits it: ``generalized`` (stem + stages 1-2, shared by all tasks)
and ``specialized`` (stage 3 + global pooling, one copy per task). :func:`resnet32_parts` builds the two halves
on their own for MEMO's expandable model.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from .factory import register_model, register_split
from .nets import _Classifier, init_conv_weights

#: Width of ResNet-32's features (channels of stage 3).
RESNET32_FEATURES = 64


class ShortcutA(nn.Module):
    """Parameter-free "option A" shortcut: subsample spatially, then zero-pad the new channels.

    This is what keeps ResNet-32 at 463,504 backbone parameters: a projection (option B) would add a 1x1 conv
    and a BatchNorm at each of the two stage transitions.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"option-A shortcut cannot shrink channels ({in_planes} -> {out_planes})")
        self.extra = out_planes - in_planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        # Zeros go after the existing channels (PyCIL's DownsampleA concatenates x with x * 0); F.pad keeps
        # the input's memory format, so channels_last stays channels_last.
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class BasicBlock(nn.Module):
    """Post-activation residual block of two 3x3 convs.

    ``shortcut`` picks how a block that changes shape carries its input: ``"A"`` (zero padding, no
    parameters) or ``"B"`` (1x1 conv + BatchNorm projection).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride == 1 and in_planes == planes:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ShortcutA(in_planes, planes, stride)
        elif shortcut == "B":
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))
        else:
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


def _stem(in_chans: int, planes: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(in_chans, planes, 3, padding=1, bias=False),
                                     bn=nn.BatchNorm2d(planes), relu=nn.ReLU(inplace=True)))


def _stage(in_planes: int, planes: int, blocks: int, stride: int, shortcut: str) -> nn.Sequential:
    layers = [BasicBlock(in_planes, planes, stride, shortcut)]
    layers += [BasicBlock(planes, planes, 1, shortcut) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _pool() -> nn.Sequential:
    # Global pooling (== PyCIL's AvgPool2d(8) at 32x32) so other input sizes still give (N, C) features.
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def resnet32_parts(in_chans: int = 3) -> tuple[nn.Sequential, nn.Sequential]:
    """Fresh ``(generalized, specialized)`` halves of ResNet-32, as MEMO's expandable model needs them.

    ``generalized`` is the stem + stages 1-2 (3x3 conv 3->16 + BN + ReLU, then 5 blocks at 16 channels and 5
    at 32): it maps (N, 3, 32, 32) to (N, 32, 16, 16) with 112,016 parameters. ``specialized`` is stage 3
    (5 blocks at 64 channels) + global average pooling: it maps (N, 32, H, W) to (N, 64) with 351,488
    parameters. Shortcuts are option A, so the two add up to the reference 463,504.
    """
    generalized = nn.Sequential(OrderedDict(
        stem=_stem(in_chans, 16),
        stage1=_stage(16, 16, 5, 1, "A"),
        stage2=_stage(16, 32, 5, 2, "A")))
    specialized = nn.Sequential(OrderedDict(
        stage3=_stage(32, RESNET32_FEATURES, 5, 2, "A"),
        pool=_pool()))
    init_conv_weights(generalized)
    init_conv_weights(specialized)
    return generalized, specialized


class ResNet32(_Classifier):
    """CIFAR ResNet-32 (PyCIL's ``resnet32``): ``body`` = ``generalized`` then ``specialized``, then the head.

    ``model.generalized`` / ``model.specialized`` name the two halves of ``model.body`` (state-dict keys stay
    ``body.generalized.*`` / ``body.specialized.*``).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3):
        generalized, specialized = resnet32_parts(in_chans)
        body = nn.Sequential(OrderedDict(generalized=generalized, specialized=specialized))
        super().__init__(body, RESNET32_FEATURES, num_classes)

    @property
    def generalized(self) -> nn.Module:
        """Stem + stages 1-2 (MEMO's shared blocks)."""
        return self.body.generalized

    @property
    def specialized(self) -> nn.Module:
        """Stage 3 + pooling (MEMO's per-task blocks)."""
        return self.body.specialized


@register_model
def resnet32(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    """CIFAR ResNet-32 (PyCIL/MEMO): 3 stages x 5 basic blocks at 16/32/64 channels, option-A shortcuts,
    463,504 backbone parameters, 64-d features; for 32x32 inputs."""
    return ResNet32(num_classes, in_chans)


register_split("resnet32", ("body.specialized.",))  # stage 3 + pooling: 351,488 of 463,504


@register_model
def reduced_resnet18(num_classes: int = 10, in_chans: int = 3, nf: int = 20) -> nn.Module:
    """Slim ResNet-18 of GEM / Ex-Model (Split-CIFAR-10): ResNet-18's 2-2-2-2 basic blocks at nf, 2nf, 4nf, 8nf
    channels (nf = 20), 3x3 stride-1 stem, projection (option-B) shortcuts, 8nf-d features; for 32x32 inputs."""
    body = nn.Sequential(OrderedDict(
        stem=_stem(in_chans, nf),
        stage1=_stage(nf, nf, 2, 1, "B"),
        stage2=_stage(nf, 2 * nf, 2, 2, "B"),
        stage3=_stage(2 * nf, 4 * nf, 2, 2, "B"),
        stage4=_stage(4 * nf, 8 * nf, 2, 2, "B"),
        pool=_pool()))
    init_conv_weights(body)
    return _Classifier(body, 8 * nf, num_classes)


register_split("reduced_resnet18", ("body.stage4.", "body.pool."))  # the last stage, as for ResNet-18
