"""Continual-learning methods, one file each, registered by name with :func:`register_method`.

As timm's ``models/__init__`` imports its model families, this package imports every method file so that
``get_method("bmc")`` finds it; a new method is a new file here plus one line below.
"""

from .base import Method, NoParams, RunContext, get_method, list_methods, register_method
from . import baselines, bmc, exmodel, hcl, memo, modelzoo  # noqa: F401,E402  (each registers its methods)

__all__ = ["Method", "NoParams", "RunContext", "get_method", "list_methods", "register_method"]
