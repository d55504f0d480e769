"""Synthetic data for data-free distillation: where an Ex-Model student's inputs come from.

Every source has one interface, ``make(expert, classes, n, generator) -> (x, y)``: ``n`` inputs for the
classes an expert knows, with a label for each (global class ids). The sources (ALGORITHMS.md §3):

- :class:`NoiseSource`: fresh N(0, I) inputs in normalised input space (the lower bound); labels are the
  expert's argmax on its classes.
- :class:`AuxSource`: real inputs of another data set (e.g. Fashion-MNIST for MNIST-like tasks), labelled
  by the expert's argmax.
- :class:`InversionSource`: model inversion: inputs optimised so the expert predicts the wanted label on
  augmented copies, with L2 and blur priors and BatchNorm statistics matched, **summed over every BN
  layer** (the reference overwrote instead of summing, and shipped with the term off), pixels clipped.
- :class:`ReplaySource`: the task's real training data: the upper bound, which breaks the setting
  (``breaks_setting = True``, recorded in results).

The building blocks are written once so that HCL's Quick Deep Inversion reuses them: :class:`StatsPrior`
(BatchNorm statistics, or per-layer output statistics frozen beforehand for a teacher without BatchNorm),
:func:`blur_prior`, :func:`tv_prior`, :func:`l2_prior`, and :func:`zoo.augment.augment` (differentiable).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .augment import augment
from .schema import bounded


# --- priors --------------------------------------------------------------------------------------------------

def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """‖x‖² per sample, averaged over the batch."""
    return x.flatten(1).pow(2).sum(1).mean()


def _gaussian_kernel(size: int, sigma: float, channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    r = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    k = torch.outer(g, g)
    k = k / k.sum()
    return k.expand(channels, 1, size, size).contiguous()


def blur_prior(x: torch.Tensor, size: int = 7, sigma: float = 1.0) -> torch.Tensor:
    """‖x_n − G(x_n)‖₂ per image, G a ``size``×``size`` Gaussian blur (σ = ``sigma``), averaged over the
    batch: small for smooth images. Zero for inputs that are not images."""
    if x.dim() != 4:
        return x.new_zeros(())
    c = x.shape[1]
    blurred = F.conv2d(F.pad(x, [size // 2] * 4, mode="reflect"), _gaussian_kernel(size, sigma, c, x.device, x.dtype),
                       groups=c)
    return (x - blurred).flatten(1).norm(dim=1).mean()


def tv_prior(x: torch.Tensor) -> torch.Tensor:
    """Total variation (mean absolute difference of neighbouring pixels), for HCL's QDI. Zero for vectors."""
    if x.dim() != 4:
        return x.new_zeros(())
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


