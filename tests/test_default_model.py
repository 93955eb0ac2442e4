"""The shipped default model: it loads, its config matches its card, sampling is reproducible, and
its class-conditional samples are read as the digits asked for (a reduced form of the quality gate
in benchmarks/quality_gate.py)."""

import json
import re

import torch

from unetscope import Sampler, load_model
from unetscope.bundled.card import class_agreement
from unetscope.models import default_model_path


def test_loads_and_matches_its_card():
    folder = default_model_path()
    m = load_model("default")
    meta = json.loads((folder / "unetscope.json").read_text())
    card = (folder / "README.md").read_text()
    assert m.num_blocks == 12 and f"K = {m.num_blocks}" in card
    assert m.sample_shape == (1, 32, 32) and m.conditioning == "class" and m.num_classes_real == 10 and m.null_class == 10
    assert m.schedule.beta_schedule == "squaredcos_cap_v2" and m.schedule.num_train_timesteps == 1000
    assert f"T = {m.schedule.num_train_timesteps}" in card and f"{meta['training']['steps']} steps" in card
    assert m.variance_type == "fixed_small" and "fixed variance (fixed_small)" in card
    q = meta["quality"]
    assert q["agreement"] >= 0.9 and q["samples"] == 500 and f"{q['agreement']:.1%}" in card
    channels = tuple(json.loads((folder / "config.json").read_text())["block_out_channels"])
    assert str(channels) in card
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    assert 1e6 < size < 20e6  # a few MB
    assert re.search(r"\d+ min on one CPU thread", card)


def test_sampling_is_bitwise_reproducible():
    m = load_model("default")
    s = Sampler(m, steps=10, guidance=3.0)
    a = s.sample([5, 6], [2, 9]).x0
    b = Sampler(load_model("default"), steps=10, guidance=3.0).sample([5, 6], [2, 9]).x0
    assert torch.equal(a, b)


def test_samples_are_the_digits_asked_for():
    # 20 samples, 2 per digit, 50 steps: the full gate (500 samples, 100 steps, >= 90%) is in benchmarks/
    q = class_agreement(load_model("default"), samples=20, steps=50, guidance=3.0)
    assert q["agreement"] >= 0.75, q["per_class"]
