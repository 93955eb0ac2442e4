"""A tiny Stable-Diffusion-style pipeline (random tiny CLIP text encoder, VAE and UNet2DConditionModel)
saved to a folder and loaded by path: parity, prompts with guidance, a sweep and a shortcut run."""

import json

import pytest
import torch

import unetscope as us
import unetscope.store  # noqa: F401
from unetscope.cli import main


def test_loads_as_a_latent_text_model_with_parity(sd_dir):
    m = us.load_model(sd_dir)
    assert m.latent and m.conditioning == "text" and m.sample_shape == (4, 8, 8) and m.num_blocks == 4
    assert m.schedule.beta_schedule == "scaled_linear"
    cond = m.make_cond(["a cat", "a dog"], 2)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    with torch.no_grad():
        ref = m.units.unet(x, t, encoder_hidden_states=cond["encoder_hidden_states"]).sample
    assert torch.allclose(m.runner(x, t, cond).out, ref, atol=1e-6)
    s = us.Sampler(m, steps=6, guidance=4.0)
    assert not s.clip_x0  # latent: no clipping of x_est0 by default
    tr = s.sample([0, 1], ["a cat", "a dog"])
    one = us.Sampler(m, steps=3, guidance=4.0, batch_size=2).sample(range(3), "a cat")  # one prompt, in chunks
    assert torch.equal(one.x0, us.Sampler(m, steps=3, guidance=4.0, batch_size=2).sample(range(3), ["a cat"] * 3).x0)
    img = tr.images
    assert img.shape == (2, 3, 16, 16) and 0 <= img.min() and img.max() <= 1  # decoded by the VAE


def test_cli_prompts_sweep_and_shortcut(sd_dir, tmp_path, capsys):
    pf = tmp_path / "prompts.txt"
    pf.write_text("tench\ngoldfish\n")
    out = tmp_path / "ph"
    code = main(["sweep", "phases", "--model", str(sd_dir), "--steps", "8", "--prompts", str(pf), "--t-step", "2",
                 "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    rows = us.store.ResultStore(out / "results.sqlite").rows()
    assert {r["cond"] for r in rows} == {"tench", "goldfish"}
    code = main(["shortcut", "--model", str(sd_dir), "--steps", "8", "--prompt", "a cat", "--samples", "2",
                 "--preset", "paper-cache", "--out", str(tmp_path / "sc"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "sc" / "summary.json").read_text())
    assert summary["samples"] == 2 and 0 < summary["compute_saving"] < 1


@pytest.mark.parametrize("argv, message", [
    (["--prompts", "/no/such/file.txt"], "does not exist"),
    ([], "is text-conditioned: give --prompt"),
    (["--prompt", "a", "--prompt", "b", "--samples", "3"], "2 prompts for 3 samples"),
])
def test_bad_prompt_input(sd_dir, tmp_path, capsys, argv, message):
    code = main(["sample", "--model", str(sd_dir), "--steps", "4", "--out", str(tmp_path / "o"), "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_not_a_pipeline_and_unsupported_block(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model_index.json").write_text("{}")
    code = main(["sample", "--model", str(tmp_path / "junk"), "--out", str(tmp_path / "o")])
    assert code == 2 and "no unet/config.json" in capsys.readouterr().err
    from diffusers import DDPMScheduler, UNet2DModel

    UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 32),
                down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"),
                up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"), attention_head_dim=8).save_pretrained(tmp_path / "skip")
    DDPMScheduler().save_config(tmp_path / "skip")
    code = main(["sample", "--model", str(tmp_path / "skip"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "SkipDownBlock2D is not supported" in err
