"""unetscope's own DDPM and DDIM over respaced steps: the paper's Eq. 3 in DDIM form, with jumps
(Eq. 4).

One update covers both samplers:

    x_land = sqrt(ab_land) * x_est0 + sqrt(max(1 - ab_land - sd^2, 0)) * eps + sn * z_t

with ``land = t - 1`` normally and ``t - n - 1`` for ``SkipSteps(t, n)``. DDIM: ``sd = sn = eta *
sqrt(posterior variance)``. DDPM: ``sd^2`` is the posterior variance (so the mean is the posterior
mean ``mu(x_t, x_est0)``) and ``sn`` the model's variance: fixed_small (= sd), fixed_large (beta),
or learned_range (iDDPM/GLIDE). Landing on step 0 adds no noise. ``z_t`` comes from the noise bank.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..checks import METHODS, check_eta, check_scheduler_options, check_variance
from ..models import DiffusionModel
from ..noise import NoiseBank
from .records import SamplerError
from .solver import Solver, UNetCall

__all__ = ["RespacedSolver", "RespacedState", "METHODS"]



@dataclass(frozen=True)
class RespacedState:
    """A group of samples' state beyond x_t: only their noise (the bank of their seeds)."""

    bank: NoiseBank

    @property
    def n(self) -> int:
        return len(self.bank.seeds)

    def copy(self) -> "RespacedState":
        return self  # nothing in it changes from step to step


class RespacedSolver(Solver):
    """DDPM ancestral or DDIM (``eta``) over ``steps`` respaced steps of the model's schedule."""

    jumps = True
    stateless = True
    uses_variance = True

    def __init__(self, model: DiffusionModel, steps: int, method: str = "ddpm", eta: float = 0.0,
                 variance: str | None = None, options: Mapping | None = None, clip_x0: bool = False):
        check_scheduler_options(options, None, SamplerError, method=method)  # unetscope's own: it takes none
        eta = check_eta(eta, method, SamplerError)
        variance = check_variance(variance, method, SamplerError, model_variance=model.variance_type)
        self.model, self.steps, self.name, self.eta, self.variance = model, steps, method, eta, variance
        self.spacing = sp = model.schedule.respace(steps)
        self._ab = [float(a) for a in sp.alpha_bar]
        post = sp.posterior_variance
        # log posterior variance, index t-1; step 1's (zero) is replaced by step 2's, as iDDPM clips it
        self._post_log_clipped = torch.log(torch.cat([post[2:3], post[2:]])) if steps > 1 else None
        self._post = [float(v) for v in post]
        self._beta = [float(b) for b in sp.beta]

    @classmethod
    def accepts(cls, method: str) -> bool:
        return method in METHODS

    def describe(self) -> dict:
        return dict(method=self.name, eta=self.eta, variance=self.variance)

    def settings(self) -> dict:
        return dict(method=self.name, eta=self.eta, variance=self.variance, options={})

    def new_state(self, seeds: Sequence[int]) -> RespacedState:
        return RespacedState(NoiseBank(seeds, self.model.sample_shape))

    def model_input(self, states, x, t, k) -> UNetCall:
        tau = torch.full((x.shape[0],), self.spacing.tau(t), dtype=torch.long, device=x.device)
        return UNetCall(x, tau, self._ab[t], None)

    def advance(self, states, x, t, k, call, x0, eps, frac, land, z=None):
        def draw():
            if not states:
                return None
            return torch.cat([st.bank.step(t) for st in states]).to(x.device)

        return self.update(x0, eps, t, land, z, frac, draw=draw)

    def sigmas(self, t: int, frac=None):
        """(sd, sn) at step t: the direction's and the noise's standard deviation."""
        post = self._post[t]
        if self.name == "ddim":
            s = self.eta * math.sqrt(post)
            return s, s
        sd = math.sqrt(post)
        if self.variance == "fixed_small":
            return sd, sd
        if self.variance == "fixed_large":
            return sd, math.sqrt(self._beta[t])
        log_var = frac * math.log(self._beta[t]) + (1 - frac) * float(self._post_log_clipped[t - 1])
        return sd, torch.exp(0.5 * log_var)

    def update(self, x0, eps, t: int, land: int, z, frac=None, draw=None) -> torch.Tensor:
        """Eq. 3 (land = t-1) or Eq. 4 (a jump): x_t's estimates -> x_land; ``z`` is step t's noise
        (``draw()`` gives it where it is needed and not given)."""
        if land == 0:
            return x0
        sd, sn = self.sigmas(t, frac)
        ab = self._ab[land]
        out = math.sqrt(ab) * x0 + math.sqrt(max(1 - ab - sd * sd, 0.0)) * eps
        if isinstance(sn, torch.Tensor) or sn > 0:
            if z is None and draw is not None:
                z = draw()
            if z is None:
                raise SamplerError(f"the step at t={t} adds noise: give its noise z (NoiseBank.step(t))")
            out = out + sn * z
        return out
