"""The sampler against diffusers' schedulers driven with the same noise, and the paper's Eq. 4."""

import math

import pytest
import torch

from conftest import tiny_unet
from unetscope import DiffusionModel, DropBlocks, NoiseSchedule, Plan, ReuseEncoder, Sampler, SkipSteps, StopEarly
from unetscope.adapters.diffusers_unet import DiffusersUNetUnits
from unetscope.noise import NoiseBank
from unetscope.plan import StepAction
from unetscope.sampling import SamplerError
from unetscope.plan import PlanError
from unetscope.schedule import make_betas, space_timesteps


def _model(schedule="linear", T=40, prediction="epsilon", variance="fixed_small", seed=0):
    unet = tiny_unet(attention=True, layers=1, seed=seed, out_channels=2 if variance == "learned_range" else 1)
    return DiffusionModel(DiffusersUNetUnits(unet), NoiseSchedule(schedule, T), (1, 32, 32),
                          prediction_type=prediction, variance_type=variance)


def _reference_loop(model, sampler, seeds, make_scheduler, use_ddim):
    """Drive a diffusers scheduler over the respaced steps with the noise bank's noise."""
    S, sp = sampler.steps, sampler.spacing
    kept = [int(sp.timesteps[t]) for t in range(1, S + 1)]
    bank = NoiseBank(seeds, model.sample_shape)
    sched, ts_model = make_scheduler(kept)
    x = bank.initial()
    for t in range(S, 0, -1):
        tau = torch.full((len(seeds),), kept[t - 1])
        with torch.no_grad():
            out = model.units.unet(x, tau).sample
        z = bank.step(t)
        if use_ddim:
            x = sched.step(out, ts_model[t - 1], x, eta=sampler.eta, use_clipped_model_output=True, variance_noise=z).prev_sample
        else:
            import diffusers.schedulers.scheduling_ddpm as ddpm_mod

            orig = ddpm_mod.randn_tensor
            ddpm_mod.randn_tensor = lambda *a, **k: z
            try:
                x = sched.step(out, ts_model[t - 1], x).prev_sample
            finally:
                ddpm_mod.randn_tensor = orig
    return x


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("S", [40, 12])  # S = T, and respaced
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_ddpm_matches_diffusers(schedule, S, variance):
    from diffusers import DDPMScheduler

    model = _model(schedule, variance=variance)
    sampler = Sampler(model, steps=S, method="ddpm")
    seeds = [3, 4]

    def make(kept):
        sch = DDPMScheduler(num_train_timesteps=40, beta_schedule=schedule, variance_type=variance, clip_sample=True)
        sch.set_timesteps(timesteps=kept[::-1])
        return sch, kept

    ref = _reference_loop(model, sampler, seeds, make, use_ddim=False)
    ours = sampler.sample(seeds).x0
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("S", [40, 12])
@pytest.mark.parametrize("eta, prediction", [(0.0, "epsilon"), (0.5, "epsilon"), (0.0, "v_prediction"), (1.0, "v_prediction")])
def test_ddim_matches_diffusers(schedule, S, eta, prediction):
    from diffusers import DDIMScheduler

    model = _model(schedule, prediction=prediction)
    sampler = Sampler(model, steps=S, method="ddim", eta=eta)
    seeds = [7, 8]

    def make(kept):
        # respacing as improved-diffusion does it: a new schedule over the kept timesteps
        ac = torch.cumprod(1 - make_betas(schedule, 40), 0)[kept]
        betas = 1 - ac / torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]])
        sch = DDIMScheduler(num_train_timesteps=S, trained_betas=betas.numpy(), clip_sample=True,
                            set_alpha_to_one=True, prediction_type=prediction, timestep_spacing="leading")
        sch.alphas_cumprod = ac.float()  # float64 products, as iDDPM keeps them (not a float32 cumprod)
        sch.set_timesteps(S)
        assert sch.timesteps.tolist() == list(range(S - 1, -1, -1))
        return sch, list(range(S))

    ref = _reference_loop(model, sampler, seeds, make, use_ddim=True)
    ours = sampler.sample(seeds).x0
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()