class StatsPrior:
    """Σ over layers of ‖μ_batch − μ_ref‖² + ‖σ²_batch − σ²_ref‖², measured by forward hooks.

    With BatchNorm layers (``mode="bn"``), each BN layer's **input** is compared with its running statistics,
    and the terms of every layer are **summed** (ALGORITHMS.md §3; the reference overwrote one layer's term
    with the next). A teacher without BatchNorm (``mode="outputs"``) hooks every conv / linear output and
    compares with statistics measured on real inputs by :meth:`freeze` beforehand (HCL's no-BN path).
    ``norm="l2"`` takes the norms unsquared, as HCL's R_feat does.
    Use as a context manager around the forward passes; read :attr:`loss` after each forward.
    """

    def __init__(self, model: nn.Module, mode: str = "auto", norm: str = "squared"):
        self.model = model
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.mode = ("bn" if bns else "outputs") if mode == "auto" else mode
        self.layers = bns if self.mode == "bn" else [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.norm = norm
        self.reference: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.terms: list[torch.Tensor] = []
        self._handles: list[Any] = []
        self._recording: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @staticmethod
    def _stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dims = [0, 2, 3] if t.dim() == 4 else [0]
        return t.mean(dims), t.var(dims, unbiased=False)

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = (a - b).norm()
        return d if self.norm == "l2" else d.pow(2)

    def _hook(self, index: int) -> Any:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            # A layer's output may be overwritten in place by the next op (ReLU(inplace=True)): take a copy.
            t = inputs[0].float() if self.mode == "bn" else output.float().clone()
            mean, var = self._stats(t)
            if self._recording is not None:
                self._recording.append((mean.detach(), var.detach()))
                return
            if self.mode == "bn":
                ref_mean, ref_var = module.running_mean.float(), module.running_var.float()
            else:
                ref_mean, ref_var = self.reference[index]
            self.terms.append(self._distance(mean, ref_mean) + self._distance(var, ref_var))
        return hook

    @torch.no_grad()
    def freeze(self, x: torch.Tensor) -> None:
        """Measure the reference statistics of every hooked layer on real inputs ``x`` (``outputs`` mode)."""
        self._recording = []
        with self:
            self.model(x)
        self.reference, self._recording = self._recording, None

    def __enter__(self) -> "StatsPrior":
        if self.mode == "outputs" and self.reference is None and self._recording is None:
            raise RuntimeError("StatsPrior without BatchNorm needs freeze(real_inputs) first")
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.layers)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def pop(self) -> torch.Tensor:
        """The summed term of the forward passes since the last call (0 when no layer was hooked)."""
        total = torch.stack(self.terms).sum() if self.terms else torch.zeros(())
        self.terms = []
        return total


# --- labels --------------------------------------------------------------------------------------------------

