"""zoo's registry: expert models stored as safetensors with metadata, locally (folder + SQLite) or on the Hub."""

from .card import ExpertCard, FileRecord, ParentRef, TaskSpec
from .errors import (AmbiguousReferenceError, ArchitectureMismatchError, CardError, CorruptExpertError,
                     ExpertNotFoundError, HubError, InvalidNameError, RegistryURIError, UnknownArchitectureError,
                     ZooError)
from .base import MetricFilter, Query, Registry
from .expert import Expert, write_expert
from .hub import HubRegistry
from .local import LocalRegistry
from .uri import open_registry

__all__ = ["AmbiguousReferenceError", "ArchitectureMismatchError", "CardError", "CorruptExpertError", "Expert",
           "ExpertCard", "ExpertNotFoundError", "FileRecord", "HubError", "HubRegistry", "LocalRegistry", "MetricFilter",
           "Query", "Registry", "open_registry", "InvalidNameError", "ParentRef",
           "RegistryURIError", "TaskSpec", "UnknownArchitectureError", "ZooError", "write_expert"]
