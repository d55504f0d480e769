"""What exported experts carry for other tools: timm's data config, a Hub-valid model card, the input record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
FASHION_INPUT = {"shape": [1, 28, 28], "scale": 255.0, "mean": [0.2860], "std": [0.3530],
                 "formula": "(x / scale - mean) / std"}


def _timm_expert(folder: Path, data_input: dict | None = FASHION_INPUT):
    from registry import write_expert
    from zoo.models import create_model

    torch.manual_seed(0)
    model = create_model("test_resnet", 10, in_chans=1)
    expert = write_expert(folder, model, name="fashion-expert", tasks=[(0, range(10))], method="finetune",
                          hyperparameters={"input": data_input} if data_input else {},
                          metrics={"test_class_il_accuracy": 0.8125, "val_loss": 0.5}, labels=["split-fashion_mnist"])
    return model, expert


@pytest.mark.parametrize("data_input, size, mean, std", [
    (FASHION_INPUT, (1, 28, 28), (0.2860,), (0.3530,)),
    ({"shape": [3, 32, 32], "scale": 255.0, "mean": [0.5071, 0.4865, 0.4409], "std": [0.2673, 0.2564, 0.2762],
      "formula": "(x / scale - mean) / std"}, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    ({"shape": [1, 8, 8], "scale": 16.0, "formula": "x / scale"}, (1, 8, 8), (0.0,), (1.0,)),
])
def test_timm_resolves_the_experts_own_input_size_and_normalisation(tmp_path, data_input, size, mean, std):
    import timm
    from registry import write_expert
    from zoo.models import create_model

    torch.manual_seed(0)
    model = create_model("test_resnet", 10, in_chans=size[0])
    write_expert(tmp_path / "e", model, name="e", tasks=[(0, range(10))], hyperparameters={"input": data_input})
    loaded = timm.create_model(f"local-dir:{tmp_path / 'e'}", pretrained=True).eval()
    cfg = timm.data.resolve_data_config({}, model=loaded)
    assert tuple(cfg["input_size"]) == size and cfg["crop_pct"] == 1.0
    assert tuple(cfg["mean"]) == pytest.approx(mean) and tuple(cfg["std"]) == pytest.approx(std)
    x = torch.randn(2, *size)
    assert torch.equal(loaded(x), model.eval()(x))  # and the weights are the expert's, bit for bit


def test_the_model_card_passes_huggingface_hubs_metadata_validation(tmp_path):
    from huggingface_hub import EvalResult, ModelCard, ModelCardData, metadata_eval_result
    from huggingface_hub.repocard_data import model_index_to_eval_results

    _, expert = _timm_expert(tmp_path / "e")
    text = (tmp_path / "e" / "README.md").read_text()
    card = ModelCard(text)
    assert isinstance(card.data, ModelCardData)
    header = yaml.safe_load(text.split("---")[1])
    assert "base_model" not in header  # not a Hub id, so absent (the lineage is in the body and zoo.json)
    again = ModelCardData(**header)  # the Hub's own parser accepts every field
    name, results = model_index_to_eval_results(header["model-index"])
    assert name == "fashion-expert" and all(isinstance(r, EvalResult) for r in results)
    by_name = {r.metric_name: r for r in results}
    assert by_name["test_class_il_accuracy"].metric_value == 0.8125 and by_name["test_class_il_accuracy"].metric_type == "accuracy"
    # the same entry metadata_eval_result (the Hub's helper) writes for this metric
    ref = metadata_eval_result(model_pretty_name="fashion-expert", task_pretty_name=None, task_id="image-classification",
                               metrics_pretty_name="test_class_il_accuracy", metrics_id="accuracy", metrics_value=0.8125,
                               dataset_pretty_name="zoo task stream", dataset_id="zoo-task-stream")
    ref_result = model_index_to_eval_results(ref["model-index"])[1][0]
    mine = by_name["test_class_il_accuracy"]
    assert (mine.task_type, mine.dataset_type, mine.dataset_name, mine.metric_type, mine.metric_value) == (
        ref_result.task_type, ref_result.dataset_type, ref_result.dataset_name, ref_result.metric_type,
        ref_result.metric_value)
    assert again.library_name == "zoo" and len(set(again.tags)) == len(again.tags)
    assert "Expert.load(" in text and "timm.create_model(\"local-dir:" in text and "shape 1x28x28" in text


def test_every_run_card_records_input_shape_and_normalisation(tmp_path):
    from registry import LocalRegistry
    from zoo.recipe import load_recipe
    from zoo.runner import RunOptions, run_recipe

    recipe = load_recipe(ROOT / "recipes" / "demo.yaml", {"training.epochs": 1, "methods": ["finetune"]})
    run_recipe(recipe, RunOptions(out=tmp_path / "run", registry=str(tmp_path / "reg"), progress=False))
    reg = LocalRegistry(tmp_path / "reg")
    card = reg.card("demo/finetune:final")
    assert card.hyperparameters["input"] == {"shape": [64], "scale": 16.0, "formula": "x / scale"}
    config = json.loads((reg.path(card.id) / "config.json").read_text())
    assert config["input"]["shape"] == [64]


def test_export_warns_when_timm_cannot_build_the_architecture(tmp_path, hub_server, hub_repo):
    from registry import LocalRegistry
    from tests.helpers import make_expert
    from tests.test_cli import zoo

    reg = LocalRegistry(tmp_path / "reg")
    card = reg.add(make_expert(tmp_path / "a", name="alpha"))
    code, out, err = zoo("export", card.id, "--to", f"hf://{hub_repo}", "--registry", str(tmp_path / "reg"))
    assert code == 0, err
    assert "warning: timm cannot build 'mlp' (a zoo architecture)" in err