def test_respacing_rule():
    assert space_timesteps(1000, 100)[:3] == [0, 10, 20] and space_timesteps(1000, 100)[-1] == 999
    assert space_timesteps(1000, 100)[50] == 505  # round(50 * 999 / 99)
    assert space_timesteps(10, 10) == list(range(10))


def test_skip_steps_is_eq4_by_hand():
    model = _model("squaredcos_cap_v2", T=40)
    s = Sampler(model, steps=20)
    seeds, start, n = [5], 12, 4
    full = list(s.sample_progressive(seeds))
    jumped = list(s.sample_progressive(seeds, plan=Plan([SkipSteps(start, n)])))
    assert [d["t"] for d in jumped] == [t for t in range(20, 0, -1) if not start - n <= t < start]
    d = next(d for d in jumped if d["t"] == start)
    assert torch.equal(d["x_t"], next(e for e in full if e["t"] == start)["x_t"])  # same prefix
    ab = s.spacing.alpha_bar
    land = start - n - 1
    sigma2 = s.spacing.posterior_variance[start].item()  # fixed_small: sigma of the step it jumps from
    z = NoiseBank(seeds, (1, 32, 32)).step(start)
    x0, eps = d["x_est0"], d["eps"]
    by_hand = math.sqrt(ab[land]) * x0 + math.sqrt(max(1 - ab[land] - sigma2, 0)) * eps + math.sqrt(sigma2) * z
    assert d["land"] == land
    assert torch.allclose(d["x_next"], by_hand, atol=1e-6)
    # with the clipped x_est0, eps is recomputed so that Eq. 3's first term reads x_est0
    assert torch.allclose(d["x_t"], math.sqrt(ab[start]) * x0 + math.sqrt(1 - ab[start]) * eps, atol=1e-5)


def test_noise_bank_is_keyed_by_seed_and_step():
    a = NoiseBank([1, 2], (1, 4, 4))
    b = NoiseBank([2], (1, 4, 4))
    assert torch.equal(a.step(7)[1], b.step(7)[0])
    assert torch.equal(a.initial()[1], b.initial()[0])
    assert not torch.equal(a.step(7)[0], a.step(6)[0])
    assert not torch.equal(a.initial()[0], a.step(1)[0])
    # removing steps never shifts the noise later steps use
    model = _model(T=40)
    s = Sampler(model, steps=20)
    used = {}
    orig = NoiseBank.step

    def spy(self, t):
        used[t] = orig(self, t)
        return used[t]
    NoiseBank.step = spy
    try:
        s.sample([9], plan=Plan([SkipSteps(15, 5)]))
        jumped = dict(used)
        used.clear()
        s.sample([9])
    finally:
        NoiseBank.step = orig
    for t, z in jumped.items():
        assert torch.equal(z, used[t])


def test_stop_early_returns_that_steps_x_est0():
    model = _model(T=40)
    s = Sampler(model, steps=20)
    full = s.sample([1, 2], keep=("x_est0",))
    stopped = s.sample([1, 2], plan=Plan([StopEarly(6)]))
    assert torch.equal(stopped.x0, full.x_est0[6])
    assert stopped.nfe == 15 and stopped.steps_run[-1] == 6


def test_guidance_batches_both_halves_and_mixes_predictions():
    unet = tiny_unet(classes=11)
    model = DiffusionModel(DiffusersUNetUnits(unet), NoiseSchedule("linear", 40), (1, 32, 32),
                           conditioning="class", num_classes=11, null_class=10)
    s = Sampler(model, steps=5, guidance=2.5)
    x = torch.randn(2, 1, 32, 32)
    labels = torch.tensor([3, 4])
    tau = torch.full((2,), s.spacing.tau(5))
    out = s.denoiser(x, tau, {"class_labels": labels}).out
    assert s.denoiser.rows_per_sample == 2
    with torch.no_grad():
        ec = unet(x, tau, labels).sample
        eu = unet(x, tau, torch.full((2,), 10)).sample
    assert torch.allclose(out, eu + 2.5 * (ec - eu), atol=1e-5)


