import json

import pytest
import torch

from conftest import tiny_unet
from unetscope import ModelError, Sampler, SamplerError, load_model


def test_pipeline_folder_loads_like_the_unet_folder(tiny_model_dir, tmp_path):
    from diffusers import DDPMScheduler

    pipe = tmp_path / "pipe"
    tiny_unet(classes=11).save_pretrained(pipe / "unet")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").save_pretrained(pipe / "scheduler")
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    a, b = load_model(pipe), load_model(tiny_model_dir)
    assert a.schedule == b.schedule and a.num_blocks == b.num_blocks == 4
    assert a.conditioning == "class" and a.null_class is None and b.null_class == 10
    x = Sampler(a, steps=4).sample([0], cond=[3]).x0
    y = Sampler(b, steps=4).sample([0], cond=[3]).x0
    assert torch.equal(x, y)  # same weights (seed 0), same schedule, same noise
    with pytest.raises(SamplerError, match="no unconditional branch"):
        Sampler(a, steps=4, guidance=2)


def test_schedule_and_types_come_from_the_scheduler_config(tmp_path):
    from conftest import save_tiny_model

    m = load_model(save_tiny_model(tmp_path / "m", beta_schedule="linear", T=500, prediction_type="v_prediction",
                                   variance_type="learned_range"))
    assert (m.schedule.beta_schedule, m.schedule.num_train_timesteps) == ("linear", 500)
    assert m.prediction_type == "v_prediction" and m.variance_type == "learned_range"


def test_bad_folders(tmp_path):
    with pytest.raises(ModelError, match="is not 'default', a local folder"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_model(tmp_path / "empty")
    tiny_unet().save_pretrained(tmp_path / "nosched")
    with pytest.raises(ModelError, match="no scheduler_config.json"):
        load_model(tmp_path / "nosched")
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    (tmp_path / "vae" / "scheduler_config.json").write_text("{}")
    with pytest.raises(ModelError, match="supported: UNet2DModel, UNet2DConditionModel"):
        load_model(tmp_path / "vae")
