"""The architecture registry and model factory (timm-style).

``create_model(name, num_classes)`` builds one of zoo's own nets (registered with :func:`register_model`) or,
failing that, any timm architecture. Every model it returns carries a :class:`ModelConfig` in
``model.zoo_config``, which is what an expert's ``config.json`` records and what rebuilds the model later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

import inspect
import re

from registry.errors import ModelArgsError, UnknownArchitectureError

from .heads import MultiHeadNet

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model constructor under its function name; it must accept ``num_classes`` and kwargs."""
    _MODELS[fn.__name__] = fn
    return fn


_SPLITS: dict[str, tuple[str, ...] | Callable[..., tuple[str, ...]]] = {}


def register_split(architecture: str, specialized: tuple[str, ...] | Callable[..., tuple[str, ...]]) -> None:
    """Record MEMO's split of an architecture: the state-dict prefixes of its **specialized** (deep, per-task)
    blocks; every other backbone parameter is **generalized** (shallow, shared). ``specialized`` is a tuple,
    or a function of the constructor's arguments for an architecture whose depth is an argument. Declared
    next to each architecture, so the budget and MEMO's expandable model read one definition."""
    _SPLITS[architecture] = specialized if callable(specialized) else tuple(specialized)


def specialized_prefixes(architecture: str, model_args: dict[str, Any] | None = None) -> tuple[str, ...] | None:
    """The specialized blocks' state-dict prefixes of ``architecture`` built with ``model_args``, or None
    when no split is declared."""
    split = _SPLITS.get(architecture)
    if callable(split):
        return tuple(split(**(model_args or {})))
    return split


# timm architectures MEMO splits (their code lives in timm, so the split is declared here): ImageNet ResNet-18
# specializes its last stage.
register_split("resnet18", ("layer4.",))


def list_models() -> list[str]:
    """Names of zoo's own architectures (any timm name is accepted as well)."""
    return sorted(_MODELS)


def is_zoo_model(name: str) -> bool:
    """True when ``name`` is one of zoo's own architectures rather than a timm one."""
    return name in _MODELS


def is_known_architecture(name: str) -> bool:
    """True when ``name`` is a zoo or timm architecture."""
    if name in _MODELS:
        return True
    import timm

    return timm.is_model(name)


