"""``accelerate``: a schedule inside a diffusers pipeline and a hand-written diffusers loop, checked
against the unhooked pipeline (bitwise), against unetscope's own sampler, and by counting the calls
of the bottom blocks under several schedulers; the U-Net restored on exit; bad input in one line."""

import sys
from pathlib import Path

import pytest
import torch

import unetscope as us
from conftest import sd_pipeline, tiny_unet
from unetscope.deploy import DeployError, accelerate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import ddim_loop as _ddim_loop  # noqa: E402  (the hand-written loop below: one copy, the benchmarks')


@pytest.fixture(scope="module")
def pipe(sd_dir):
    return sd_pipeline(sd_dir)


def _generate(pipe, steps=6, **kw):
    g = torch.Generator().manual_seed(0)
    return pipe(["a cat", "a dog"], num_inference_steps=steps, guidance_scale=4.0, generator=g, output_type="pt",
                height=16, width=16, **kw).images


def test_an_empty_schedule_is_the_unhooked_pipeline_bit_for_bit(pipe):
    ref = _generate(pipe)
    with accelerate(pipe, us.Plan()) as h:
        out = _generate(pipe)
    assert torch.equal(out, ref)
    assert h.stats.calls == 6 and h.stats.cut_calls == 0 and h.stats.generations == 1
    assert "forward" not in pipe.unet.__dict__ and not hasattr(pipe.unet, "_unetscope_hook")


def test_a_schedule_in_the_pipeline_cuts_and_the_unet_comes_back(pipe):
    ref = _generate(pipe)
    plan = us.Plan([us.DropBlocks(2, 4, 2, "cache")])  # steps 4 and 3 of 6 read the bottom from step 5
    with accelerate(pipe, plan) as h:
        cut = _generate(pipe)
        again = _generate(pipe)  # a second pipeline call is a new generation: the same images
    assert torch.equal(cut, again) and h.stats.generations == 2
    assert not torch.equal(cut, ref) and (cut - ref).abs().max() < 0.5
    assert h.stats.cut_calls == 4 and h.stats.units_run == h.stats.units_full - 4 * (2 * 2 + 1)  # E[2..3], M, D[0..1]
    assert torch.equal(_generate(pipe), ref)  # removed: the pipeline as it was
    with pytest.raises(RuntimeError, match="boom"):
        with accelerate(pipe, plan):
            raise RuntimeError("boom")
    assert "forward" not in pipe.unet.__dict__ and torch.equal(_generate(pipe), ref)


def test_adaptive_cache_in_the_pipeline(pipe):
    """AdaptiveCache through accelerate: threshold 0 computes every step (the pipeline's images up to
    the runner's rounding), a huge one is the static cache from the step after the first, and the
    guided and unguided halves of a sample decide together (the middle block sees pairs of rows)."""
    ref = _generate(pipe)
    with accelerate(pipe, us.Plan([us.AdaptiveCache(2, 0.0)])):
        zero = _generate(pipe)
    assert torch.allclose(zero, ref, atol=1e-5)
    with accelerate(pipe, us.Plan([us.AdaptiveCache(2, 1e9, start=5, n=3)])):
        huge = _generate(pipe)
    with accelerate(pipe, us.Plan([us.DropBlocks(2, 4, 2, "cache")])):
        static = _generate(pipe)
    assert torch.allclose(huge, static, atol=1e-6)
    rows = []
    h = pipe.unet.mid_block.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    try:
        lat = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(0))
        lat[1] *= 0.05  # a sample far from the other: its features change at another pace
        for th in (0.05, 0.15, 0.3):
            rows.clear()
            with accelerate(pipe, us.Plan([us.AdaptiveCache(2, th)])):
                pipe(["a cat", "a dog"], num_inference_steps=12, guidance_scale=4.0, latents=lat, output_type="pt",
                     height=16, width=16)
            if 2 in rows:  # a call where one sample ran the deep part and the other read the cache
                break
    finally:
        h.remove()
    assert 2 in rows, f"no threshold split the two samples: {rows}"
    assert all(r % 2 == 0 for r in rows), rows  # never one half of a sample without the other


# --- a hand-written diffusers-style loop on the bundled model ------------------------------------
@pytest.fixture(scope="module")
def bundled():
    return us.load_model("default")


# _ddim_loop (benchmarks/_common.py's ddim_loop, gpu_check.py's too): the loop a user writes, on a DDIM scheduler
# respaced as unetscope respaces (tests/test_sampler.py); classifier-free guidance batched


