"""The expert format: files, metadata, ids, sharding, model cards, strict loading and corrupt input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from registry import (ArchitectureMismatchError, CardError, CorruptExpertError, Expert, InvalidNameError, ParentRef,
                      UnknownArchitectureError, write_expert)
from registry.expert import content_digest
from tests.helpers import make_expert, make_model


def test_folder_layout_and_round_trip(tmp_path):
    model = make_model(seed=1)
    expert = make_expert(tmp_path / "e", seed=1, buffer=True)
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == [
        "README.md", "buffer.safetensors", "config.json", "model.safetensors", "zoo.json"]
    loaded = Expert.load(tmp_path / "e")
    assert loaded.card == expert.card
    state = loaded.state_dict()
    assert state.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k
    x = torch.randn(5, 16)
    assert torch.equal(loaded.model()(x), model.eval()(x))
    buf = loaded.buffer()
    assert buf is not None and buf["x"].shape == (6, 16) and loaded.card.buffer["num_samples"] == 6


def test_safetensors_metadata_identifies_expert_without_tensors(tmp_path):
    expert = make_expert(tmp_path / "e", name="meta", tasks=[(3, [6, 7]), (5, [10, 11])], num_classes=4)
    with safe_open(tmp_path / "e" / "model.safetensors", "pt") as f:
        meta = f.metadata()
    assert meta["zoo.expert_id"] == expert.id
    assert meta["zoo.tasks"] == "3,5"
    assert meta["zoo.name"] == "meta" and meta["zoo.format_version"] == "1"
    assert all(isinstance(v, str) for v in meta.values())


def test_card_records_sha256_of_every_file(tmp_path):
    import hashlib

    expert = make_expert(tmp_path / "e", buffer=True)
    files = {p.name for p in (tmp_path / "e").iterdir()} - {"zoo.json"}
    assert set(expert.card.files) == files
    for name, rec in expert.card.files.items():
        data = (tmp_path / "e" / name).read_bytes()
        assert rec.sha256 == hashlib.sha256(data).hexdigest() and rec.size == len(data)


def test_id_is_content_derived(tmp_path):
    a = make_expert(tmp_path / "a", seed=3)
    b = make_expert(tmp_path / "b", seed=3)
    c = make_expert(tmp_path / "c", seed=4)
    d = make_expert(tmp_path / "d", seed=3, name="other")
    assert a.id == b.id and a.card.created_at and len(a.id) == 16
    assert c.id != a.id and d.id != a.id
    assert content_digest(a) == a.card.digest  # recomputed from files equals the in-memory digest


def test_sharded_expert_round_trip(tmp_path):
    model = make_model("convnet", 10, seed=2, width=16)
    expert = write_expert(tmp_path / "e", model, name="sharded", tasks=[(0, range(10))], max_shard_size="20KB")
    shards = sorted(p.name for p in (tmp_path / "e").glob("model-*.safetensors"))
    assert len(shards) >= 3
    index = json.loads((tmp_path / "e" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(model.state_dict())
    assert index["metadata"]["zoo.expert_id"] == expert.id
    for shard in shards:  # every shard identifies its expert
        with safe_open(tmp_path / "e" / shard, "pt") as f:
            assert f.metadata()["zoo.expert_id"] == expert.id
    loaded = Expert.load(tmp_path / "e")
    loaded.verify(deep=True)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded.model()(x), model.eval()(x))


def test_model_card_has_yaml_header_and_model_index(tmp_path):
    from huggingface_hub import ModelCard

    parent = make_expert(tmp_path / "p", name="parent")
    make_expert(tmp_path / "e", name="child", parents=(ParentRef(parent.id, parent.card.digest, "base"),))
    card = ModelCard.load(tmp_path / "e" / "README.md")
    assert card.data.library_name == "zoo"
    assert "zoo" in card.data.tags and "finetune" in card.data.tags
    assert card.data.base_model is None  # a Hub id or absent: a zoo parent is not a Hub model
    assert f"`{parent.id}` (base)" in card.text  # the lineage is in the body
    results = card.data.eval_results
    assert len(results) == 1 and results[0].metric_name == "accuracy" and results[0].metric_value == 0.5
    assert "# child" in card.text


def test_multi_head_expert(tmp_path):
    from zoo.models import create_model

    torch.manual_seed(0)
    model = create_model("mlp", 5, heads=[2, 3], in_features=16, hidden=8)
    expert = write_expert(tmp_path / "e", model, name="mh", tasks=[(4, [8, 9]), (1, [2, 3, 7])])
    config = json.loads((tmp_path / "e" / "config.json").read_text())
    assert config["heads"] == [2, 3]
    loaded = Expert.load(tmp_path / "e")
    assert loaded.card.task_ids == [4, 1]
    x = torch.randn(3, 16)
    assert torch.equal(loaded.model()(x), model.eval()(x))
    assert loaded.model()(x).shape == (3, 5)
    assert expert.id == loaded.id


# --- corrupt or malicious input ----------------------------------------------------------------------------

def test_truncated_safetensors_is_refused(tmp_path):
    make_expert(tmp_path / "e")
    path = tmp_path / "e" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CorruptExpertError, match="model.safetensors.*(truncated|size)"):
        Expert.load(tmp_path / "e").state_dict()


def test_flipped_byte_is_a_sha_mismatch(tmp_path):
    make_expert(tmp_path / "e")
    path = tmp_path / "e" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptExpertError, match="model.safetensors: sha256 mismatch"):
        Expert.load(tmp_path / "e").model()
    with pytest.raises(CorruptExpertError, match="sha256 mismatch"):
        Expert.load(tmp_path / "e").verify()


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("tasks"), "missing field 'tasks'"),
    (lambda c: c.update(tasks="0,1"), "field 'tasks' must be a list, got str"),
    (lambda c: c.update(num_classes="4"), "field 'num_classes' must be an integer, got str"),
    (lambda c: c.update(seed=True), "field 'seed' must be an integer, got bool"),
    (lambda c: c.update(name="../escape"), "invalid name '../escape'"),
    (lambda c: c.update(id="XYZ"), "invalid expert id"),
    (lambda c: c["files"]["model.safetensors"].update(sha256="abc"), "files.model.safetensors.sha256"),
    (lambda c: c.update(metrics={"accuracy": "high"}), "metrics.accuracy' must be a number"),
])
def test_bad_card_fields_are_named(tmp_path, edit, message):
    make_expert(tmp_path / "e")
    card_path = tmp_path / "e" / "zoo.json"
    card = json.loads(card_path.read_text())
    edit(card)
    card_path.write_text(json.dumps(card))
    with pytest.raises(CardError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Expert.load(tmp_path / "e")


def test_card_that_is_not_json(tmp_path):
    make_expert(tmp_path / "e")
    (tmp_path / "e" / "zoo.json").write_text("{not json")
    with pytest.raises(CardError, match="zoo.json: not valid JSON"):
        Expert.load(tmp_path / "e")


def test_architecture_weights_mismatch(tmp_path):
    make_expert(tmp_path / "e")
    # A config that promises a wider network than the weights hold; the card is re-hashed so that only the
    # architecture mismatch remains.
    import hashlib

    cfg_path = tmp_path / "e" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_args"]["hidden"] = 12
    cfg_path.write_text(json.dumps(cfg))
    card = json.loads((tmp_path / "e" / "zoo.json").read_text())
    data = cfg_path.read_bytes()
    card["files"]["config.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (tmp_path / "e" / "zoo.json").write_text(json.dumps(card))
    with pytest.raises(ArchitectureMismatchError, match="has shape .* the architecture expects"):
        Expert.load(tmp_path / "e").model()


def test_unknown_architecture(tmp_path):
    from zoo.models import create_model

    with pytest.raises(UnknownArchitectureError, match="unknown architecture 'no_such_net'"):
        create_model("no_such_net", 3)


def test_invalid_names_are_refused(tmp_path):
    model = make_model()
    for bad in ["../x", "a/b", "bad\x00name", "", "x" * 200, ".hidden"]:
        with pytest.raises(InvalidNameError):
            write_expert(tmp_path / "e", model, name=bad, tasks=[(0, [0])])
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())


def test_missing_file_is_reported(tmp_path):
    make_expert(tmp_path / "e", buffer=True)
    (tmp_path / "e" / "buffer.safetensors").unlink()
    with pytest.raises(CorruptExpertError, match="buffer.safetensors: file is missing"):
        Expert.load(tmp_path / "e")


def test_copy_of_expert_folder_is_still_valid(tmp_path):
    e = make_expert(tmp_path / "e")
    shutil.copytree(tmp_path / "e", tmp_path / "copy")
    Expert.load(tmp_path / "copy").verify(deep=True)
    assert Expert.load(tmp_path / "copy").id == e.id


def test_the_verified_read_path_hashes_every_byte_and_builds_tensors_without_copies(tmp_path):
    """Big files take the overlapped reader/hasher path; a changed byte, a truncation or trailing bytes
    fail; tensors are views of the one verified buffer, and a misaligned tensor is copied out aligned."""
    import json as _json
    import struct

    import torch
    from safetensors.torch import save_file

    from registry.errors import CorruptExpertError
    from registry.expert import read_verified_buffer, sha256_file
    from registry.tensorfile import read_header, tensors_from_buffer

    big = tmp_path / "big.safetensors"
    tensors = {"a": torch.randn(3000, 1000), "b": torch.arange(10, dtype=torch.int64), "c": torch.randn(7, 3).half()}
    save_file(tensors, big)  # ~12 MB: more than two read chunks, so the hashing thread runs
    record = sha256_file(big)
    buf = read_verified_buffer(big, record)
    out = tensors_from_buffer(buf, read_header(big, buf), big.name)
    assert all(torch.equal(out[k], v) for k, v in tensors.items())
    assert out["a"].untyped_storage().data_ptr() >= torch.frombuffer(buf, dtype=torch.uint8).data_ptr()
    data = bytearray(big.read_bytes())
    for name, change in (("flip", lambda d: d.__setitem__(len(d) // 2, d[len(d) // 2] ^ 1)),
                         ("cut", lambda d: d.__delitem__(slice(-5, None))), ("grow", lambda d: d.extend(b"x"))):
        bad = tmp_path / f"{name}.safetensors"
        copy = bytearray(data)
        change(copy)
        bad.write_bytes(bytes(copy))
        with pytest.raises(CorruptExpertError, match="sha256|size"):
            read_verified_buffer(bad, record)
    # a hand-made file whose float32 tensor starts at an odd offset: copied out, aligned, same values
    u8, f32 = bytes([1, 2, 3]), struct.pack("<2f", 1.5, -2.0)
    head = _json.dumps({"u": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
                        "f": {"dtype": "F32", "shape": [2], "data_offsets": [3, 11]}}).encode()
    odd = tmp_path / "odd.safetensors"
    odd.write_bytes(struct.pack("<Q", len(head)) + head + u8 + f32)
    buf = read_verified_buffer(odd, sha256_file(odd))
    got = tensors_from_buffer(buf, read_header(odd, buf))
    assert got["u"].tolist() == [1, 2, 3] and got["f"].tolist() == [1.5, -2.0]
