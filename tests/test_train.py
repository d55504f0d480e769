"""The one training loop: fixed epochs and last weights by default, validation-driven selection on request,
augmentation on the training device."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.augment import augment
from zoo.data import Split
from zoo.models import create_model
from zoo.train import TrainConfig, fit


def _data(n: int = 64, images: bool = False) -> tuple[Split, Split]:
    g = torch.Generator().manual_seed(0)
    shape = (1, 8, 8) if images else (16,)
    x = torch.randn(n, *shape, generator=g)
    y = (x.flatten(1).sum(1) > 0).long()
    return Split(x[: n // 2], y[: n // 2]), Split(x[n // 2:], y[n // 2:])


def _model(images: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    if images:
        return create_model("convnet", 2, in_chans=1, width=4, img_size=8)
    return create_model("mlp", 2, in_features=16, hidden=16)


def test_default_trains_every_epoch_and_keeps_the_last_weights():
    train, val = _data()
    model = _model()
    r = fit(model, train, val, TrainConfig(epochs=6, batch_size=8, lr=1e-2), num_classes=2, progress=False)
    assert r.epochs_run == 6 and r.kept_epoch == 5
    # validation steers nothing, so it is measured once, after the last epoch
    assert all(math.isnan(h["val_accuracy"]) for h in r.history[:-1]) and not math.isnan(r.val_accuracy)
    assert r.val_accuracy == r.history[-1]["val_accuracy"]


def test_restore_best_keeps_the_best_validation_epoch():
    train, val = _data()
    model = _model()
    cfg = TrainConfig(epochs=6, batch_size=8, lr=5e-2, restore_best=True)
    r = fit(model, train, val, cfg, num_classes=2, progress=False)
    accs = [h["val_accuracy"] for h in r.history]
    best = max(accs)
    assert r.kept_epoch == max(i for i, a in enumerate(accs) if a == best)  # ties: the later epoch
    assert r.val_accuracy == best
    from zoo.train import accuracy

    assert accuracy(model, val) == pytest.approx(best)


def test_patience_stops_early_and_ties_do_not_reset_it():
    train, _ = _data()
    model = _model()
    const = Split(train.x[:8], torch.zeros(8, dtype=torch.long))
    cfg = TrainConfig(epochs=20, batch_size=8, lr=0.0, patience=2, restore_best=True)  # lr 0: a constant score
    r = fit(model, train, const, cfg, num_classes=2, progress=False)
    assert r.epochs_run == 4  # epoch 0 sets the best; epochs 1-3 tie without improving; patience 2 ends it
    assert r.kept_epoch == 3  # the tie went to the later epoch


def test_training_augmentation_is_applied_and_seeded():
    train, val = _data(images=True)
    weights = {}
    for kind in ("none", "crop_flip", "crop_flip"):
        model = _model(images=True)
        cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, augment=kind)
        fit(model, train, val, cfg, num_classes=2, progress=False, generator=torch.Generator().manual_seed(1))
        weights.setdefault(kind, []).append(torch.cat([p.flatten() for p in model.parameters()]))
    assert not torch.equal(weights["none"][0], weights["crop_flip"][0])
    assert torch.equal(weights["crop_flip"][0], weights["crop_flip"][1])


def test_augment_kinds():
    g = torch.Generator().manual_seed(0)
    img = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    flipped = augment(img, "flip", g)
    assert all(torch.equal(f, i) or torch.equal(f, i.flip(2)) for f, i in zip(flipped, img))
    x = torch.randn(3, 1, 4, 4, requires_grad=True)
    augment(x, "crop_flip", g).sum().backward()  # differentiable with respect to the inputs (inversion)
    assert x.grad is not None
    with pytest.raises(ValueError, match="needs images"):
        augment(torch.randn(3, 5), "crop_flip", g)


def test_label_smoothing_spreads_only_over_active_classes():
    """With a class mask, smoothing over the masked (-inf) classes made the loss infinite and training
    useless (HCL's label-smoothed CE hit it): the smoothing mass goes to the active classes only."""
    from zoo.train import masked_cross_entropy

    logits = torch.tensor([[2.0, 0.5, -math.inf, -math.inf]])
    y = torch.tensor([0])
    loss = masked_cross_entropy(logits, y, 0.1)
    logp = torch.log_softmax(logits[:, :2], 1)
    assert torch.isfinite(loss) and float(loss) == pytest.approx(float(-(0.9 * logp[0, 0] + 0.1 * logp[0].mean())))
    assert float(masked_cross_entropy(logits, y)) == pytest.approx(float(-logp[0, 0]))
    train, val = _data()
    torch.manual_seed(0)
    model = create_model("mlp", 4, in_features=16, hidden=16)  # 4 outputs, classes 2 and 3 masked out
    r = fit(model, train, val, TrainConfig(epochs=8, batch_size=8, lr=1e-2, label_smoothing=0.1), num_classes=4,
            classes=[0, 1], progress=False)
    assert math.isfinite(r.history[-1]["loss"]) and r.val_accuracy > 0.7
