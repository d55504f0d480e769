"""One exception hierarchy for everything the registry can refuse.

Every message is a single line that names the problem and the object it concerns, so the CLI can print
``zoo: error: <message>`` and nothing else.
"""

from __future__ import annotations


class ZooError(Exception):
    """Base class of every error zoo raises on purpose (bad input, missing things, corrupt files)."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most ``limit`` characters), or its type's name: what a
    one-line error may quote of a library's multi-line message."""
    text = str(e).strip().splitlines()
    return text[0][:limit] if text else type(e).__name__


class InvalidNameError(ZooError, ValueError):
    """A name or tag is not allowed (path separators, ``..``, control characters, empty, too long)."""


class CardError(ZooError, ValueError):
    """``zoo.json`` is missing, is not JSON, or has missing or mistyped fields."""


class CorruptExpertError(ZooError):
    """An expert's files do not match their recorded sha256, or a safetensors file is unreadable."""


class ArchitectureMismatchError(ZooError):
    """The weights do not fit the architecture in ``config.json`` (missing, extra or mis-shaped tensors)."""


class UnknownArchitectureError(ZooError, KeyError):
    """An architecture name is neither one of zoo's models nor a timm model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelArgsError(ZooError, ValueError):
    """Architecture keyword arguments that are unknown to the architecture or could make it load files
    (``checkpoint_path``, ``pretrained``...): ``config.json`` and recipes only describe a shape."""


class ExpertNotFoundError(ZooError, KeyError):
    """No expert in the registry matches an id, id prefix, name or tag."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class AmbiguousReferenceError(ZooError, KeyError):
    """An id prefix or name matches several experts."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RegistryNotFoundError(ZooError):
    """There is no registry (yet) at a local path that was opened without ``create``."""


class RegistryURIError(ZooError, ValueError):
    """A registry URI cannot be parsed (``hf://ORG/REPO[@REVISION]`` or a local path)."""


class HubError(ZooError):
    """The Hub refused a request or a remote repo is not a zoo registry (missing repo, revision, index)."""
