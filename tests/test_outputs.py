"""What a run leaves to look at: per-epoch history (JSONL, TensorBoard), one figure comparing the methods,
one line per stage saying what a method did, and the lineage of its final model as a tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import zoo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bmc_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    code, stdout, err = zoo("run", str(ROOT / "recipes" / "bmc-digits.yaml"), "--out", str(out / "run"),
                            "--registry", str(out / "reg"), "--set", "training.epochs=2",
                            "--set", "methods.bmc.consolidation.epochs=2", "--tensorboard")
    assert code == 0, err
    return out, stdout, err


def test_history_jsonl_has_every_epoch_of_every_stage(bmc_run):
    out, _, _ = bmc_run
    rows = [json.loads(line) for line in (out / "run" / "finetune" / "history.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in rows] == [(t, e) for t in range(5) for e in range(2)]
    assert all(r["loss"] > 0 and r["seconds"] > 0 and r["lr"] == 0.001 for r in rows)
    assert rows[-1]["val_accuracy"] is not None and rows[0]["val_accuracy"] is None  # measured once, at the end
    bmc = [json.loads(line) for line in (out / "run" / "bmc" / "history.jsonl").read_text().splitlines()]
    assert {r["desc"].split(" ")[0] for r in bmc} >= {"expert"}  # the experts' epochs (and consolidation's)


def test_tensorboard_logs_the_same_values(bmc_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _, _ = bmc_run
    acc = EventAccumulator(str(out / "run" / "tensorboard" / "finetune"))
    acc.Reload()
    losses = [e.value for e in acc.Scalars("loss")]
    rows = [json.loads(line) for line in (out / "run" / "finetune" / "history.jsonl").read_text().splitlines()]
    assert losses == pytest.approx([r["loss"] for r in rows], rel=1e-6)


def test_one_figure_compares_the_methods_and_heatmaps_come_as_svg_too(bmc_run):
    out, stdout, _ = bmc_run
    run = out / "run"
    assert (run / "methods.png").read_bytes()[:4] == b"\x89PNG" and (run / "methods.svg").stat().st_size > 0
    assert (run / "bmc" / "accuracy_matrix.svg").exists()
    from PIL import Image

    assert Image.open(run / "methods.png").size[0] >= 1400  # readable: 150 dpi


def test_each_stage_says_what_the_method_did(bmc_run):
    out, stdout, err = bmc_run
    assert "bmc: stage 1: batch of tasks 0,1 -> 2 experts -> base " in err
    assert "bmc: stage 0: task 0 is learnt when its batch ends at task 1" in err
    assert "replay: stage 4: memory 200" in err
    assert "pushed 10 model(s) to " in stdout and "base:latest" in stdout


def test_show_lineage_prints_the_ancestry_tree(bmc_run):
    out, _, _ = bmc_run
    code, text, err = zoo("show", "--lineage", "base:latest", "--registry", str(out / "reg"))
    assert code == 0, err
    lines = text.splitlines()
    assert lines[0].startswith("bmc-digits-bmc-base-s4 (") and "[base:latest, bmc-digits/bmc:final]" in lines[0]
    assert lines[1].startswith("├── base: bmc-digits-bmc-base-s3")
    assert any(line.startswith("└── expert: bmc-digits-bmc-expert-t4") for line in lines)
    assert any("bmc-digits-bmc-expert-t0" in line for line in lines)
    assert any("shown above" in line for line in lines)  # a shared ancestor is printed once
