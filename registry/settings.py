"""Environment handled in one place: where the default registry lives and how sizes are configured."""

from __future__ import annotations

import os
from pathlib import Path

#: Above this size, weights are split into shards through ``huggingface_hub.serialization``.
DEFAULT_MAX_SHARD_SIZE = "2GB"


def default_registry_uri() -> str:
    """The registry used when none is named: ``$ZOO_REGISTRY``, else ``$XDG_CACHE_HOME/zoo/registry``."""
    env = os.environ.get("ZOO_REGISTRY")
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(cache) / "zoo" / "registry")


DISTRIBUTION = "expert-zoo"  # the name on PyPI ("zoo" is an unrelated project there)


def zoo_version() -> str:
    """The installed zoo version (distribution ``expert-zoo``), or ``0+unknown`` from a bare source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"
