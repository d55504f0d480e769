"""Where datasets are looked for and where decoded copies are cached.

The default data root is ``$ZOO_DATA_ROOT``, else ``$XDG_CACHE_HOME/zoo/data`` (``~/.cache/zoo/data``). It is
searched after a spec's own ``data_root``, receives torchvision downloads when no ``data_root`` is given, and
holds the caches zoo writes itself (gunzipped Debian Fashion-MNIST, decoded Tiny ImageNet when its folder is
read-only).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def default_data_root() -> Path:
    """The folder zoo searches after any explicit ``data_root`` and caches decoded data in.

    ``$ZOO_DATA_ROOT`` wins; otherwise ``$XDG_CACHE_HOME/zoo/data``, falling back to ``~/.cache/zoo/data``.
    The folder is not created here: callers create it only when they actually write.
    """
    env = os.environ.get("ZOO_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "zoo" / "data"


def search_roots(data_root: str | os.PathLike | None) -> list[Path]:
    """The roots to search, in order: the explicit ``data_root`` (if any), then the default data root.

    Duplicates are dropped so an error message never names the same folder twice.
    """
    roots: list[Path] = []
    for root in ([Path(data_root).expanduser()] if data_root else []) + [default_data_root()]:
        if root not in roots:
            roots.append(root)
    return roots


def is_writable_dir(folder: Path) -> bool:
    """Whether ``folder`` exists (or can be created) and accepts new files.

    Checked by trying, since permission bits lie on read-only mounts and for root.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".zoo-write-test-"):
            pass
        return True
    except OSError:
        return False


def write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Create ``target`` by calling ``write(tmp)`` on a temporary file beside it, then renaming it into place.

    A crash or a concurrent reader never sees a half-written cache file; the temporary file is removed on error.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
