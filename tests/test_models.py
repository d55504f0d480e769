"""Architecture registry: exact parameter counts, the features/head contract, channels_last, multi-head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo.models as zm
from zoo.models.resnet import RESNET32_FEATURES, resnet32_parts

N = 2

# One input shape (without the batch dimension) per zoo architecture, at its default kwargs. A newly
# registered architecture must add its row here, so that every zoo model is exercised below.
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "mlp": (64,),
    "convnet": (1, 28, 28),
    "lenet5": (1, 28, 28),
    "resnet32": (3, 32, 32),
    "reduced_resnet18": (3, 32, 32),
    "wrn16_4": (3, 32, 32),
    "resmlp": (768,),
    "expandable": (1, 28, 28),  # MEMO's model over its default base, convnet
}


def n_params(module: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm running stats are buffers and do not count)."""
    return sum(p.numel() for p in module.parameters())


def input_for(name: str) -> torch.Tensor:
    """A seeded random batch of the shape ``name`` expects."""
    if name not in INPUT_SHAPES:
        pytest.fail(f"zoo model {name!r} has no row in INPUT_SHAPES (tests/test_models.py): add one")
    return torch.randn(N, *INPUT_SHAPES[name], generator=torch.Generator().manual_seed(0))


# --- exact parameter counts -------------------------------------------------------------------------------

def test_resnet32_counts_match_memo() -> None:
    """463,504 backbone params (MEMO's exemplar arithmetic), split 112,016 generalized + 351,488 specialized."""
    model = zm.create_model("resnet32", 0)
    assert n_params(model) == 463_504
    assert n_params(model.generalized) == 112_016
    assert n_params(model.specialized) == 351_488
    assert model.num_features == RESNET32_FEATURES == 64
    # The head is the only extra: 64 * 100 + 100 for CIFAR-100.
    assert n_params(zm.create_model("resnet32", 100)) == 463_504 + 6_500


def test_resnet32_parts_compose_to_the_backbone() -> None:
    """The standalone halves MEMO reuses have the same counts and shapes as the registered model's halves."""
    generalized, specialized = resnet32_parts()
    assert (n_params(generalized), n_params(specialized)) == (112_016, 351_488)
    x = input_for("resnet32")
    mid = generalized(x)
    assert mid.shape == (N, 32, 16, 16)
    assert specialized(mid).shape == (N, RESNET32_FEATURES)
    model = zm.create_model("resnet32", 10).eval()
    torch.testing.assert_close(model.specialized(model.generalized(x)), model.features(x))


def test_wrn16_4_count() -> None:
    """WRN-16-4 on CIFAR-10: 2,748,890 params, of which 2,570 are the 256 -> 10 head."""
    assert n_params(zm.create_model("wrn16_4", 10)) == 2_748_890
    assert n_params(zm.create_model("wrn16_4", 0)) == 2_746_320
    assert zm.create_model("wrn16_4", 0).num_features == 256


def test_reduced_resnet18_count() -> None:
    """GEM's slim ResNet-18 (nf=20): 1,093,140 backbone params, 160-d features."""
    model = zm.create_model("reduced_resnet18", 0)
    assert n_params(model) == 1_093_140
    assert model.num_features == 160


def test_resmlp_count_and_kwargs() -> None:
    """768 -> 512 projection, two residual blocks, final LayerNorm; kwargs resize it."""
    hidden, depth = 512, 2
    block = 2 * hidden + 2 * (hidden * hidden + hidden)  # LayerNorm + two Linears
    expected = 768 * hidden + hidden + depth * block + 2 * hidden
    assert n_params(zm.create_model("resmlp", 0)) == expected == 1_447_424
    small = zm.create_model("resmlp", 3, in_features=16, hidden=8, depth=1, dropout=0.1)
    assert small.num_features == 8
    assert small(torch.randn(N, 16)).shape == (N, 3)


# --- the contract every zoo model keeps ------------------------------------------------------------------

@pytest.mark.parametrize("name", zm.list_models())
def test_zoo_model_contract(name: str) -> None:
    """Builds with and without a head; features are (N, num_features); logits are (N, classes)."""
    x = input_for(name)
    model = zm.create_model(name, 10).eval()
    feats = model.features(x)
    assert feats.shape == (N, model.num_features)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 10
    assert model(x).shape == (N, 10)
    torch.testing.assert_close(zm.features(model, x), feats)

    backbone = zm.create_model(name, 0).eval()
    assert isinstance(backbone.head, nn.Identity)
    assert backbone(x).shape == (N, backbone.num_features)
    assert backbone.num_features == model.num_features


@pytest.mark.parametrize("name", zm.list_models())
def test_zoo_model_multi_head(name: str) -> None:
    """A shared backbone with heads [2, 4] outputs 6 logits; head=i selects one head."""
    x = input_for(name)
    model = zm.create_model(name, 6, heads=[2, 4]).eval()
    assert model(x).shape == (N, 6)
    assert model(x, head=1).shape == (N, 4)
    assert zm.features(model, x).shape == (N, model.num_features)


@pytest.mark.parametrize("name", [n for n in zm.list_models() if len(INPUT_SHAPES.get(n, ())) == 3])
def test_conv_models_channels_last(name: str) -> None:
    """channels_last weights and inputs give the same logits and features as contiguous ones."""
    torch.manual_seed(0)
    model = zm.create_model(name, 10).eval()
    x = input_for(name)
    with torch.no_grad():
        ref_logits, ref_feats = model(x), model.features(x)
        model = model.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(model(xc), ref_logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.features(xc), ref_feats, rtol=1e-4, atol=1e-5)
    # Training mode too (BN batch statistics, backward through the shortcuts).
    model.train()
    model(xc).sum().backward()


def test_every_registered_model_has_an_input_shape() -> None:
    """Guards the table above: a new architecture without a row would silently escape these tests."""
    assert set(zm.list_models()) <= set(INPUT_SHAPES)
    assert {"resnet32", "wrn16_4", "resmlp", "reduced_resnet18"} <= set(zm.list_models())


# --- timm models -------------------------------------------------------------------------------------------

def test_timm_features_are_pre_logits() -> None:
    """zoo.models.features on a timm model is its pre-logits output, and multi-head works on top of it."""
    torch.manual_seed(0)
    model = zm.create_model("resnet10t", 10).eval()
    x = torch.randn(N, 3, 32, 32)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(zm.features(model, x), expected)
        assert expected.shape == (N, model.num_features)
        multi = zm.create_model("resnet10t", 6, heads=[2, 4]).eval()
        assert multi(x).shape == (N, 6)
