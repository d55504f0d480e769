"""The card's two parsers agree: the compiled path (msgspec shapes) accepts only what the full parser accepts,
and gives the same card."""

from __future__ import annotations

import copy
import datetime
import decimal
import json
import pathlib
import random
import re
from typing import Any

import msgspec
import pytest

from registry.card import CARD_FILE, ExpertCard, FileRecord, ParentRef, TaskSpec, _fast_card, _parse_card, loads_strict
from registry.errors import CardError


def _cards() -> list[ExpertCard]:
    sha = "0123456789abcdef" * 4
    plain = ExpertCard(id=sha[:16], digest=sha, name="mlp-ewc-t07", architecture="mlp", num_classes=4,
                       tasks=[TaskSpec(7, (14, 15))], parents=[], method="ewc", hyperparameters={"lr": 0.1, "epochs": 5},
                       seed=3, metrics={"accuracy": 0.9, "forgetting": None}, labels=[],
                       files={"model.safetensors": FileRecord("ab" * 32, 1056), "config.json": FileRecord("cd" * 32, 9)},
                       created_at="2026-12-02T00:00:00.000000+00:00", zoo_version="0.1.0", format_version=1)
    rich = ExpertCard(id="fedcba9876543210", digest="fedcba9876543210" + "1" * 48, name="bmc.base+v2",
                      architecture="resnet32", num_classes=10, tasks=[TaskSpec(0, (0, 1)), TaskSpec(3, (6, 7, 8))],
                      parents=[ParentRef(sha[:16], sha, "base"), ParentRef("00" * 8, "00" * 32, "expert")],
                      method="bmc", hyperparameters={"consolidation": {"steps": [1, 2, {"deep": [True, None]}]},
                                                     "input": {"shape": [3, 32, 32], "mean": [0.5, 0.5, 0.5]}},
                      seed=None, metrics={"test_class_il_accuracy": 1, "x": -0.0}, labels=["paper", "baseline"],
                      buffer={"samples": 100, "classes": [0, 1]}, files={"model.safetensors": FileRecord("ef" * 32, 0)},
                      created_at="2026-12-02T00:00:01+00:00", zoo_version="0.1.0", format_version=1)
    return [plain, rich]


def _slow(text: str) -> ExpertCard | None:
    try:
        return _parse_card(loads_strict(text, CARD_FILE), CARD_FILE)
    except CardError:
        return None


