"""Expert = card + weights (+ optional buffer): writing and reading one expert folder.

An expert folder holds ``config.json``, ``model.safetensors`` (or shards plus
``model.safetensors.index.json``), ``zoo.json``, an optional ``buffer.safetensors`` and a ``README.md`` model
card. :func:`write_expert` creates one from a module; :class:`Expert` reads one back, strictly: every file is
checked against its sha256 in ``zoo.json`` as it is read, and the weights must fit the architecture exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from .card import (CARD_FILE, FORMAT_VERSION, ExpertCard, FileRecord, ParentRef, TaskSpec, normalise_json,
                   render_model_card)
from .errors import ArchitectureMismatchError, CardError, CorruptExpertError
from .names import validate_name
from .settings import DEFAULT_MAX_SHARD_SIZE, zoo_version
from .tensorfile import ContentDigest, file_tensors, read_header

if TYPE_CHECKING:
    import torch
    from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
BUFFER_FILE = "buffer.safetensors"
README_FILE = "README.md"
_CHUNK = 8 * 1024 * 1024


# --- hashing helpers --------------------------------------------------------------------------------------

def sha256_file(path: Path) -> FileRecord:
    """sha256 and size of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return FileRecord(h.hexdigest(), size)


_READ_CHUNK = 8 * 1024 * 1024


def read_verified_buffer(path: Path, record: FileRecord, allocate: Callable[[int], Any] = bytearray) -> Any:
    """Read a whole file into one buffer while hashing it, and check it against its recorded sha256 and size.

    The reads and the sha256 overlap: this thread reads chunk k into the buffer while a second thread hashes
    chunk k-1 (both release the GIL), so the cost is about the slower of the two rather than their sum. The
    bytes hashed are the bytes returned (the file is never read twice), so a file changed meanwhile cannot
    pass. ``allocate(size)`` makes the buffer once the size is checked against the card (so a card cannot
    make zoo allocate what the file is not): an uninitialised uint8 tensor's numpy view avoids the cost of
    zero-filling a new ``bytearray``, which is about that of the read itself. Returns the buffer; raises
    CorruptExpertError."""
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise CorruptExpertError(f"{path.parent.name}/{path.name}: file is missing") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size != record.size:
            raise CorruptExpertError(f"{path.name}: size {size} bytes, zoo.json records {record.size} "
                                     f"(truncated or modified)")
        buf = allocate(size)
        view = memoryview(buf).cast("B")
        if len(view) != size:
            raise ValueError(f"read_verified_buffer: the buffer holds {len(view)} bytes, the file {size}")
        h = hashlib.sha256()
        got = 0
        if size <= 2 * _READ_CHUNK:  # small: not worth a thread
            while got < size and (n := f.readinto(view[got:])):
                got += n
            h.update(view[:got])
        else:
            chunks: queue.Queue = queue.Queue(maxsize=4)
            hasher = threading.Thread(target=_hash_chunks, args=(h, chunks), daemon=True)
            hasher.start()
            try:
                while got < size and (n := f.readinto(view[got:got + _READ_CHUNK])):
                    chunks.put(view[got:got + n])
                    got += n
            finally:
                chunks.put(None)
                hasher.join()
        extra = f.read(1)
    if got != size or extra:
        raise CorruptExpertError(f"{path.name}: the file changed while it was read (truncated or modified)")
    if h.hexdigest() != record.sha256:
        raise CorruptExpertError(f"{path.name}: sha256 mismatch (the file was modified or corrupted)")
    return buf


def _hash_chunks(h: Any, chunks: Any) -> None:
    while (chunk := chunks.get()) is not None:
        h.update(chunk)


def read_verified(path: Path, record: FileRecord) -> bytes:
    """Read a whole file and check it against its recorded sha256 and size; raise CorruptExpertError."""
    return bytes(read_verified_buffer(path, record))


def _write(path: Path, data: bytes, fsync: bool) -> None:
    with open(path, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


# --- torch <-> safetensors dtypes --------------------------------------------------------------------------

def _dtype_name(t: "torch.Tensor") -> str:
    import torch

    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}
    try:
        return names[t.dtype]
    except KeyError:
        raise ValueError(f"tensor dtype {t.dtype} is not supported in an expert") from None


def _raw(t: "torch.Tensor") -> Any:
    import torch

    return t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""