def test_compare_shares_the_prefix_and_matches_separate_runs():
    model = _model(T=40)
    s = Sampler(model, steps=20)
    plan = Plan([DropBlocks(2, 10, 3)])
    base, inter = s.compare([1, 2, 3], plan=plan)
    assert torch.equal(base.x0, s.sample([1, 2, 3]).x0)
    assert torch.allclose(inter.x0, s.sample([1, 2, 3], plan=plan).x0, atol=1e-6)
    assert inter.nfe == 20 and inter.steps_run == list(range(20, 0, -1))


def test_cache_fill_needs_an_earlier_step():
    model = _model(T=40)
    s = Sampler(model, steps=10)
    from unetscope import PlanError

    with pytest.raises(PlanError, match="no earlier step"):
        s.sample([1], plan=Plan([DropBlocks(2, 10, 2, fill="cache")]))
    s.sample([1], plan=Plan([DropBlocks(2, 9, 2, fill="cache")]))


def test_batch_size_does_not_change_results():
    model = _model(T=40)
    a = Sampler(model, steps=8).sample(range(5), plan=Plan([DropBlocks(1, 6, 2)]))
    b = Sampler(model, steps=8, batch_size=2).sample(range(5), plan=Plan([DropBlocks(1, 6, 2)]))
    assert torch.allclose(a.x0, b.x0, atol=1e-6)


@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_public_step_drives_the_loop(guidance):
    """``Sampler.step`` is the step contract: a loop over ``Plan.walk`` calling it (noise from the
    bank, cached outputs carried by the caller) is bitwise the sampler's own run."""
    unet = tiny_unet(classes=11)
    model = DiffusionModel(DiffusersUNetUnits(unet), NoiseSchedule("linear", 40), (1, 32, 32),
                           conditioning="class", num_classes=11, null_class=10)
    s = Sampler(model, steps=10, guidance=guidance)
    plan = Plan([SkipSteps(10, 1), ReuseEncoder(7, 2), DropBlocks(2, 5, 2, fill="cache"), StopEarly(2)])
    seeds, labels = [3, 4], [1, 2]
    bank = NoiseBank(seeds, model.sample_shape)
    x, cache, K = bank.initial(), {}, model.num_blocks
    keep = plan.cache_sites(K)
    for st in plan.walk(s.steps):
        out = s.step(x, st.t, labels, st.action, cache, z=bank.step(st.t) if st.land > 0 else None, capture=keep)
        assert out.units_run == len(st.action.computes(K)) and out.land == st.land
        cache.update(out.captured)
        x = out.x_est0 if st.action.stop else out.x_next
    assert torch.equal(x, s.sample(seeds, labels, plan).x0)
    with pytest.raises(SamplerError, match="adds noise"):
        s.step(bank.initial(), 10, labels)
    with pytest.raises(SamplerError, match="action must be a StepAction"):
        s.step(bank.initial(), 10, labels, {"drop_blocks": 2})
    with pytest.raises(SamplerError, match=r"t must be an integer in 1\.\.10"):
        s.step(bank.initial(), 11, labels)
    with pytest.raises(SamplerError, match=r"x_t must be a tensor of shape \(N, 1, 32, 32\)"):
        s.step(bank.initial()[:, :, :16], 10, labels)
    with pytest.raises(PlanError, match=r"no earlier step computed E\[0\]"):
        s.step(bank.initial(), 10, labels, StepAction(reuse_encoder=True), z=bank.step(10))
