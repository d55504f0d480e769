"""Opening a registry from a URI: ``hf://ORG/REPO[@REVISION]`` for the Hub, anything else a local folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .base import Registry
from .errors import RegistryURIError
from .settings import default_registry_uri

_HF = re.compile(r"hf://([A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(.+))?")


def parse_hub_uri(uri: str) -> tuple[str, str | None]:
    """Split ``hf://ORG/REPO[@REVISION]`` into (repo id, revision); raise RegistryURIError if malformed."""
    m = _HF.fullmatch(uri)
    if not m or ".." in m.group(1):
        raise RegistryURIError(f"invalid Hub registry {uri!r}: expected hf://ORG/REPO or hf://ORG/REPO@REVISION")
    return m.group(1), m.group(2)


def is_hub_uri(uri: str) -> bool:
    """True for ``hf://`` URIs."""
    return uri.startswith("hf://")


def open_registry(uri: str | Path | None = None, *, create: bool = True, **kwargs: Any) -> Registry:
    """Open the registry at ``uri``: a local folder (default ``$ZOO_REGISTRY`` or ``~/.cache/zoo/registry``)
    or a Hub repo ``hf://ORG/REPO[@REVISION]``. Extra keyword arguments go to the registry's constructor
    (for the Hub: ``token``, ``endpoint``, ``private``)."""
    from .hub import HubRegistry
    from .local import LocalRegistry

    text = str(uri) if uri is not None else default_registry_uri()
    if is_hub_uri(text):
        repo_id, revision = parse_hub_uri(text)
        return HubRegistry(repo_id, revision, **kwargs)
    if "://" in text and not text.startswith("file://"):
        raise RegistryURIError(f"unsupported registry URI {text!r}: use a folder path or hf://ORG/REPO")
    return LocalRegistry(text.removeprefix("file://"), create=create, **kwargs)
