"""DPM-Solver++(2M) through diffusers' scheduler, driving the same guided U-Net call as the Sampler:
checked against a hand-written DPM-Solver++(2M) and against DDIM's ODE solution as steps grow."""

import math

import numpy as np
import pytest
import torch

from unetscope import Denoiser, Sampler, load_model
from unetscope.noise import NoiseBank
from unetscope.sampler import SamplerError
from unetscope.solvers import DPMSolverSampler

SEEDS, LABELS = [3, 4, 5], [1, 2, 7]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


@torch.no_grad()
def _hand_dpm_solver_pp_2m(model, steps, guidance):
    """Lu et al. (2022), DPM-Solver++(2M) in lambda = log(alpha / sigma): first order at the first
    step, x_est0 at the last (final sigma zero), 2M in between; eps-prediction, x_est0 clipped."""
    T = model.schedule.num_train_timesteps
    ab = model.schedule.alphas_cumprod.numpy()
    taus = np.linspace(0, T - 1, steps + 1).round()[::-1][:-1].astype(int)  # diffusers' "linspace" spacing
    alpha, sigma = np.sqrt(ab[taus]), np.sqrt(1 - ab[taus])
    lam = np.log(alpha) - np.log(sigma)
    den = Denoiser(model, guidance)
    c = model.make_cond(LABELS, len(SEEDS))
    x = NoiseBank(SEEDS, model.sample_shape).initial()
    prev = None
    for i, tau in enumerate(taus):
        eps = den(x, torch.full((len(SEEDS),), int(tau)), c).out
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
    got = DPMSolverSampler(model, steps, guidance=3.0).sample(SEEDS, LABELS)
    want = _hand_dpm_solver_pp_2m(model, steps, 3.0)
    assert got.nfe == steps and got.x0.shape == want.shape
    assert torch.allclose(got.x0, want.float(), atol=2e-4), (got.x0 - want).abs().max()


def test_guidance_reaches_the_unet_like_the_sampler(model):
    a = DPMSolverSampler(model, 7, guidance=3.0).sample(SEEDS, LABELS).x0
    b = DPMSolverSampler(model, 7, guidance=1.0).sample(SEEDS, LABELS).x0
    assert (a - b).abs().max() > 1e-3


def test_converges_to_the_ddim_ode_solution_as_steps_grow(model):
    ref = Sampler(model, steps=1000, method="ddim", guidance=3.0).sample(SEEDS, LABELS).x0  # DDIM eta 0, every timestep
    err = [(DPMSolverSampler(model, n, guidance=3.0).sample(SEEDS, LABELS).x0 - ref).abs().mean().item()
           for n in (5, 10, 25, 100)]
    assert err == sorted(err, reverse=True) and err[-1] < err[0] / 5 and err[-1] < 0.02, err


def test_batches_give_the_same_samples_and_bad_settings_are_refused(model):
    whole = DPMSolverSampler(model, 5, guidance=3.0).sample(SEEDS, LABELS).x0
    split = DPMSolverSampler(model, 5, guidance=3.0, batch_size=2).sample(SEEDS, LABELS).x0
    assert torch.allclose(whole, split, atol=1e-5)
    with pytest.raises(SamplerError, match="steps must be an integer"):
        DPMSolverSampler(model, 0)
    with pytest.raises(SamplerError, match="seeds must be"):
        DPMSolverSampler(model, 5, guidance=3.0).sample([1.5], [1])
    from unetscope import Plan, StopEarly

    with pytest.raises(SamplerError, match="takes no plan"):
        DPMSolverSampler(model, 5, guidance=3.0).sample(SEEDS, LABELS, Plan([StopEarly(2)]))