def _digest_tensors(digest: ContentDigest, group: str, tensors: Mapping[str, "torch.Tensor"]) -> None:
    for name in sorted(tensors):
        t = tensors[name]
        digest.add_tensor(group, name, _dtype_name(t), t.shape, _raw(t))


def _identity(name: str, config: dict[str, Any], tasks: list[TaskSpec], parents: list[ParentRef]) -> dict[str, Any]:
    # What names an expert besides its tensors. The card's timestamps and metrics are left out on purpose, so
    # that the same trained model saved twice gets the same id.
    return {
        "name": name,
        "config": {k: config[k] for k in ("architecture", "num_classes", "model_args", "heads") if k in config},
        "tasks": [[t.id, list(t.classes)] for t in tasks],
        "parents": [[p.id, p.digest, p.role] for p in parents],
    }


# --- writing -----------------------------------------------------------------------------------------------

def _metric_values(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """Metrics as the card holds them: floats (from any number: numpy scalars, one-element tensors), None for
    a missing or non-finite value; anything else (a string, bytes, a bool, a list) is refused, naming it."""
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        if value is None:
            out[key] = None
            continue
        try:
            if isinstance(value, (bool, str, bytes, bytearray)):  # float() parses text, and a bool is an int
                raise TypeError
            number = float(value)
        except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several elements
            raise CardError(f"{CARD_FILE}: field 'metrics.{key}' must be a number or null, "
                            f"got {type(value).__name__}") from None
        out[key] = number if math.isfinite(number) else None
    return out


def write_expert(
    directory: str | Path,
    model: "nn.Module",
    *,
    name: str,
    tasks: Iterable[TaskSpec | tuple[int, Iterable[int]]],
    parents: Iterable[ParentRef] = (),
    method: str = "unknown",
    hyperparameters: Mapping[str, Any] | None = None,
    seed: int | None = None,
    metrics: Mapping[str, float] | None = None,
    buffer: Mapping[str, "torch.Tensor"] | None = None,
    buffer_info: Mapping[str, Any] | None = None,
    labels: Iterable[str] = (),
    config: Any = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    fsync: bool = False,
) -> "Expert":
    """Write ``model`` as an expert folder in ``directory`` (created; must be empty or absent) and return it.

    ``config`` (a :class:`zoo.models.ModelConfig`) defaults to ``model.zoo_config``, which every model built by
    :func:`zoo.create_model` carries. Weights above ``max_shard_size`` are sharded through
    ``huggingface_hub.serialization``; each shard's ``__metadata__`` identifies the expert.
    """
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save as st_save

    name = validate_name(name)
    config = config if config is not None else getattr(model, "zoo_config", None)
    if config is None:
        raise ValueError("model has no zoo_config: build it with zoo.create_model or pass config=ModelConfig(...)")
    config_dict = config.to_dict(model, (hyperparameters or {}).get("input"))
    task_specs = [t if isinstance(t, TaskSpec) else TaskSpec(int(t[0]), tuple(int(c) for c in t[1])) for t in tasks]
    parent_refs = list(parents)

    # Independent contiguous CPU copies: safetensors refuses tensors that share storage (tied weights).
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    buf = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in (buffer or {}).items()}

    # The whole card is built and validated before the first byte is written: a value that JSON or the index
    # cannot hold (NaN, a 2**64 integer, a lone surrogate) fails here, not after the folder exists.
    card = ExpertCard(
        id="0" * 16, digest="0" * 64, name=name, architecture=config.architecture, num_classes=config.num_classes,
        tasks=task_specs, parents=parent_refs, method=method,
        hyperparameters=normalise_json(dict(hyperparameters or {})), seed=seed,
        metrics=_metric_values(metrics or {}),
        buffer=(normalise_json({"num_samples": int(next(iter(buffer.values())).shape[0]),
                                "tensors": sorted(buffer), **(buffer_info or {})}) if buffer else None),
        labels=list(labels), files={}, created_at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        zoo_version=zoo_version(), format_version=FORMAT_VERSION,
    ).validate()
    digest = ContentDigest(_identity(name, config_dict, task_specs, parent_refs))
    _digest_tensors(digest, "model", state)
    _digest_tensors(digest, "buffer", buf)
    full = digest.hexdigest()
    expert_id = full[:16]
    card.id, card.digest = expert_id, full

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise FileExistsError(f"{directory}: folder is not empty")
    metadata = {
        "format": "pt",
        "zoo.format_version": "1",
        "zoo.expert_id": expert_id,
        "zoo.name": name,
        "zoo.architecture": config.architecture,
        "zoo.tasks": ",".join(str(t.id) for t in task_specs),
    }
    files: dict[str, FileRecord] = {}

    def put(fname: str, data: bytes) -> None:
        _write(directory / fname, data, fsync)
        files[fname] = FileRecord(hashlib.sha256(data).hexdigest(), len(data))

    split = split_torch_state_dict_into_shards(state, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=max_shard_size)
    for fname, keys in split.filename_to_tensors.items():
        put(fname, st_save({k: state[k] for k in keys}, metadata=metadata))
    if split.is_sharded:
        index = {"metadata": {**split.metadata, **metadata}, "weight_map": split.tensor_to_filename}
        put(WEIGHTS_INDEX, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
    if buf:
        put(BUFFER_FILE, st_save(buf, metadata={**metadata, "zoo.content": "buffer"}))
    put(CONFIG_FILE, (json.dumps(config_dict, indent=2, sort_keys=True) + "\n").encode())

    put(README_FILE, render_model_card(card).encode())
    card.files = dict(sorted(files.items()))
    _write(directory / CARD_FILE, card.to_json().encode(), fsync)
    return Expert(directory, card)


# --- reading -----------------------------------------------------------------------------------------------

class Expert:
    """A handle on one expert folder: its card, config, weights and buffer, all read lazily and verified.

    ``Expert.load(path).model()`` returns a ready ``nn.Module`` (architecture looked up in zoo's model registry
    or timm, weights loaded strictly).
    """

    def __init__(self, path: str | Path, card: ExpertCard):
        self.path = Path(path)
        self.card = card

    def __repr__(self) -> str:
        return f"Expert(id={self.card.id!r}, name={self.card.name!r}, architecture={self.card.architecture!r})"

    @property
    def id(self) -> str:
        """The expert's content-derived id."""
        return self.card.id

    @property
    def name(self) -> str:
        """The expert's name."""
        return self.card.name

    @classmethod
    def load(cls, path: str | Path, links_within: str | Path | None = None) -> "Expert":
        """Open an expert folder: parse and validate ``zoo.json`` and check that the recorded files exist.

        Expert files must be plain files: a symbolic link is refused, since it could point anywhere on the
        machine, unless it resolves inside ``links_within`` (the Hugging Face cache links a snapshot's files
        to its own blobs)."""
        path = Path(path)
        card_path = path / CARD_FILE
        _check_link(card_path, links_within)
        if not card_path.is_file():
            raise CardError(f"{path}: not an expert folder (no {CARD_FILE})")
        card = ExpertCard.from_json(card_path.read_bytes(), source=f"{path.name}/{CARD_FILE}")
        for required in (CONFIG_FILE,):
            if required not in card.files:
                raise CardError(f"{path.name}/{CARD_FILE}: 'files' does not list {required}")
        if not weight_files(card):
            raise CardError(f"{path.name}/{CARD_FILE}: 'files' lists no model weights")
        for fname in card.files:
            if "/" in fname or "\\" in fname or fname.startswith("."):
                raise CardError(f"{path.name}/{CARD_FILE}: invalid file name {fname!r}")
            _check_link(path / fname, links_within)
            if not (path / fname).is_file():
                raise CorruptExpertError(f"{path.name}/{fname}: file is missing")
        return cls(path, card)

    def read(self, fname: str) -> bytes:
        """The bytes of one recorded file, checked against its sha256."""
        if fname not in self.card.files:
            raise KeyError(f"{fname} is not a file of expert {self.id}")
        return read_verified(self.path / fname, self.card.files[fname])

    def config(self) -> Any:
        """The :class:`zoo.models.ModelConfig` recorded in ``config.json``."""
        from zoo.models import ModelConfig

        try:
            data = json.loads(self.read(CONFIG_FILE))
        except json.JSONDecodeError as e:
            raise CardError(f"{self.path.name}/{CONFIG_FILE}: not valid JSON ({e})") from None
        return ModelConfig.from_dict(data)

    def metadata(self) -> dict[str, str]:
        """The safetensors ``__metadata__`` of the (first) weights file, read without loading tensors."""
        return read_header(self.path / weight_files(self.card)[0]).metadata

    def state_dict(self) -> dict[str, "torch.Tensor"]:
        """All weights as CPU tensors, each file verified against its sha256 before parsing."""
        return self._load_tensors(weight_files(self.card))

    def buffer(self) -> dict[str, "torch.Tensor"] | None:
        """The BMC buffer tensors, or ``None`` when the expert has no buffer."""
        return self._load_tensors([BUFFER_FILE]) if BUFFER_FILE in self.card.files else None

    def model(self, device: "str | torch.device | None" = None) -> "nn.Module":
        """Build the architecture from ``config.json`` and load the weights strictly (eval mode)."""
        from zoo.models import build_from_config

        module = build_from_config(self.config())
        load_strict(module, self.state_dict(), source=self.id)
        if device is not None:
            module = module.to(device)
        return module.eval()

    def verify(self, deep: bool = True) -> None:
        """Check every file against ``zoo.json`` and that ``config.json`` is safe to build (no argument that
        loads files); ``deep`` also re-derives the id from the tensors."""
        for fname, record in self.card.files.items():
            got = sha256_file(self.path / fname)
            where = f"{self.name} ({self.id}): {fname}"
            if got.size != record.size:
                raise CorruptExpertError(f"{where} does not match its sha256 in zoo.json: size {got.size} bytes, "
                                         f"zoo.json records {record.size} (truncated or modified)")
            if got.sha256 != record.sha256:
                raise CorruptExpertError(f"{where} does not match its sha256 in zoo.json: sha256 mismatch "
                                         f"(modified or corrupted)")
        self.config()
        if deep:
            check_content(self)

    def _load_tensors(self, fnames: list[str]) -> dict[str, "torch.Tensor"]:
        import torch

        from .tensorfile import tensors_from_buffer

        out: dict[str, Any] = {}
        for fname in fnames:
            record = self.card.files.get(fname)
            if record is None:
                raise CorruptExpertError(f"{self.id}: zoo.json lists no file {fname}")
            path = self.path / fname
            # One uninitialised uint8 tensor receives the file; the weights are views of it (no second copy).
            data = read_verified_buffer(path, record, lambda n: torch.empty(n, dtype=torch.uint8).numpy())
            out.update(tensors_from_buffer(torch.from_numpy(data), read_header(path, memoryview(data)), fname))
        return out


def _check_link(path: Path, links_within: str | Path | None) -> None:
    if not path.is_symlink():
        return
    if links_within is not None and path.resolve().is_relative_to(Path(links_within).resolve()):
        return
    raise CorruptExpertError(f"{path.parent.name}/{path.name}: is a symbolic link; expert files must be plain files")


def weight_files(card: ExpertCard) -> list[str]:
    """The weights files of an expert (one file, or the shards), in name order."""
    return sorted(f for f in card.files if f.startswith("model") and f.endswith(".safetensors"))


def check_content(expert: Expert) -> None:
    """Re-derive the expert's digest from its files and refuse a card whose id or digest it contradicts
    (an id is never taken on trust: a folder could otherwise squat another expert's id)."""
    got = content_digest(expert)
    if got != expert.card.digest:
        raise CorruptExpertError(f"{expert.card.name} ({expert.card.id}): its content gives id {got[:16]}, not the "
                                 f"id its card claims (card or tensors altered)")


def content_digest(expert: Expert) -> str:
    """Recompute an expert's content digest from its files (without torch)."""
    config = json.loads(expert.read(CONFIG_FILE))
    digest = ContentDigest(_identity(expert.card.name, config, expert.card.tasks, expert.card.parents))
    for group, fnames in (("model", weight_files(expert.card)),
                          ("buffer", [BUFFER_FILE] if BUFFER_FILE in expert.card.files else [])):
        for name, dtype, shape, raw in file_tensors(expert.path / f for f in fnames):
            digest.add_tensor(group, name, dtype, shape, raw)
    return digest.hexdigest()


def load_strict(module: "nn.Module", state: Mapping[str, "torch.Tensor"], source: str = "expert") -> None:
    """Load ``state`` into ``module``; any missing, unexpected or mis-shaped tensor is an error naming it."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) e.g. {missing[0]!r}")
        if extra:
            parts.append(f"unexpected {len(extra)} tensor(s) e.g. {extra[0]!r}")
        raise ArchitectureMismatchError(f"{source}: weights do not match the architecture: {'; '.join(parts)}")
    for k, v in state.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise ArchitectureMismatchError(
                f"{source}: weights do not match the architecture: {k!r} has shape {tuple(v.shape)}, "
                f"the architecture expects {tuple(own[k].shape)}")
    module.load_state_dict(dict(state), strict=True)