_VALUES: list[Any] = [None, True, False, 0, -1, 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**70, 0.5, -1.5, 1e308,
                      "", "x", "a" * 33, "a" * 65, "a" * 129, "a" * 257, "\x01", "\x1b[31m", "\x7f", "\x85", "é",
                      "a/b", "..", "a..b", "0123456789abcdef", "0123456789ABCDEF", "0" * 64, "g" * 64, [], [1], {},
                      {"k": 1}, {"k": 2**64}, [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, path + (i,))
    return out


def _mutate(data: dict, rng: random.Random) -> str:
    data = copy.deepcopy(data)
    path = rng.choice(_paths(data)[1:])
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    key = path[-1]
    kind = rng.randrange(4)
    if kind == 0:
        parent[key] = copy.deepcopy(rng.choice(_VALUES))
    elif kind == 1 and isinstance(parent, dict):
        del parent[key]
    elif kind == 2 and isinstance(parent, dict):
        parent[rng.choice(["extra", "Extra", "id2", str(key) + "_"])] = copy.deepcopy(rng.choice(_VALUES))
    elif kind == 3 and isinstance(parent, dict) and isinstance(key, str):
        parent[rng.choice(["x", "a" * 200, "..", "bad name", "\x00"])] = parent.pop(key)
    else:
        parent[key] = copy.deepcopy(rng.choice(_VALUES))
    indent = rng.choice([None, 2])
    return json.dumps(data, indent=indent, sort_keys=rng.random() < 0.5, ensure_ascii=rng.random() < 0.7)


def test_a_valid_card_takes_the_compiled_path_and_gives_the_same_card():
    for card in _cards():
        for text in (card.to_json(), json.dumps(card.to_dict(), separators=(",", ":"))):
            fast = _fast_card(text)
            assert fast is not None and fast == _slow(text) == card
            assert fast.to_json() == _slow(text).to_json()
            assert isinstance(fast.metrics["test_class_il_accuracy" if "bmc" in card.name else "accuracy"], float)


def test_the_compiled_path_accepts_nothing_the_full_parser_refuses():
    rng = random.Random(0)
    accepted = refused_both = 0
    for _ in range(4000):
        base = rng.choice(_cards()).to_dict()
        text = _mutate(base, rng)
        fast, slow = _fast_card(text), _slow(text)
        if fast is not None:
            assert slow is not None and fast == slow and fast.to_json() == slow.to_json(), text
            accepted += 1
        elif slow is None:
            refused_both += 1
        # from_json gives the full parser's verdict whichever path answers
        try:
            assert ExpertCard.from_json(text) == slow
        except CardError:
            assert slow is None
    # the mutations reach both sides: many are accepted by the compiled path, many refused by both
    assert accepted > 400 and refused_both > 1500, (accepted, refused_both)


@pytest.mark.parametrize("text", [
    '{"id": 1}', "{}", "[]", "null", '"card"',
    # spliced into a valid card as raw text: a number with no finite value, nesting that would overflow the
    # stack, nesting beyond MAX_DEPTH
    "lr=1e999", "lr=" + "[" * 100_000 + "]" * 100_000, "lr=" + "[" * 40 + "]" * 40,
])
def test_texts_outside_the_shapes_get_the_full_parsers_message(text):
    if text.startswith("lr="):
        text = _cards()[0].to_json().replace('"lr": 0.1', '"lr": ' + text[3:])
    assert _fast_card(text) is None
    with pytest.raises(CardError):
        ExpertCard.from_json(text)


def test_duplicate_keys_and_bytes_behave_as_json_loads():
    card = _cards()[0]
    text = card.to_json().replace('"method": "ewc"', '"method": "lwf", "method": "ewc"')
    assert _fast_card(text) == _slow(text) == card
    assert _fast_card(text.encode()) == card
    utf16 = card.to_json().encode("utf-16")  # json.loads detects the encoding; the compiled path leaves it
    assert _fast_card(utf16) is None and ExpertCard.from_json(utf16) == card


def test_a_card_copies_pickles_and_gives_plain_data_that_shares_nothing():
    import pickle

    from msgspec.structs import replace

    for card in _cards():
        data = card.to_dict()
        assert list(data) == ["id", "digest", "name", "architecture", "num_classes", "tasks", "parents", "method",
                              "hyperparameters", "seed", "metrics", "buffer", "labels", "files", "created_at",
                              "zoo_version", "format_version"]
        assert data["tasks"][0] == {"id": card.tasks[0].id, "classes": list(card.tasks[0].classes)}
        assert json.loads(card.to_json()) == data and json.loads(card.to_json(indent=None)) == data
        before = card.to_json()
        data["hyperparameters"]["lr"] = 99  # nothing returned is shared with the card
        data["labels"].append("x")
        data["files"].clear()
        assert card.to_json() == before
        assert pickle.loads(pickle.dumps(card)) == card == copy.deepcopy(card)
        renamed = replace(card, name="other")
        assert renamed.name == "other" and card.name != "other" and renamed.files == card.files
    # every field but seed and buffer is required, by keyword, as in zoo.json
    fields = {k: v for k, v in _cards()[0].to_dict().items() if k not in ("seed", "buffer")}
    fields["tasks"] = _cards()[0].tasks
    assert ExpertCard(**fields).seed is None
    for missing in ("files", "created_at", "parents"):
        with pytest.raises(TypeError, match=missing):
            ExpertCard(**{k: v for k, v in fields.items() if k != missing})
    with pytest.raises(TypeError):
        ExpertCard(*fields.values())


@pytest.mark.parametrize("field, value, named", [
    ("hyperparameters", {"v": {1, 2}}, "hyperparameters.v' holds a set"),
    ("hyperparameters", {"v": b"ab"}, "hyperparameters.v' holds a bytes"),
    ("hyperparameters", {"v": {"deep": [datetime.date(2026, 1, 1)]}}, "hyperparameters.v.deep[0]' holds a date"),
    ("hyperparameters", {"v": pathlib.Path("a")}, "holds a PosixPath"),
    ("hyperparameters", {"v": (1, 2)}, "holds a tuple"),
    ("buffer", {"classes": frozenset({1})}, "buffer.classes' holds a frozenset"),
    ("metrics", {"acc": decimal.Decimal("0.5")}, "metrics.acc' holds a Decimal"),
    ("metrics", {"acc": float("nan")}, "non-finite"),
    ("labels", [b"paper"], "field 'labels' would not read back"),
    ("labels", ("paper",), "field 'labels' would not read back"),
    ("created_at", datetime.datetime(2026, 1, 1), "field 'created_at' would not read back"),
    ("name", b"abc", "name"),
    ("tasks", [TaskSpec(7, [14, 15])], "field 'tasks' would not read back"),
])
def test_validate_refuses_a_value_that_would_be_stored_as_something_else(field, value, named):
    card = _cards()[0]
    assert card.validate() is card
    bad = msgspec.structs.replace(card, **{field: value})
    with pytest.raises(CardError, match=re.escape(named)):
        bad.validate()


def test_write_expert_refuses_such_values_before_writing_anything(tmp_path):
    import torch
    from zoo import create_model

    from registry import write_expert

    model = create_model("mlp", 2, in_features=4)
    for i, extra in enumerate([{"hyperparameters": {"v": {1}}}, {"hyperparameters": {"when": datetime.date.today()}},
                               {"metrics": {"acc": b"1"}}, {"metrics": {"acc": "0.9"}}, {"metrics": {"acc": True}},
                               {"metrics": {"acc": [0.5]}}, {"metrics": {"acc": torch.ones(2)}},
                               {"labels": [b"x"]}]):
        with pytest.raises(CardError):
            write_expert(tmp_path / f"e{i}", model, name="x", tasks=[(0, [0, 1])], **extra)
        assert not (tmp_path / f"e{i}").exists()


def test_write_expert_takes_real_scalars_as_metrics(tmp_path):
    import numpy as np
    import torch
    from zoo import create_model

    from registry import write_expert

    card = write_expert(tmp_path / "e", create_model("mlp", 2, in_features=4), name="x", tasks=[(0, [0, 1])],
                        metrics={"a": np.float32(0.5), "b": 1, "c": float("inf"), "d": None,
                                 "e": torch.tensor(0.25)}).card
    assert card.metrics == {"a": 0.5, "b": 1.0, "c": None, "d": None, "e": 0.25}
    assert all(type(v) is float for v in (card.metrics["a"], card.metrics["b"]))
