"""DPM-Solver++(2M) through diffusers' scheduler, driving the same guided U-Net call as the Sampler:
checked against a hand-written DPM-Solver++(2M) and against DDIM's ODE solution as steps grow."""

import math

import numpy as np
import pytest
import torch

from unetscope import Denoiser, DropBlocks, Plan, ReuseEncoder, Sampler, SkipSteps, StopEarly, load_model
from unetscope.plan import PlanError, StepAction
from unetscope.noise import NoiseBank
from unetscope.sampling import SamplerError

SEEDS, LABELS = [3, 4, 5], [1, 2, 7]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


@torch.no_grad()
def _hand_dpm_solver_pp_2m(model, steps, guidance, cut_at=None):
    """Lu et al. (2022), DPM-Solver++(2M) in lambda = log(alpha / sigma): first order at the first
    step, x_est0 at the last (final sigma zero), 2M in between; eps-prediction, x_est0 clipped.
    ``cut_at(i)``: the evaluation i's (0 first) ``(StepAction, index of the evaluation whose
    activations it reads or None)``; every evaluation keeps every site it computes."""
    T = model.schedule.num_train_timesteps
    ab = model.schedule.alphas_cumprod.numpy()
    taus = np.linspace(0, T - 1, steps + 1).round()[::-1][:-1].astype(int)  # diffusers' "linspace" spacing
    alpha, sigma = np.sqrt(ab[taus]), np.sqrt(1 - ab[taus])
    lam = np.log(alpha) - np.log(sigma)
    den = Denoiser(model, guidance)
    c = model.make_cond(LABELS, len(SEEDS))
    x = NoiseBank(SEEDS, model.sample_shape).initial()
    prev, kept = None, []
    K = model.num_blocks
    every_site = [f"E[{i}]" for i in range(K)] + ["M"] + [f"D[{j}]" for j in range(K)]
    for i, tau in enumerate(taus):
        action, read = cut_at(i) if cut_at else (None, None)
        fill = None if read is None else {s: kept[read][s] for s in action.needs(K)}
        res = den(x, torch.full((len(SEEDS),), int(tau)), c, action, fill=fill, capture=every_site)
        kept.append(res.captured)
        eps = res.out
        x0 = ((x - sigma[i] * eps) / alpha[i]).clamp(-1, 1)
        if i == len(taus) - 1:
            return x0
        h = lam[i + 1] - lam[i]
        if prev is None:
            d = x0
        else:
            r = prev[1] / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * prev[0]
        x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * math.expm1(-h) * d
        prev = (x0, h)


@pytest.mark.parametrize("steps", [2, 7, 20])
def test_matches_a_hand_written_dpm_solver_pp_2m(model, steps):
    got = Sampler(model, steps=steps, method="dpm++", guidance=3.0).sample(SEEDS, LABELS)
    want = _hand_dpm_solver_pp_2m(model, steps, 3.0)
    assert got.nfe == steps and got.x0.shape == want.shape
    assert torch.allclose(got.x0, want.float(), atol=2e-4), (got.x0 - want).abs().max()


def test_guidance_reaches_the_unet_like_the_sampler(model):
    a = Sampler(model, steps=7, method="dpm++", guidance=3.0).sample(SEEDS, LABELS).x0
    b = Sampler(model, steps=7, method="dpm++", guidance=1.0).sample(SEEDS, LABELS).x0
    assert (a - b).abs().max() > 1e-3


@pytest.mark.slow  # 1,140 evaluations: a long numerical check with no faster equivalent
def test_converges_to_the_ddim_ode_solution_as_steps_grow(model):
    ref = Sampler(model, steps=1000, method="ddim", guidance=3.0).sample(SEEDS, LABELS).x0  # DDIM eta 0, every timestep
    err = [(Sampler(model, steps=n, method="dpm++", guidance=3.0).sample(SEEDS, LABELS).x0 - ref).abs().mean().item()
           for n in (5, 10, 25, 100)]
    assert err == sorted(err, reverse=True) and err[-1] < err[0] / 5 and err[-1] < 0.02, err


def test_batches_give_the_same_samples_and_bad_settings_are_refused(model):
    whole = Sampler(model, steps=5, method="dpm++", guidance=3.0).sample(SEEDS, LABELS).x0
    split = Sampler(model, steps=5, method="dpm++", guidance=3.0, batch_size=2).sample(SEEDS, LABELS).x0
    assert torch.allclose(whole, split, atol=1e-5)
    with pytest.raises(SamplerError, match="steps must be an integer"):
        Sampler(model, steps=0, method="dpm++")
    with pytest.raises(SamplerError, match="seeds must be"):
        Sampler(model, steps=5, method="dpm++", guidance=3.0).sample([1.5], [1])
    for walk in (StopEarly(2), SkipSteps(4, 2)):
        with pytest.raises(SamplerError, match="U-Net's interventions .* only"):
            Sampler(model, steps=5, method="dpm++", guidance=3.0).sample(SEEDS, LABELS, Plan([walk]))
    with pytest.raises(PlanError):  # checked against the solver's own steps
        Sampler(model, steps=5, method="dpm++", guidance=3.0).sample(SEEDS, LABELS, Plan([DropBlocks(1, 9, 2, "cache")]))


def test_a_plan_runs_on_the_solvers_own_steps(model):
    """Step t of the plan is the solver's evaluation S - t (0 first); a cache cut reads the last
    evaluation that computed its site: DeepCache-style caching stacked on DPM-Solver++, against the
    hand solver."""
    S, K = 7, model.num_blocks
    nb = max(1, K - 1)
    plan = Plan([DropBlocks(nb, 5, 2, "cache"), DropBlocks(K, 2, 1)])  # steps 5, 4 read step 6's; step 2 zeros
    cache, zero = StepAction(drop_blocks=nb, fill="cache"), StepAction(drop_blocks=K)
    cuts = {S - 5: (cache, S - 6), S - 4: (cache, S - 6), S - 2: (zero, None)}
    want = _hand_dpm_solver_pp_2m(model, S, 3.0, cut_at=lambda i: cuts.get(i, (None, None)))
    got = Sampler(model, steps=S, method="dpm++", guidance=3.0).sample(SEEDS, LABELS, plan)
    assert torch.allclose(got.x0, want.float(), atol=2e-4), (got.x0 - want).abs().max()
    plain = Sampler(model, steps=S, method="dpm++", guidance=3.0).sample(SEEDS, LABELS)
    assert (got.x0 - plain.x0).abs().max() > 1e-3 and got.plan == plan and got.nfe == S
    assert got.units_run < plain.units_run  # the cut units were not run
    assert torch.equal(Sampler(model, steps=S, method="dpm++", guidance=3.0).sample(SEEDS, LABELS, Plan()).x0, plain.x0)
    reuse = Plan([ReuseEncoder(4, 3)])  # the encoder's outputs of step 5 at steps 4..2
    cuts = {S - t: (StepAction(reuse_encoder=True), S - 5) for t in (4, 3, 2)}
    want = _hand_dpm_solver_pp_2m(model, S, 3.0, cut_at=lambda i: cuts.get(i, (None, None)))
    got = Sampler(model, steps=S, method="dpm++", guidance=3.0).sample(SEEDS, LABELS, reuse)
    assert torch.allclose(got.x0, want.float(), atol=2e-4), (got.x0 - want).abs().max()
