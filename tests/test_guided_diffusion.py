"""The guided-diffusion / GLIDE-style adapter on a faithful small model of that family."""

import math
import sys
from pathlib import Path

import pytest
import torch

import unetscope as us  # noqa: E402
import unetscope.noise  # noqa: E402,F401
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from guided_unet import UNetModel  # noqa: E402
from unetscope.runner import UNetRunner  # noqa: E402
from unetscope.adapters.guided_diffusion import GuidedDiffusionUnits  # noqa: E402


def _model(**kw):
    torch.manual_seed(0)
    return UNetModel(**kw).eval()


def _inputs(n=2):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, 32, 32, generator=g), torch.tensor([5, 700])[:n]


@pytest.mark.parametrize("kw, cond", [
    ({}, {}),
    ({"num_classes": 10, "num_res_blocks": 2}, {"class_labels": torch.tensor([3, 7])}),
    ({"xf_width": 8}, {"tokens": torch.tensor([[1, 2, 3], [4, 5, 6]]), "mask": torch.tensor([[1., 1, 0], [1, 1, 1]])}),
])
def test_parity_with_the_models_forward(kw, cond):
    m = _model(**kw)
    units = GuidedDiffusionUnits(m)
    x, t = _inputs()
    with torch.no_grad():
        ref = units.full_forward(x, t, cond)
    out = UNetRunner(units)(x, t, cond).out
    assert torch.allclose(out, ref, atol=1e-6)
    assert units.num_blocks == len(m.input_blocks) == len(m.output_blocks)


def test_glide_base_has_16_units():
    # GLIDE base: channel_mult (1, 2, 3, 4), 3 res blocks -> 1 + 4 * 3 + 3 = 16 input blocks (the paper's K)
    m = UNetModel(image_size=64, model_channels=8, channel_mult=(1, 2, 3, 4), num_res_blocks=3, attention_resolutions=())
    assert GuidedDiffusionUnits(m).num_blocks == 16


def test_drop_blocks_and_zero_skips_equal_hooks():
    m = _model(num_res_blocks=2)
    runner = UNetRunner(GuidedDiffusionUnits(m))
    x, t = _inputs()
    K = runner.num_blocks
    for nb in range(1, K + 1):
        h = m.output_blocks[nb - 1].register_forward_hook(lambda mod, i, o: torch.zeros_like(o))
        with torch.no_grad():
            ref = m(x, t)
        h.remove()
        assert torch.allclose(runner(x, t, drop_blocks=nb).out, ref, atol=1e-6)
    chans = []
    hooks = [b.register_forward_hook(lambda mod, i, o: chans.append(o.shape[1])) for b in m.input_blocks]
    with torch.no_grad():
        m(x, t)
    for hk in hooks:
        hk.remove()
    for ns in range(1, K + 1):
        hooks = []
        for k in range(1, ns + 1):  # skip k from the top is popped by output block K-k: zero its channels
            def pre(mod, args, c=chans[k - 1]):
                h = args[0].clone()
                h[:, -c:] = 0
                return (h,) + args[1:]
            hooks.append(m.output_blocks[K - k].register_forward_pre_hook(pre))
        with torch.no_grad():
            ref = m(x, t)
        for hk in hooks:
            hk.remove()
        assert torch.allclose(runner(x, t, zero_skips=ns).out, ref, atol=1e-6)


def test_learned_variance_sampling_by_hand():
    m = _model()  # out_channels = 6 = 2C: learn_sigma
    model = us.wrap(m, beta_schedule="squaredcos_cap_v2", num_train_timesteps=100, sample_shape=(3, 32, 32))
    assert model.variance_type == "learned_range" and model.num_blocks == len(m.input_blocks)
    s = us.Sampler(model, steps=10)
    d = next(iter(s.sample_progressive([1])))  # the first step, t = 10
    t, x = 10, d["x_t"]
    with torch.no_grad():
        out = m(x, torch.tensor([s.spacing.tau(t)]))
    eps, v = out[:, :3], out[:, 3:]
    ab, ab_prev = s.spacing.alpha_bar[t].item(), s.spacing.alpha_bar[t - 1].item()
    beta = 1 - ab / ab_prev
    post = beta * (1 - ab_prev) / (1 - ab)
    x0 = ((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)
    mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * x
    frac = (v + 1) / 2
    log_var = frac * math.log(beta) + (1 - frac) * math.log(post)
    z = us.noise.NoiseBank([1], (3, 32, 32)).step(t)
    assert torch.allclose(d["x_next"], mean + torch.exp(0.5 * log_var) * z, atol=1e-5)


def test_class_conditional_guidance_and_sweep(tmp_path):
    m = _model(num_classes=11, out_channels=3)
    model = us.wrap(m, beta_schedule="linear", num_train_timesteps=100, sample_shape=(3, 32, 32), null_class=10)
    assert model.conditioning == "class" and model.num_classes_real == 10
    from unetscope.experiments import run_experiment

    s = us.Sampler(model, steps=8, guidance=2.0)
    res = run_experiment("skip-vs-block", model, s, [0, 1], [1, 2], tmp_path, {"t_step": 2}, progress=False)
    assert res["stats"]["spent"] == res["stats"]["minimum"]


def test_not_this_family():
    with pytest.raises(us.AdapterError, match="missing"):
        GuidedDiffusionUnits(torch.nn.Linear(2, 2))