def test_in_a_users_loop_the_schedule_is_unetscopes_own_sampler(bundled):
    S, seeds, labels = 10, [0, 1], [3, 7]
    ref = _ddim_loop(bundled, S, seeds, labels)
    with accelerate(bundled.units.unet, us.Plan(), steps=S):
        assert torch.equal(_ddim_loop(bundled, S, seeds, labels), ref)  # empty: bit for bit
    plan = us.Plan([us.DropBlocks(6, 7, 3, "cache"), us.ReuseEncoder(3, 1)])
    with accelerate(bundled.units.unet, plan, steps=S) as h:
        hooked = _ddim_loop(bundled, S, seeds, labels)
    ours = us.Sampler(bundled, steps=S, method="ddim", guidance=3.0).sample(seeds, labels, plan).x0
    assert torch.allclose(hooked, ours, atol=1e-4), (hooked - ours).abs().max()
    assert not torch.allclose(hooked, ref, atol=1e-3) and h.stats.cut_calls == 4


# --- the bottom blocks' calls, counted under several schedulers -----------------------------------
SCHEDULERS = ["DDIMScheduler", "DPMSolverMultistepScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler"]


@pytest.mark.parametrize("name", SCHEDULERS)
def test_dropped_blocks_are_never_called(name):
    import diffusers

    unet = tiny_unet(attention=True, layers=1)  # K = 4: E[3] is down_blocks[1].resnets[0], M the mid block
    sch = getattr(diffusers, name)(num_train_timesteps=1000)
    S = 6
    calls = {"E3": 0, "M": 0, "D0": 0}
    hooks = [unet.down_blocks[1].resnets[0].register_forward_hook(lambda *a: calls.__setitem__("E3", calls["E3"] + 1)),
             unet.mid_block.register_forward_hook(lambda *a: calls.__setitem__("M", calls["M"] + 1)),
             unet.up_blocks[0].resnets[0].register_forward_hook(lambda *a: calls.__setitem__("D0", calls["D0"] + 1))]

    import inspect

    step_args = inspect.signature(sch.step).parameters

    def run():
        for k in calls:
            calls[k] = 0
        sch.set_timesteps(S)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 1, 32, 32, generator=g) * sch.init_noise_sigma
        n = 0
        for t in sch.timesteps:
            with torch.no_grad():
                out = unet(sch.scale_model_input(x, t), t).sample
            n += 1
            x = (sch.step(out, t, x, generator=g) if "generator" in step_args else sch.step(out, t, x)).prev_sample
        return n, dict(calls), x

    n, full, ref = run()
    plan = us.Plan([us.DropBlocks(1, 4, 2, "cache")])  # steps 4 and 3: E[3], M and D[0] not run
    with accelerate(unet, plan, steps=S) as h:
        m, cut, x = run()
    skipped = 2 * (2 if name.startswith("Heun") else 1)  # two steps cut; Heun calls the U-Net twice a step
    assert m == n and full == {"E3": n, "M": n, "D0": n}
    assert cut == {k: n - skipped for k in cut}, (name, full, cut)
    assert h.stats.cut_calls == skipped and torch.isfinite(x).all()
    for hk in hooks:
        hk.remove()


def test_bad_input_is_one_line_and_leaves_the_unet_alone(bundled, pipe):
    unet = bundled.units.unet
    for schedule, steps, msg in [
        (us.Plan([us.SkipSteps(5, 2)]), 10, "take fewer steps"),
        (us.Plan([us.StopEarly(3)]), 10, "take fewer steps"),
        (us.Plan([us.DropBlocks(2, 30, 2)]), 10, "does not fit S = 10 steps"),
        ("no/such/schedule.json", 10, "does not exist"),
        (42, 10, "schedule must be a Plan"),
        (us.Plan(), 0, "steps must be an integer >= 1"),
    ]:
        with pytest.raises(DeployError, match=msg):
            accelerate(unet, schedule, steps=steps)
        assert "forward" not in unet.__dict__
    with pytest.raises(DeployError, match="accelerate takes a diffusers pipeline"):
        accelerate(torch.nn.Linear(2, 2), us.Plan())
    with accelerate(unet, us.Plan(), steps=10):
        with pytest.raises(DeployError, match="already runs a schedule"):
            accelerate(unet, us.Plan())
    # a schedule for more steps than the pipeline's generation, found at the call
    with accelerate(pipe, us.Plan([us.DropBlocks(2, 9, 2)])):
        with pytest.raises(DeployError, match="does not fit this generation \\(S = 6 steps"):
            _generate(pipe)
    assert "forward" not in pipe.unet.__dict__


def test_the_example_finds_hooks_and_compares(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from deploy import main

    main(["--steps", "6", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "schedule: Plan([" in out and "U-Net compute run: 0." in out and "SSIM against the unhooked loop: [" in out
    assert (tmp_path / "schedule.json").exists()
