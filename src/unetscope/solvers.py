"""Fewer-step ODE solvers that drive the same guided U-Net call as ``Sampler``: the baselines a user
would pick for speed, so that a shortcut is compared with them on one footing.

``DPMSolverSampler`` is DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2: multistep,
second order, data prediction) by diffusers' ``DPMSolverMultistepScheduler`` with its defaults
(``linspace`` timesteps, first order at the first and the last step, final sigma zero). Each U-Net
evaluation goes through ``Sampler``'s own path: the model's runner under classifier-free guidance
(``Denoiser``), then ``Sampler.predict`` (epsilon / v / sample prediction to ``x_est0``, clipped to
[-1, 1] when the sampler clips); the scheduler receives that ``x_est0`` (``prediction_type="sample"``)
and only takes the solver's step. ``x_S`` comes from the noise bank, so a DPM-Solver++ sample and a
DDIM (eta 0) sample of the same seed start from the same noise.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from .models import Cond, DiffusionModel
from .noise import NoiseBank
from .plan import Plan
from .checks import as_int
from .sampler import NonFiniteSampleError, Sampler, SamplerError, Trajectory, check_seeds, cond_slice

__all__ = ["DPMSolverSampler"]


class DPMSolverSampler:
    """DPM-Solver++(2M) over ``steps`` U-Net evaluations with classifier-free guidance of ``guidance``.

    ``clip_x0`` as in ``Sampler`` (on by default for pixel-space models). ``sample`` returns a
    ``Trajectory`` like ``Sampler.sample``.

    A plan of the U-Net's interventions runs on the solver's own steps (step ``steps`` is its first
    evaluation, step 1 its last): ``DropBlocks`` (zeros, or the cache of the last step that computed
    the dropped part), ``ReuseEncoder`` and ``AdaptiveCache``, so DeepCache-style and per-sample
    caching stack on DPM-Solver++.
    ``SkipSteps`` and ``StopEarly`` change the solver's walk and are refused: take fewer ``steps``."""

    method = "dpmsolver++2m"

    def __init__(self, model: DiffusionModel, steps: int = 20, guidance: float = 1.0, clip_x0: bool | None = None,
                 batch_size: int | None = None):
        T = model.schedule.num_train_timesteps
        steps_in, steps = steps, as_int(steps)
        if steps is None or not 1 <= steps <= T:
            raise SamplerError(f"steps must be an integer in 1..{T} (the model's training timesteps), got {steps_in!r}")
        # every training timestep kept: step t of this sampler is timestep t - 1, so its predict()
        # converts an output at any timestep tau (index tau + 1), and its denoiser is the guided runner
        self._full = Sampler(model, steps=T, method="ddim", guidance=guidance, clip_x0=clip_x0, batch_size=batch_size)
        self.model, self.steps, self.guidance = model, steps, self._full.guidance
        self.clip_x0, self.batch_size = self._full.clip_x0, batch_size

    def describe(self) -> dict:
        return dict(steps=self.steps, method=self.method, guidance=self.guidance, clip_x0=self.clip_x0)

    def scheduler(self):
        """A fresh diffusers ``DPMSolverMultistepScheduler`` on the model's betas, set to ``steps``."""
        from diffusers import DPMSolverMultistepScheduler

        sch = self.model.schedule
        s = DPMSolverMultistepScheduler(num_train_timesteps=sch.num_train_timesteps, trained_betas=sch.betas.numpy(),
                                        algorithm_type="dpmsolver++", solver_order=2, prediction_type="sample")
        s.set_timesteps(self.steps)
        return s

    def check_plan(self, plan: Plan | Sequence | None) -> Plan:
        """``plan`` checked against this solver's steps and the model's K; U-Net interventions only."""
        from .plan import SkipSteps, StopEarly

        if plan is None:
            return Plan()
        if not isinstance(plan, Plan):
            plan = Plan(tuple(plan))
        plan = plan.check(self.steps, self.model.num_blocks)
        walk = [it for it in plan.interventions if isinstance(it, (SkipSteps, StopEarly))]
        if walk:
            raise SamplerError(f"DPM-Solver++ takes the U-Net's interventions (DropBlocks, ZeroSkips, ReuseEncoder, AdaptiveCache) only, got "
                               f"{walk[0]!r}: a multistep solver's steps are not skipped or stopped; take fewer steps")
        return plan

    @torch.no_grad()
    def sample(self, seeds: Sequence[int], cond: Cond = None, plan: Plan | None = None) -> Trajectory:
        """One image per seed, from the noise bank's ``x_S`` of each seed, under ``plan`` (None: none)."""
        from .plan import NO_ACTION

        plan = self.check_plan(plan)
        acts, K = plan.actions(), self.model.num_blocks
        keep = plan.cache_sites(K)
        seeds = check_seeds(seeds)
        m, start = self.model, time.perf_counter()
        n = len(seeds)
        size = self.batch_size or max(n, 1)
        x0s, units, steps_run, per_sample, reused = [], 0, [], [], {}
        for i in range(0, n, size):
            chunk = seeds[i:i + size]
            c = m.make_cond(cond_slice(cond, range(i, i + len(chunk)), n), len(chunk))
            x = NoiseBank(chunk, m.sample_shape).initial().to(m.device)  # (N, C, H, W)
            sched = self.scheduler()
            cache: dict = {}
            mine = torch.zeros(len(chunk), dtype=torch.long)
            for k, tau in enumerate(sched.timesteps.tolist()):
                t = sched.timesteps.numel() - k  # the plan's step: steps .. 1
                a = acts.get(t, NO_ACTION)
                tt = torch.full((len(chunk),), int(tau), dtype=torch.long, device=x.device)
                res = self._full.denoiser(x, tt, c, a.unet, fill=a.take(cache, K, t), capture=keep)
                cache.update(res.captured)
                if not torch.isfinite(res.out).all():
                    raise NonFiniteSampleError(f"the model produced NaN or inf at DPM-Solver++ step {k + 1} "
                                               f"(timestep {int(tau)}); nothing was stored")
                x_est0, _, _ = self._full.predict(res.out, x, int(tau) + 1)
                x = sched.step(x_est0, int(tau), x).prev_sample.to(x.dtype)
                units += res.units_run
                deep = None if res.deep is None else res.deep.cpu()
                mine += len(a.unet.computes(K)) + (0 if deep is None else a.deep_units() * deep.long())
                if deep is not None:
                    reused.setdefault(t, []).append(~deep)
                if i == 0:
                    steps_run.append(t)
            x0s.append(x.float().cpu())
            per_sample += mine.tolist()
        return Trajectory(x0=torch.cat(x0s), seeds=[int(s) for s in seeds], plan=plan, model=m, steps_run=steps_run,
                          units_run=units, seconds=time.perf_counter() - start, units_per_sample=per_sample,
                          reused={t: torch.cat(v) for t, v in reused.items()})
