"""zoo.data: stream builders, validation splits, and loaders reading tiny files in the real formats."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from registry.errors import ZooError
from tests.data_fixtures import (MNIST_FILES, cifar_arrays, mnist_arrays, write_cifar10_bin, write_cifar10_py,
                                 write_cifar100_bin, write_cifar100_py, write_idx, write_mnist,
                                 write_tiny_imagenet)
from zoo.data import (DataError, DataNotFoundError, StreamSpec, StreamSpecError, build_stream, load_dataset,
                      read_feature_stream, write_feature_stream)
from zoo.data import mnist as mnist_module
from zoo.data.sampling import PERMUTATION, rng_for, validation_count


@pytest.fixture(autouse=True)
def isolated_data_root(tmp_path, monkeypatch):
    """Point the default data root at an empty folder so no test reads or writes the user's cache."""
    root = tmp_path / "zoo-default-data"
    monkeypatch.setenv("ZOO_DATA_ROOT", str(root))
    return root


def _feature_file(path: Path, n_per_class: int = 20, classes: int = 4, dim: int = 5, tasks: bool = False) -> Path:
    """A feature stream whose feature row i starts with the sample's unique id i (so samples are traceable)."""
    def part(offset: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        labels = torch.arange(classes).repeat_interleave(n_per_class)
        ids = torch.arange(len(labels), dtype=torch.float32) + offset
        feats = ids[:, None] * 100 + torch.arange(dim, dtype=torch.float32)[None]
        return feats, labels, labels // 2  # task t holds classes 2t, 2t+1

    train, test = part(0), part(100_000)
    kwargs = {"train_tasks": train[2], "test_tasks": test[2], "task_names": ["first", "second"]} if tasks else {}
    return write_feature_stream(path, train_features=train[0], train_labels=train[1], test_features=test[0],
                                test_labels=test[1], **kwargs)


# ---------------------------------------------------------------- split digits


def test_split_digits_natural_order():
    stream = build_stream({"dataset": "digits", "n_tasks": 5})
    assert stream.name == "split-digits" and stream.scenario == "class" and len(stream) == 5
    assert [t.classes for t in stream] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert stream.class_order == list(range(10)) and stream.num_classes == 10 and stream.input_shape == (64,)
    assert sum(len(t.train) + len(t.val) for t in stream) == 1347  # the fixed 75 % of 1,797
    assert sum(len(t.test) for t in stream) == 450
    for task in stream:
        for split in (task.train, task.val, task.test):
            assert split.x.dtype == torch.float32 and split.x.shape[1:] == (64,)
            assert split.y.dtype == torch.int64 and set(split.y.tolist()) == set(task.classes)
            assert 0 <= float(split.x.min()) and float(split.x.max()) <= 1  # pixels / 16
    json.dumps(stream.describe())
    assert [t["sizes"]["test"] for t in stream.describe()["tasks"]] == [len(t.test) for t in stream]


def test_split_digits_class_order_seed_and_classes_per_task():
    stream = build_stream({"dataset": "digits", "classes_per_task": 2, "class_order_seed": 1993})
    order = np.random.RandomState(1993).permutation(10).tolist()
    assert stream.class_order == order
    assert [t.classes for t in stream] == [order[i:i + 2] for i in range(0, 10, 2)]
    natural = build_stream({"dataset": "digits", "n_tasks": 5})
    # The same class gets the same samples whatever the class order (the val split is per class).
    by_class = {c: t.train.x[t.train.y == c] for t in natural for c in t.classes}
    for task in stream:
        for c in task.classes:
            assert torch.equal(task.train.x[task.train.y == c], by_class[c])


def test_digits_image_form_and_flatten_for_images(tmp_path):
    stream = build_stream({"dataset": "digits", "n_tasks": 2, "flatten": False})
    assert stream.input_shape == (1, 8, 8) and stream[0].train.x.shape[1:] == (1, 8, 8)


# ---------------------------------------------------------------- validation split


def test_val_split_disjoint_stratified_and_seeded(tmp_path):
    path = _feature_file(tmp_path / "f.safetensors", n_per_class=23)
    spec = {"dataset": "features", "path": str(path), "n_tasks": 2, "val_fraction": 0.2, "seed": 7}
    stream = build_stream(spec)
    ids_seen = []
    for task in stream:
        train_ids = set((task.train.x[:, 0] // 100).long().tolist())
        val_ids = set((task.val.x[:, 0] // 100).long().tolist())
        assert not train_ids & val_ids
        ids_seen += list(train_ids | val_ids)
        assert all(i < 100_000 // 100 for i in val_ids)  # carved from train, never from test
        for c in task.classes:
            assert int((task.val.y == c).sum()) == validation_count(23, 0.2) == 5
            assert int((task.train.y == c).sum()) == 18
    assert sorted(ids_seen) == list(range(4 * 23))  # nothing lost, nothing duplicated
    again = build_stream(spec)
    other = build_stream({**spec, "seed": 8})
    assert all(torch.equal(a.val.x, b.val.x) for a, b in zip(stream, again))
    assert not all(torch.equal(a.val.x, b.val.x) for a, b in zip(stream, other))


def test_max_train_per_class(tmp_path):
    stream = build_stream({"dataset": "digits", "n_tasks": 5, "max_train_per_class": 10, "val_fraction": 0.2})
    for task in stream:
        for c in task.classes:
            assert int((task.train.y == c).sum()) == 8 and int((task.val.y == c).sum()) == 2
        assert len(task.test) > 80  # the test split is never subsampled


def test_validation_count_edges():
    assert validation_count(1, 0.1) == 0 and validation_count(2, 0.1) == 1 and validation_count(10, 0.0) == 0
    assert validation_count(10, 0.99) == 9 and validation_count(15, 0.1) == 2


# ---------------------------------------------------------------- permuted and rotated


def test_permuted_features_task0_identity_then_permutations(tmp_path):
    path = _feature_file(tmp_path / "f.safetensors", n_per_class=5, dim=12)
    stream = build_stream({"dataset": "features", "path": str(path), "scenario": "permuted", "n_tasks": 3})
    assert stream.scenario == "domain" and [t.classes for t in stream] == [[0, 1, 2, 3]] * 3
    base = stream[0]
    perms = []
    for task in stream[1:]:
        for name in ("train", "val", "test"):
            a, b = getattr(base, name), getattr(task, name)
            assert torch.equal(a.y, b.y)
            perm = (b.x[0] - a.x[0, 0]).long()  # feature d of row 0 is id*100 + d, so the offsets name the dims
            assert sorted(perm.tolist()) == list(range(12)) and perm.tolist() != list(range(12))
            assert torch.equal(b.x, a.x[:, perm])  # one permutation for every sample and split
        perms.append(perm.tolist())
    assert perms[0] != perms[1]


def test_permuted_digits_and_images_share_channel_permutation(tmp_path):
    stream = build_stream({"dataset": "digits", "scenario": "permuted", "n_tasks": 2, "seed": 3})
    plain = build_stream({"dataset": "digits", "n_tasks": 1, "seed": 3})
    assert torch.equal(stream[0].train.x, plain[0].train.x)
    perm = torch.from_numpy(rng_for(3, PERMUTATION).permutation(64))
    assert torch.equal(stream[1].train.x, plain[0].train.x[:, perm])

    a = cifar_arrays(10, 5, 10)
    write_cifar10_bin(tmp_path, a)
    cifar = build_stream({"dataset": "cifar10", "scenario": "permuted", "n_tasks": 2, "data_root": str(tmp_path),
                          "val_fraction": 0.0})
    perm = torch.from_numpy(rng_for(0, PERMUTATION).permutation(1024))
    x0, x1 = cifar[0].test.x, cifar[1].test.x
    assert torch.equal(x1.reshape(5, 3, 1024), x0.reshape(5, 3, 1024)[:, :, perm])


def test_rotated_digits(tmp_path):
    stream = build_stream({"dataset": "digits", "scenario": "rotated", "rotations": [0, 90, 180],
                           "flatten": False})
    assert stream.scenario == "domain" and [t.info["angle"] for t in stream] == [0.0, 90.0, 180.0]
    base = stream[0].test.x
    # A quarter turn about the centre maps pixel centres onto pixel centres, so bilinear is exact.
    assert torch.allclose(stream[1].test.x, torch.rot90(base, 1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(stream[2].test.x, torch.rot90(base, 2, dims=(2, 3)), atol=1e-5)
    assert torch.equal(stream[1].test.y, stream[0].test.y)
    default = build_stream({"dataset": "digits", "scenario": "rotated", "n_tasks": 4})
    assert [t.info["angle"] for t in default] == [0.0, 45.0, 90.0, 135.0] and default.input_shape == (64,)


# ---------------------------------------------------------------- MNIST-like IDX loaders


@pytest.mark.parametrize("name,folder,gz,layout", [
    ("mnist", "MNIST", False, "raw"),
    ("fashion_mnist", "FashionMNIST", True, "raw"),
    ("mnist", "MNIST", True, "root"),
])
def test_idx_loaders_round_trip(tmp_path, name, folder, gz, layout):
    arrays = mnist_arrays()
    write_mnist(tmp_path / folder / "raw" if layout == "raw" else tmp_path, arrays, gz=gz)
    raw = load_dataset(name, data_root=tmp_path)
    assert torch.equal(raw.train_x, torch.from_numpy(arrays["train_x"]).unsqueeze(1))
    assert torch.equal(raw.test_y, torch.from_numpy(arrays["test_y"].astype(np.int64)))
    stream = build_stream({"dataset": name, "data_root": str(tmp_path), "n_tasks": 1, "val_fraction": 0.0})
    mean, std = stream.mean[0], stream.std[0]
    expected = (torch.from_numpy(arrays["test_x"]).float().unsqueeze(1) / 255 - mean) / std
    assert stream.input_shape == (1, 28, 28) and torch.allclose(stream[0].test.x, expected, atol=1e-6)


def test_idx_defects_are_named(tmp_path):
    bad = tmp_path / "MNIST" / "raw"
    write_mnist(bad, mnist_arrays())
    path = bad / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*bytes"):
        load_dataset("mnist", data_root=tmp_path)
    write_idx(path, np.zeros((30, 28, 28), dtype=np.float32))
    with pytest.raises(DataError, match="expected uint8"):
        load_dataset("mnist", data_root=tmp_path)


def test_missing_mnist_names_folders(tmp_path, isolated_data_root):
    empty = tmp_path / "empty"
    with pytest.raises(DataNotFoundError) as err:
        build_stream({"dataset": "mnist", "data_root": str(empty)})
    message = str(err.value)
    assert str(empty / "MNIST" / "raw") in message and str(isolated_data_root) in message
    assert "download: true" in message and "\n" not in message and isinstance(err.value, ZooError)


def test_missing_fashion_mnist_suggests_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion_mnist", data_root=tmp_path / "empty")
    assert str(tmp_path / "no-debian") in str(err.value)


def test_fashion_mnist_from_debian_layout(tmp_path, monkeypatch, isolated_data_root):
    arrays = mnist_arrays(seed=5)
    fake_debian = write_mnist(tmp_path / "debian", arrays, gz=True)
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST", fake_debian)
    raw = load_dataset("fashion_mnist")
    assert torch.equal(raw.test_x.squeeze(1), torch.from_numpy(arrays["test_x"]))
    cache = isolated_data_root / "FashionMNIST" / "raw"
    assert (cache / "train-images-idx3-ubyte").is_file()  # gunzipped once...
    assert raw.source == str(cache)
    assert load_dataset("fashion_mnist").source == str(cache)  # ...and found there next time


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package():
    raw = load_dataset("fashion_mnist")
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(raw.train_y).tolist() == [6000] * 10
    assert torch.bincount(raw.test_y).tolist() == [1000] * 10


# ---------------------------------------------------------------- CIFAR


def test_cifar10_binary_round_trip(tmp_path):
    a = cifar_arrays(20, 10, 10)
    write_cifar10_bin(tmp_path, a)
    raw = load_dataset("cifar10", data_root=tmp_path)
    assert torch.equal(raw.train_x, torch.from_numpy(a["train_x"]))
    assert raw.train_y.tolist() == a["train_y"].tolist() and raw.test_y.tolist() == a["test_y"].tolist()
    assert raw.class_names == [f"name{i}" for i in range(10)]
    stream = build_stream({"dataset": "cifar10", "data_root": str(tmp_path), "n_tasks": 5, "val_fraction": 0})
    assert stream.input_shape == (3, 32, 32) and [len(t.train) for t in stream] == [4] * 5
    mean, std = torch.tensor(stream.mean).view(1, 3, 1, 1), torch.tensor(stream.std).view(1, 3, 1, 1)
    restored = stream[0].test.x * std + mean
    assert torch.allclose(restored * 255, torch.from_numpy(a["test_x"][a["test_y"] < 2]).float(), atol=1e-3)


@pytest.mark.parametrize("protocol,legacy", [(2, True), (2, False), (4, False), (5, False)])
def test_cifar10_python_pickles(tmp_path, protocol, legacy):
    a = cifar_arrays(15, 5, 10, seed=protocol)
    write_cifar10_py(tmp_path, a, protocol=protocol, legacy_numpy=legacy)
    raw = load_dataset("cifar10", data_root=tmp_path)
    assert torch.equal(raw.train_x, torch.from_numpy(a["train_x"]))
    assert torch.equal(raw.test_x, torch.from_numpy(a["test_x"]))
    assert raw.train_y.tolist() == a["train_y"].tolist() and raw.class_names[3] == "name3"


def _coarse_map(seed: int = 0) -> np.ndarray:
    """A fine -> coarse mapping giving every superclass exactly five fine classes, shuffled."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(20), 5))


@pytest.mark.parametrize("kind", ["bin", "py"])
def test_cifar100_and_coarse_scenario(tmp_path, kind):
    a = cifar_arrays(300, 200, 100)
    coarse_of = _coarse_map()
    (write_cifar100_bin if kind == "bin" else write_cifar100_py)(tmp_path, a, coarse_of)
    raw = load_dataset("cifar100", data_root=tmp_path)
    assert torch.equal(raw.train_x, torch.from_numpy(a["train_x"]))
    assert raw.train_coarse.tolist() == coarse_of[a["train_y"]].tolist()
    assert raw.coarse_names[4] == "super4" and raw.class_names[99] == "fine99"
    stream = build_stream({"dataset": "cifar100", "scenario": "coarse", "data_root": str(tmp_path)})
    assert len(stream) == 20 and stream.scenario == "class"
    for t, task in enumerate(stream):
        assert task.classes == sorted(np.flatnonzero(coarse_of == t).tolist()) and len(task.classes) == 5
        assert task.name == f"super{t}" and set(task.test.y.tolist()) <= set(task.classes)
    assert sorted(stream.class_order) == list(range(100))


def test_malicious_cifar_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = write_cifar10_py(tmp_path, cifar_arrays(10, 5, 10))
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [1]}))
    with pytest.raises(DataError, match=r"data_batch_3 is not a safe CIFAR pickle \(refused to load global "
                                        r"(posix|nt)\.system\)"):
        load_dataset("cifar10", data_root=tmp_path)
    assert not marker.exists()
    # bytes through _codecs.encode are fine for latin-1 only (no decompression tricks)
    codec = pickle.dumps({b"labels": [1]}, protocol=2).replace(b"latin1", b"zlib__")
    (folder / "data_batch_3").write_bytes(codec)
    with pytest.raises(DataError, match="not a safe CIFAR pickle"):
        load_dataset("cifar10", data_root=tmp_path)


def test_cifar_defects_and_missing(tmp_path):
    folder = write_cifar10_bin(tmp_path, cifar_arrays(10, 5, 10))
    (folder / "test_batch.bin").write_bytes(b"\x01" * 100)
    with pytest.raises(DataError, match="test_batch.bin has 100 bytes"):
        load_dataset("cifar10", data_root=tmp_path)
    with pytest.raises(DataNotFoundError, match="cifar-100-binary.*cifar-100-python"):
        load_dataset("cifar100", data_root=tmp_path / "nothing")


# ---------------------------------------------------------------- Tiny ImageNet


def test_tiny_imagenet_decodes_and_caches(tmp_path, monkeypatch):
    from PIL import Image

    import zoo.data.tiny_imagenet as tiny

    wnids = ["n09", "n01", "n05"]  # wnids.txt is not sorted; class ids follow the sorted order
    folder = write_tiny_imagenet(tmp_path, wnids)
    raw = load_dataset("tiny_imagenet", data_root=tmp_path)
    assert raw.extra["wnids"] == ["n01", "n05", "n09"] and raw.num_classes == 3
    assert raw.train_x.shape == (9, 3, 64, 64) and raw.test_x.shape == (6, 3, 64, 64)
    assert raw.train_x.dtype == torch.uint8
    first = folder / "train" / "n01" / "images" / "n01_0.JPEG"  # a grayscale JPEG: becomes 3 equal channels
    expected = np.asarray(Image.open(first).convert("RGB")).transpose(2, 0, 1)
    assert torch.equal(raw.train_x[0], torch.from_numpy(expected.copy())) and raw.train_y[0] == 0
    val_lines = (folder / "val" / "val_annotations.txt").read_text().split()
    assert raw.test_y.tolist() == [2, 2, 0, 0, 1, 1]  # val_0..5 belong to n09, n09, n01, n01, n05, n05
    assert val_lines[1] == "n09"
    assert (folder / tiny.CACHE_NAME).is_file()

    def no_decode(files):
        raise AssertionError("decoded again despite a valid cache")

    monkeypatch.setattr(tiny, "_decode", no_decode)
    cached = load_dataset("tiny_imagenet", data_root=tmp_path)
    assert torch.equal(cached.train_x, raw.train_x) and torch.equal(cached.test_y, raw.test_y)
    stream = build_stream({"dataset": "tiny_imagenet", "data_root": str(tmp_path), "n_tasks": 3})
    assert stream.input_shape == (3, 64, 64) and [t.classes for t in stream] == [[0], [1], [2]]


def test_tiny_imagenet_missing(tmp_path):
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "x" / "tiny-imagenet-200")):
        load_dataset("tiny_imagenet", data_root=tmp_path / "x")


# ---------------------------------------------------------------- feature streams


def test_feature_stream_file_tasks(tmp_path):
    path = _feature_file(tmp_path / "stream.safetensors", tasks=True)
    tensors, meta = read_feature_stream(path)
    assert meta["format"] == "zoo.feature_stream" and tensors["train_tasks"].dtype == torch.int64
    stream = build_stream({"dataset": "features", "path": str(path)})
    assert stream.name == "features-stream" and len(stream) == 2 and stream.scenario == "class"
    assert [t.classes for t in stream] == [[0, 1], [2, 3]] and [t.name for t in stream] == ["first", "second"]
    assert stream.input_shape == (5,) and torch.equal(stream[1].test.x, tensors["test_features"][40:])
    assert len(build_stream({"dataset": "features", "path": str(path), "n_tasks": 1})) == 1
    with pytest.raises(StreamSpecError, match="class_order_seed does not apply"):
        build_stream({"dataset": "features", "path": str(path), "class_order_seed": 1})


def test_feature_stream_defects(tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"train_features": torch.zeros(3, 2)}, str(bad))
    with pytest.raises(DataError, match="lacks tensor 'train_labels'"):
        load_dataset("features", path=bad)
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DataError, match="junk.safetensors is not a readable safetensors file"):
        load_dataset("features", path=tmp_path / "junk.safetensors")
    with pytest.raises(DataNotFoundError, match="missing.safetensors does not exist"):
        build_stream({"dataset": "features", "path": str(tmp_path / "missing.safetensors")})
    with pytest.raises(DataError, match="'train_labels' is"):
        write_feature_stream(tmp_path / "x.safetensors", train_features=torch.zeros(3, 2),
                             train_labels=torch.zeros(2), test_features=torch.zeros(1, 2),
                             test_labels=torch.zeros(1))


# ---------------------------------------------------------------- specs and stream helpers


@pytest.mark.parametrize("spec,message", [
    ({"dataset": "cifar11"}, "stream: unknown dataset 'cifar11' (choose from digits, fashion_mnist"),
    ({"dataset": "digits", "n_tasks": 3}, "stream: n_tasks=3 does not divide 10 classes"),
    ({"dataset": "digits", "classes_per_task": 4}, "stream: classes_per_task=4 does not divide 10 classes"),
    ({"dataset": "digits", "n_task": 5}, "stream: unknown key 'n_task'"),
    ({"dataset": "digits", "scenario": "coarse"}, "scenario 'coarse' needs dataset 'cifar100'"),
    ({"dataset": "digits", "scenario": "shuffled"}, "unknown scenario 'shuffled'"),
    ({"dataset": "digits", "val_fraction": 1.0}, "val_fraction must be a number in [0, 1)"),
    ({"dataset": "digits", "n_tasks": True}, "n_tasks must be an integer"),
    ({"dataset": "digits", "scenario": "rotated", "n_tasks": 2, "rotations": [0]}, "n_tasks=2 but 1 rotations"),
    ({"dataset": "digits", "scenario": "permuted", "class_order_seed": 1}, "class_order_seed does not apply"),
    ({"dataset": "features"}, "dataset 'features' needs 'path'"),
    ({"scenario": "split"}, "missing required key 'dataset'"),
])
def test_bad_specs(spec, message):
    with pytest.raises(StreamSpecError) as err:
        build_stream(spec)
    assert message in str(err.value)


def test_spec_round_trip_and_stream_helpers():
    spec = StreamSpec(dataset="Fashion-MNIST", n_tasks=5)
    assert spec.dataset == "fashion_mnist" and StreamSpec.from_dict(spec.to_dict()) == spec
    stream = build_stream(StreamSpec(dataset="digits", n_tasks=5, val_fraction=0.0))
    assert stream.seen_classes(1) == [0, 1, 2, 3]
    joint = stream.joint()
    assert len(joint.train) == 1347 and joint.classes == list(range(10)) and len(joint.val) == 0
    moved = stream.to("cpu")
    assert moved[2].train.x.device.type == "cpu" and len(moved) == 5 and list(iter(moved))[4].id == 4


# ---------------------------------------------------------------- download wiring (no network: helpers faked)


def test_mnist_download_uses_torchvision_mirrors(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    arrays = mnist_arrays(seed=9)
    calls = []

    def fake_download_url(url, root, filename=None, md5=None, **_):
        calls.append(url)
        key = {name + ".gz": key for key, name in MNIST_FILES.items()}[filename]
        write_idx(Path(root) / filename, arrays[key])

    monkeypatch.setattr(tv_utils, "download_url", fake_download_url)
    with pytest.raises(DataNotFoundError):
        load_dataset("mnist", data_root=tmp_path)  # download is opt-in
    raw = load_dataset("mnist", data_root=tmp_path, download=True)
    assert len(calls) == 4 and (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file()
    assert torch.equal(raw.test_x.squeeze(1), torch.from_numpy(arrays["test_x"]))


def test_cifar_download_reads_python_version_safely(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    a = cifar_arrays(10, 5, 10, seed=4)

    def fake_download_and_extract(url, download_root, filename=None, md5=None, **_):
        assert filename == "cifar-10-python.tar.gz" and md5
        write_cifar10_py(Path(download_root), a)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download_and_extract)
    raw = load_dataset("cifar10", download=True)  # no data_root: lands in the default data root
    assert torch.equal(raw.train_x, torch.from_numpy(a["train_x"]))
