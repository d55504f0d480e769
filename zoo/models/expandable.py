"""MEMO's expandable model, and DER's, which is the same model with every block specialized.

The backbone of a base architecture is cut where its declared split says (:func:`register_split`): the
**generalized** blocks (shallow, shared by every task) run once, and each task owns a **specialized** block
(deep) that reads their output. The features of all specialized blocks are concatenated into one linear
head. DER is the split with no generalized block, so each task owns a whole backbone.

``create_model("expandable", C, base="resnet32", blocks=3, split="memo")`` rebuilds a saved one: the config
says how many specialized blocks it holds, so an expert saved to the registry loads back with identical
outputs.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import nn

from registry.errors import ModelArgsError

from .factory import create_model, register_model, specialized_prefixes

SPLITS = ("memo", "der")


def split_backbone(architecture: str, model_args: dict[str, Any], split: str = "memo") -> tuple[nn.Sequential, nn.Sequential, int]:
    """Fresh ``(generalized, specialized, feature width)`` of ``architecture``'s backbone.

    ``split="memo"`` cuts at the architecture's declared split (the specialized blocks must be the tail of
    its body); ``split="der"`` leaves nothing generalized, so the specialized block is the whole backbone.
    """
    if split not in SPLITS:
        raise ModelArgsError(f"model_args.split: must be one of {', '.join(SPLITS)}, got {split!r}")
    if architecture == "expandable":
        raise ModelArgsError("model_args.base: an expandable model cannot expand another expandable model")
    backbone = create_model(architecture, 0, **model_args)
    body = getattr(backbone, "body", None)
    if not isinstance(body, nn.Sequential):
        raise ModelArgsError(f"model_args.base: {architecture} has no sequential body to split into blocks "
                             f"(zoo's nets do; timm models are not supported by memo/der)")
    width = int(backbone.num_features)
    children = list(body.named_children())
    if split == "der":
        return nn.Sequential(), nn.Sequential(OrderedDict(children)), width
    prefixes = specialized_prefixes(architecture, model_args)
    if not prefixes:
        raise ModelArgsError(f"model_args.base: {architecture} declares no generalized/specialized split "
                             f"(see register_split); use split 'der'")
    tail = [f"body.{name}." in prefixes for name, _ in children]
    if True not in tail:
        raise ModelArgsError(f"{architecture}: its declared split names no block of its body")
    start = tail.index(True)
    for (name, module), declared in zip(children[start:], tail[start:]):
        if not declared and any(True for _ in module.parameters()):
            raise ModelArgsError(f"{architecture}: its specialized blocks are not the tail of its body ({name!r} "
                                 f"has parameters but is not declared specialized)")
    return (nn.Sequential(OrderedDict(children[:start])), nn.Sequential(OrderedDict(children[start:])), width)


def _linear_head(in_features: int, out_features: int) -> nn.Linear:
    # PyCIL's SimpleLinear (which MEMO and DER rebuild at every task): Kaiming-uniform weights, zero bias.
    head = nn.Linear(in_features, out_features)
    nn.init.kaiming_uniform_(head.weight, nonlinearity="linear")
    nn.init.zeros_(head.bias)
    return head


class ExpandableNet(nn.Module):
    """Generalized blocks, one specialized block per task, and one head over the concatenated features.

    ``frozen_blocks`` counts the oldest specialized blocks that are frozen: no gradient, and kept in eval
    mode even when the model is put in training mode, so their BatchNorm statistics do not move.
    ``freeze_generalized`` does the same for the generalized blocks (MEMO with ``train_base: false``).
    """

    def __init__(self, generalized: nn.Module, block: nn.Module, block_features: int, num_classes: int,
                 blocks: int = 1):
        super().__init__()
        self.generalized = generalized
        self.specialized = nn.ModuleList([block] + [copy.deepcopy(block) for _ in range(blocks - 1)])
        self.block_features = block_features
        self.num_classes = num_classes
        # num_classes 0: a backbone that outputs its features (the contract of every zoo model)
        self.head: nn.Module = _linear_head(blocks * block_features, num_classes) if num_classes else nn.Identity()
        self.frozen_blocks = 0
        self.freeze_generalized = False

    @property
    def num_features(self) -> int:
        """Width of the concatenated features (blocks × block width)."""
        return len(self.specialized) * self.block_features

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        """The generalized blocks' output, read by every specialized block."""
        return self.generalized(x)

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each specialized block's features, oldest first."""
        g = self.shared(x)
        return [block(g) for block in self.specialized]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated features of every specialized block."""
        return torch.cat(self.block_outputs(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def train(self, mode: bool = True) -> "ExpandableNet":
        super().train(mode)
        for block in self.specialized[: self.frozen_blocks]:
            block.eval()
        if self.freeze_generalized:
            self.generalized.eval()
        return self

    def freeze(self, blocks: int, generalized: bool) -> None:
        """Freeze the oldest ``blocks`` specialized blocks (and the generalized ones when ``generalized``)."""
        self.frozen_blocks = blocks
        self.freeze_generalized = generalized
        for i, block in enumerate(self.specialized):
            block.requires_grad_(i >= blocks)
        self.generalized.requires_grad_(not generalized)
        self.train(self.training)

    @torch.no_grad()
    def add_block(self, old_classes: Sequence[int]) -> None:
        """A new specialized block **copied from the newest one**, and a head over the wider features that
        keeps the old classes' rows on the old features (the rest is freshly initialised, as in PyCIL)."""
        self.specialized.append(copy.deepcopy(self.specialized[-1]))
        config = getattr(self, "zoo_config", None)
        if config is not None:
            config.model_args["blocks"] = len(self.specialized)
        old = self.head
        if not isinstance(old, nn.Linear):  # a headless backbone: nothing to widen
            return
        head = _linear_head(self.num_features, self.num_classes).to(old.weight.device, old.weight.dtype)
        rows = torch.as_tensor(list(old_classes), dtype=torch.long, device=old.weight.device)
        head.weight[rows, : old.in_features] = old.weight[rows]
        head.bias[rows] = old.bias[rows]
        self.head = head

    @torch.no_grad()
    def weight_align(self, old_classes: Sequence[int], new_classes: Sequence[int]) -> float:
        """Rescale the new classes' head rows so their mean L2 norm equals the old classes' (weight aligning,
        Zhao et al. 2020, as MEMO and DER apply it after each task); returns the factor γ."""
        w = self.head.weight
        old = torch.as_tensor(list(old_classes), dtype=torch.long, device=w.device)
        new = torch.as_tensor(list(new_classes), dtype=torch.long, device=w.device)
        gamma = float(w[old].norm(dim=1).mean() / w[new].norm(dim=1).mean())
        if math.isfinite(gamma):
            w[new] *= gamma
        return gamma


@register_model
def expandable(num_classes: int = 10, base: str = "convnet", base_args: dict[str, Any] | None = None,
               blocks: int = 1, split: str = "memo") -> nn.Module:
    """MEMO's expandable model over ``base`` (``split: memo``) or DER's (``split: der``), holding ``blocks``
    specialized blocks; ``base_args`` are the base architecture's own arguments."""
    generalized, block, width = split_backbone(base, dict(base_args or {}), split)
    return ExpandableNet(generalized, block, width, num_classes, blocks)