def balanced_labels(classes: Sequence[int], n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` labels in equal blocks over ``classes`` (the first ``n mod |classes|`` get one more)."""
    k = len(classes)
    counts = [n // k + (1 if i < n % k else 0) for i in range(k)]
    return torch.cat([torch.full((c,), cls, dtype=torch.long) for c, cls in zip(counts, classes)]).to(device)


@torch.no_grad()
def expert_labels(expert: nn.Module, x: torch.Tensor, classes: Sequence[int], batch: int = 1024) -> torch.Tensor:
    """The expert's argmax among its own classes (global ids)."""
    cls = torch.as_tensor(list(classes), device=x.device)
    expert.eval()
    out = [expert(x[i:i + batch])[:, cls].argmax(1) for i in range(0, len(x), batch)]
    return cls[torch.cat(out)] if out else torch.empty(0, dtype=torch.long, device=x.device)


# --- sources -------------------------------------------------------------------------------------------------

class Source:
    """A synthetic data source (see module docstring)."""

    name = "source"
    breaks_setting = False
    fresh = False  # True: a new draw every student step (noise), not a stored buffer
    has_labels = True  # False: the labels are only the expert's argmax (the target rule's stands in)

    def __init__(self, input_shape: Sequence[int], device: torch.device | str = "cpu"):
        self.input_shape = tuple(int(d) for d in input_shape)
        self.device = torch.device(device)

    def make(self, expert: nn.Module, classes: Sequence[int], n: int,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` inputs and their labels for ``expert``'s ``classes``."""
        raise NotImplementedError


class NoiseSource(Source):
    """Fresh N(0, I) inputs: the lower bound."""

    name = "noise"
    fresh = True
    has_labels = False

    def make(self, expert: nn.Module, classes: Sequence[int], n: int,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn((n, *self.input_shape), generator=generator).to(self.device)
        return x, expert_labels(expert, x, classes)


class AuxSource(Source):
    """Inputs drawn (without replacement) from an auxiliary data set's inputs, labelled by the expert."""

    name = "aux"
    has_labels = False

    def __init__(self, inputs: torch.Tensor, device: torch.device | str = "cpu"):
        super().__init__(inputs.shape[1:], device)
        self.inputs = inputs

    def make(self, expert: nn.Module, classes: Sequence[int], n: int,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(len(self.inputs), generator=generator)[:n]
        x = self.inputs[idx.to(self.inputs.device)].to(self.device)
        return x, expert_labels(expert, x, classes)


class ReplaySource(Source):
    """The task's real training data (the upper bound; breaks the data-free setting)."""

    name = "replay"
    breaks_setting = True

    def __init__(self, stream: Any, input_shape: Sequence[int], device: torch.device | str = "cpu"):
        super().__init__(input_shape, device)
        self.stream = stream  # the task whose classes are asked for is looked up (and its data read) in make()

    def make(self, expert: nn.Module, classes: Sequence[int], n: int,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        wanted = set(classes)
        split = next(t.train for t in self.stream.tasks if set(t.classes) == wanted)
        idx = torch.randperm(len(split), generator=generator)[:n].to(split.y.device)
        return split.x[idx].to(self.device), split.y[idx].to(self.device)


@dataclass
class InversionConfig:
    """Model inversion (ALGORITHMS.md §3), bracketed defaults: Adam [lr 0.1] for [500] steps on
    CE(e(A(x))/τ, y) [τ = 2] + λ_wd‖x‖² [1e-4] + λ_blur·‖x − G(x)‖₂ [0.01] + λ_bn·Σ_BN (‖Δμ‖² + ‖Δσ²‖²) [0.01],
    then x clipped to [−clip, clip] [3]. A = random crop (pad 2) + flip for images, small noise for vectors.
    Every term is averaged over the batch, so the weights do not depend on its size."""

    steps: int = bounded(500, ge=1)
    lr: float = bounded(0.1, gt=0)
    tau: float = bounded(2.0, gt=0)
    lambda_wd: float = bounded(1e-4, ge=0)
    lambda_blur: float = bounded(0.01, ge=0)
    lambda_bn: float = bounded(0.01, ge=0)
    clip: float = bounded(3.0, gt=0)
    augment: str = "auto"


class InversionSource(Source):
    """Model inversion of one expert, the whole synthetic batch optimised at once on the device."""

    name = "inversion"

    def __init__(self, input_shape: Sequence[int], cfg: InversionConfig | None = None,
                 device: torch.device | str = "cpu"):
        super().__init__(input_shape, device)
        self.cfg = cfg or InversionConfig()

    def make(self, expert: nn.Module, classes: Sequence[int], n: int,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        y = balanced_labels(classes, n, self.device)
        x = invert(expert, y, classes, self.input_shape, self.cfg, generator, self.device)
        return x, y


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode (BatchNorm uses its running statistics) with its parameters out of autograd,
    for the block: only the synthetic inputs are optimised. Mode and ``requires_grad`` are restored after."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)


def invert(expert: nn.Module, y: torch.Tensor, classes: Sequence[int], input_shape: Sequence[int],
           cfg: InversionConfig, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Inputs for which ``expert`` predicts ``y`` (global ids among ``classes``), by model inversion."""
    cls = torch.as_tensor(list(classes), device=device)
    local = torch.full((int(cls.max()) + 1,), -1, dtype=torch.long, device=device)
    local[cls] = torch.arange(len(cls), device=device)
    target = local[y]
    x = torch.randn((len(y), *input_shape), generator=generator).to(device).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    prior = StatsPrior(expert, mode="bn") if cfg.lambda_bn > 0 else None
    with frozen(expert):  # BN uses its running statistics; the prior compares the batch's with them
        for _ in range(cfg.steps):
            xa = augment(x, cfg.augment, generator, pad=2)
            if prior is not None:
                with prior:
                    logits = expert(xa)
                bn = prior.pop().to(device)
            else:
                logits, bn = expert(xa), x.new_zeros(())
            loss = (F.cross_entropy(logits[:, cls] / cfg.tau, target) + cfg.lambda_wd * l2_prior(x)
                    + cfg.lambda_blur * blur_prior(x) + cfg.lambda_bn * bn)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(-cfg.clip, cfg.clip)
    return x.detach()


SOURCES = ("noise", "aux", "inversion", "replay")


def fit_inputs(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Auxiliary inputs ``x`` (N, ...) brought to a stream's input ``shape``: images resized (bilinear) and
    their channels repeated or averaged; flat vectors of a square size treated as one-channel images; then
    standardised (zero mean, unit variance), as the stream's own inputs are."""
    shape = tuple(int(d) for d in shape)

    def as_image(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 4:
            return t
        side = int(round(t.shape[1] ** 0.5))
        if t.dim() != 2 or side * side != t.shape[1]:
            raise ValueError(f"cannot fit auxiliary inputs of shape {tuple(t.shape[1:])} to {shape}")
        return t.reshape(len(t), 1, side, side)

    img = as_image(x.float())
    if len(shape) == 3:
        c, h, w = shape
    else:
        side = int(round(shape[0] ** 0.5))
        if side * side != shape[0]:
            raise ValueError(f"cannot fit auxiliary images to flat inputs of size {shape[0]}")
        c, h, w = 1, side, side
    if img.shape[1] != c:
        img = img.mean(1, keepdim=True).expand(-1, c, -1, -1) if c != 1 else img.mean(1, keepdim=True)
    if img.shape[2:] != (h, w):
        img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    img = (img - img.mean()) / img.std().clamp_min(1e-6)
    return img.reshape(len(img), *shape).contiguous()


# --- Quick Deep Inversion (HCL) --------------------------------------------------------------------------------

@dataclass
class QDIConfig:
    """Quick Deep Inversion (Madaan et al., ALGORITHMS.md §4), bracketed defaults: [200] samples started from
    augmented current-task images, labels spread evenly over the previous classes; Adam (β = 0.5, 0.9)
    [lr 0.03, 500 steps, cosine schedule after a 100-step linear warm-up] on
    LS-CE(t(x̃), ỹ) [0.1] + λ_f·Σ R_feat [0.2] + λ_tv·TV(x̃) [0.003] + λ_l2·‖x̃‖ [0.003]."""

    samples: int = bounded(200, ge=1)
    steps: int = bounded(500, ge=1)
    lr: float = bounded(0.03, gt=0)
    warmup: int = bounded(100, ge=0)
    label_smoothing: float = bounded(0.1, ge=0, lt=1)
    lambda_feat: float = bounded(0.2, ge=0)
    lambda_tv: float = bounded(0.003, ge=0)
    lambda_l2: float = bounded(0.003, ge=0)


def _warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / span))


def quick_deep_inversion(teacher: nn.Module, current: torch.Tensor, classes: Sequence[int], cfg: QDIConfig,
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, StatsPrior]:
    """A synthetic set for ``teacher``'s ``classes`` started from augmented current-task inputs ``current``.

    R_feat matches the BatchNorm inputs' statistics with the running ones for a BatchNorm teacher, and, for
    a teacher without BatchNorm, every conv / linear output's statistics with those measured on the
    current-task inputs beforehand (frozen). Returns (x̃, ỹ, the prior used: its ``mode`` tells which)."""
    device = current.device
    idx = torch.randint(0, len(current), (cfg.samples,), generator=generator).to(device)
    x = augment(current[idx], "auto", generator).detach().clone().requires_grad_(True)
    y = balanced_labels(classes, cfg.samples, device)
    prior = StatsPrior(teacher, norm="l2")
    opt = torch.optim.Adam([x], lr=cfg.lr, betas=(0.5, 0.9))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup_cosine(s, cfg.steps, cfg.warmup))
    with frozen(teacher):
        if prior.mode == "outputs":
            prior.freeze(current[: max(cfg.samples, 256)])
        for _ in range(cfg.steps):
            with prior:
                logits = teacher(x)
            feat = prior.pop().to(device)
            loss = (F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing) + cfg.lambda_feat * feat
                    + cfg.lambda_tv * tv_prior(x) + cfg.lambda_l2 * x.flatten(1).norm(dim=1).mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return x.detach(), y, prior
