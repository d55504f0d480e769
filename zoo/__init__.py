"""zoo: continual and multi-task learning with expert models.

Heavy modules (torch) load on first use, so ``zoo --help`` and registry commands start quickly.
"""

from __future__ import annotations

import importlib
from typing import Any

from .threads import set_wait_policy

# Before anything imports torch: OpenMP reads its wait policy once, when torch loads it (zoo/threads.py).
set_wait_policy()

_LAZY = {
    "create_model": "zoo.models",
    "list_models": "zoo.models",
    "ModelConfig": "zoo.models",
    "build_stream": "zoo.data",
    "StreamSpec": "zoo.data",
    "TaskStream": "zoo.data",
    "load_recipe": "zoo.recipe",
    "run_recipe": "zoo.runner",
    "RunOptions": "zoo.runner",
    "TrainConfig": "zoo.train",
    "fit": "zoo.train",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