@dataclass
class ModelConfig:
    """How to rebuild a model: architecture name, output size, constructor kwargs, and optional task heads.

    ``heads`` lists the number of classes of each task head of a multi-head model (shared backbone, one linear
    head per task); ``None`` means a single head of ``num_classes`` outputs.
    """

    architecture: str
    num_classes: int
    model_args: dict[str, Any] = field(default_factory=dict)
    heads: list[int] | None = None

    def to_dict(self, model: nn.Module | None = None, data_input: dict[str, Any] | None = None) -> dict[str, Any]:
        """``config.json`` content. A single-head timm model also gets the fields timm's hub loader reads;
        with ``data_input`` (the expert's input: ``shape`` and the stream's ``scale`` / ``mean`` / ``std``)
        its ``pretrained_cfg`` states the real input size and normalisation, so that
        ``timm.data.resolve_data_config`` builds the transform the expert was trained with."""
        data: dict[str, Any] = {
            "architecture": self.architecture,
            "num_classes": self.num_classes,
            "model_args": dict(self.model_args),
            "library_name": "zoo",
        }
        if self.heads is not None:
            data["heads"] = list(self.heads)
        elif not is_zoo_model(self.architecture) and model is not None:
            # timm reads architecture, num_classes, model_args and pretrained_cfg from config.json, so a
            # single-head timm expert loads with timm.create_model("hf-hub:..." / "local-dir:...").
            data["num_features"] = int(getattr(model, "num_features", 0))
            cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
            data["pretrained_cfg"] = {k: v for k, v in cfg.items() if _jsonable(v) and k not in ("url", "hf_hub_id", "file", "source")}
            data["pretrained_cfg"]["num_classes"] = self.num_classes
            if data_input:
                data["pretrained_cfg"].update(_timm_input_cfg(data_input))
        if data_input:
            data["input"] = dict(data_input)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Parse ``config.json`` content (zoo's fields; timm's extra fields are ignored)."""
        from registry.errors import CardError

        if not isinstance(data, dict):
            raise CardError("config.json: expected a JSON object")
        arch, n = data.get("architecture"), data.get("num_classes")
        if not isinstance(arch, str) or not arch:
            raise CardError("config.json: field 'architecture' must be a non-empty string")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise CardError("config.json: field 'num_classes' must be a non-negative integer")
        args = data.get("model_args", {}) or {}
        if not isinstance(args, dict):
            raise CardError("config.json: field 'model_args' must be an object")
        heads = data.get("heads")
        if heads is not None and (not isinstance(heads, list) or not all(isinstance(h, int) and h > 0 for h in heads)):
            raise CardError("config.json: field 'heads' must be a list of positive integers")
        try:
            validate_model_args(arch, args)
        except ModelArgsError as e:
            raise CardError(f"config.json: {e}") from None
        return cls(arch, n, dict(args), heads)


def _timm_input_cfg(data_input: dict[str, Any]) -> dict[str, Any]:
    """timm's data fields for an expert's input: zoo feeds ``(x / scale - mean) / std`` with x / scale in
    [0, 1], which is exactly timm's convention; no mean/std means 0 and 1. The expert saw whole images at
    their own size, so crop_pct is 1."""
    shape = [int(d) for d in data_input.get("shape", [])]
    out: dict[str, Any] = {"crop_pct": 1.0, "interpolation": "bilinear", "crop_mode": "center"}
    if len(shape) == 3:
        channels = shape[0]
        out["input_size"] = shape
        out["mean"] = [float(v) for v in data_input.get("mean") or [0.0] * channels]
        out["std"] = [float(v) for v in data_input.get("std") or [1.0] * channels]
    return out


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool)) or (
        isinstance(v, (list, tuple)) and all(_jsonable(x) for x in v))


# Arguments that make timm fetch or read weights, or change what create_model returns: never taken from a
# config.json or a recipe (a checkpoint_path would have timm call torch.load, i.e. unpickle a file).
_TIMM_CONTROL = frozenset({"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict",
                           "checkpoint_path", "cache_dir", "scriptable", "exportable", "no_jit", "features_only",
                           "feature_cfg", "out_indices", "feature_cls", "num_classes"})
_LOADING_WORDS = re.compile(r"path|file|url|checkpoint|pretrain|cache|hub|weights|download|load", re.I)


def _plain_value(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, dict):  # nested arguments (the expandable net's base architecture), checked again there
        return all(isinstance(k, str) and _plain_value(v) for k, v in value.items())
    return isinstance(value, (list, tuple)) and all(_plain_value(v) for v in value)


def _check_size_arg(architecture: str, key: str, value: Any, annotation: Any) -> None:
    """zoo's nets take sizes (integers >= 1; ``depth`` may be 0) and a dropout rate in [0, 1)."""
    if annotation in ("int", int):
        low = 0 if key == "depth" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ModelArgsError(f"model_args.{key}: {architecture} needs an integer >= {low}, got {value!r}")
    elif annotation in ("float", float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ModelArgsError(f"model_args.{key}: {architecture} needs a number, got {value!r}")
        if key == "dropout" and not 0 <= value < 1:
            raise ModelArgsError(f"model_args.dropout: must be in [0, 1), got {value!r}")


def validate_model_args(architecture: str, model_args: dict[str, Any]) -> dict[str, Any]:
    """Check architecture kwargs before anything is built: a zoo net takes only its constructor's own
    parameters; a timm net takes no argument that loads or fetches anything (``checkpoint_path``,
    ``pretrained``, ``pretrained_cfg``, any name about paths, files, URLs or caches). Values must be plain
    numbers, strings, booleans or lists of them. Returns the args; raises :class:`ModelArgsError`."""
    for key, value in model_args.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ModelArgsError(f"model_args: {key!r} is not an argument name")
        if not _plain_value(value):
            raise ModelArgsError(f"model_args.{key}: only numbers, strings, booleans and lists of them are allowed")
        if isinstance(value, dict) and (architecture not in _MODELS or
                                        inspect.signature(_MODELS[architecture]).parameters.get(key) is None or
                                        inspect.signature(_MODELS[architecture]).parameters[key].annotation
                                        not in ("dict[str, Any] | None", "dict[str, Any]", dict)):
            raise ModelArgsError(f"model_args.{key}: only numbers, strings, booleans and lists of them are allowed")
    if architecture in _MODELS:
        params = inspect.signature(_MODELS[architecture]).parameters
        allowed = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"num_classes"}
        unknown = sorted(set(model_args) - allowed)
        if unknown:
            raise ModelArgsError(f"model_args: {architecture} takes no argument {unknown[0]!r} "
                                 f"(it takes: {', '.join(sorted(allowed)) or 'none'})")
        for key, value in model_args.items():
            _check_size_arg(architecture, key, value, params[key].annotation)
        return model_args
    for key in model_args:
        if key in _TIMM_CONTROL or _LOADING_WORDS.search(key):
            raise ModelArgsError(f"model_args.{key}: not allowed (zoo never lets an architecture load or fetch "
                                 f"weights; weights come from the expert's safetensors)")
    return model_args


def create_model(architecture: str, num_classes: int, heads: list[int] | None = None, **model_args: Any) -> nn.Module:
    """Build a model by architecture name: one of zoo's nets, else a timm model (never with downloaded weights).

    With ``heads``, the result is a :class:`~zoo.models.heads.MultiHeadNet`: the backbone's features feed one
    linear head per task, and ``num_classes`` must equal ``sum(heads)``.
    """
    validate_model_args(architecture, model_args)  # nothing reaches a constructor (or timm) unchecked
    config = ModelConfig(architecture, num_classes, dict(model_args), list(heads) if heads is not None else None)
    if heads is not None:
        if sum(heads) != num_classes:
            raise ValueError(f"heads {heads} add up to {sum(heads)}, not num_classes={num_classes}")
        model: nn.Module = MultiHeadNet(_build(architecture, 0, model_args), heads)
    else:
        model = _build(architecture, num_classes, model_args)
    model.zoo_config = config  # type: ignore[attr-defined]
    return model


def build_from_config(config: ModelConfig) -> nn.Module:
    """Rebuild the (untrained) module that ``config`` describes."""
    return create_model(config.architecture, config.num_classes, config.heads, **config.model_args)


def _build(architecture: str, num_classes: int, model_args: dict[str, Any]) -> nn.Module:
    if architecture in _MODELS:
        return _MODELS[architecture](num_classes=num_classes, **model_args)
    import timm

    if not timm.is_model(architecture):
        raise UnknownArchitectureError(
            f"unknown architecture {architecture!r}: not a zoo model ({', '.join(list_models())}) nor a timm model")
    return timm.create_model(architecture, pretrained=False, num_classes=num_classes, **model_args)
