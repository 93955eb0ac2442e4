"""Tests of the digit classifier: the shipped weights, training, export and loading."""

import json

import pytest
import torch

from unetscope.bundled.classifier import (
    CLASSIFIER_CARD, DigitClassifier, classify, export_classifier, load_classifier, load_digits,
    train_classifier,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def card():
    return json.loads(CLASSIFIER_CARD.read_text())


@pytest.fixture(scope="session")  # under xdist a module fixture can be torn down and made again
def trained():
    """A one-epoch model: enough to exercise training (and compare two runs) in a few seconds."""
    return train_classifier(seed=0, epochs=1)


def test_split_is_stratified_and_disjoint():
    train_x, train_y, held_x, held_y = load_digits(seed=0)
    assert train_x.shape == (4500, 1, 32, 32) and held_x.shape == (500, 1, 32, 32)
    assert torch.bincount(held_y, minlength=10).tolist() == [50] * 10
    assert 0 <= train_x.min() and train_x.max() <= 1
    assert held_x[..., :2, :].abs().max() == 0  # the 2-pixel zero border
    # no held-out image also sits in the training set
    train_images = {bytes(img.numpy()) for img in (train_x * 255).round().to(torch.uint8)}
    assert not any(bytes(img.numpy()) in train_images for img in (held_x * 255).round().to(torch.uint8))
    again = load_digits(seed=0)
    assert torch.equal(again[3], held_y) and torch.equal(again[2], held_x)


def test_shipped_classifier_heldout_accuracy(card):
    model = load_classifier()
    assert not model.training
    _, _, held_x, held_y = load_digits(seed=card["seed"])
    pred = classify(model, held_x)
    assert pred.dtype == torch.long and pred.shape == (500,)
    accuracy = (pred == held_y).float().mean().item()
    assert accuracy >= 0.97
    assert accuracy == pytest.approx(card["heldout_accuracy"], abs=0.01)


def test_train_classifier_tiny_budget(trained):
    model, accuracy = trained
    assert isinstance(model, DigitClassifier) and not model.training
    assert 0.0 <= accuracy <= 1.0
    assert model.train_info["seed"] == 0 and model.train_info["epochs"] == 1
    with torch.no_grad():
        logits = model(torch.rand(7, 1, 32, 32))
    assert logits.shape == (7, 10) and torch.isfinite(logits).all()


def test_train_classifier_is_deterministic(trained):
    model, accuracy = trained
    model2, accuracy2 = train_classifier(seed=0, epochs=1)
    assert accuracy2 == accuracy
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), name


def test_export_and_load_round_trip(trained, tmp_path):
    model, accuracy = trained
    export_classifier(model, accuracy, tmp_path)
    loaded = load_classifier(tmp_path)
    x = torch.rand(5, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    saved = json.loads((tmp_path / "card.json").read_text())
    assert saved["heldout_accuracy"] == round(accuracy, 4)
    assert saved["seed"] == 0 and saved["epochs"] == 1 and saved["seconds"] > 0


def test_classify_batches_and_shapes():
    model = load_classifier()
    x = torch.rand(13, 1, 32, 32)
    assert torch.equal(classify(model, x, batch_size=4), classify(model, x))
    assert torch.equal(classify(model, x[:, 0]), classify(model, x))  # (N, 32, 32) also accepted
    assert classify(model, x[:0]).shape == (0,)
