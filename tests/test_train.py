"""Training end to end on a tiny configuration; an interrupted run resumes exactly."""

import json

import pytest
import torch

from unetscope import Sampler, load_model
from unetscope.bundled.train import TrainConfig, train


def _cfg(**kw):
    return TrainConfig(arch="tiny", steps=6, batch_size=4, checkpoint_every=2, limit_images=40, warmup=2, **kw)


def test_train_exports_a_loadable_model(tmp_path):
    res = train(_cfg(), tmp_path / "run", progress=False)
    assert res["step"] == 6 and len(res["losses"]) == 6 and all(l > 0 for l in res["losses"])
    model = load_model(tmp_path / "run" / "model")
    assert model.conditioning == "class" and model.num_classes_real == 10 and model.null_class == 10
    assert model.schedule.beta_schedule == "squaredcos_cap_v2" and model.num_blocks == 4
    meta = json.loads((tmp_path / "run" / "model" / "unetscope.json").read_text())
    assert meta["training"]["steps"] == 6
    x = Sampler(model, steps=5, guidance=3).sample([0, 1], cond=[3, 7]).x0
    assert torch.isfinite(x).all()


def test_resume_continues_exactly(tmp_path):
    full = train(_cfg(), tmp_path / "a", progress=False)
    part = train(_cfg(), tmp_path / "b", progress=False, stop_after=3)  # "interrupted" after step 3
    assert part["step"] == 3 and not (tmp_path / "b" / "model").exists()
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["step"] == 3
    rest = train(_cfg(), tmp_path / "b", progress=False)
    assert rest["losses"] == full["losses"]
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k])


def test_resume_refuses_other_settings(tmp_path):
    train(_cfg(), tmp_path / "c", progress=False, stop_after=2)
    with pytest.raises(ValueError, match="other settings \\(lr\\)"):
        train(TrainConfig(arch="tiny", steps=6, batch_size=4, checkpoint_every=2, limit_images=40, warmup=2, lr=1e-3),
              tmp_path / "c", progress=False)
