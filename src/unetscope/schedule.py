"""Noise schedules, respacing and the paper's step numbering.

Steps count down like the paper: ``t = S, S-1, ..., 1``. The evaluation at step ``t`` reads ``x_t``
and produces ``x_{t-1}``. Step ``t`` maps to the training timestep ``tau(t)`` of a ``T``-step
schedule by improved-diffusion's ``space_timesteps`` rule (evenly spaced, ``tau(1) = 0`` and
``tau(S) = T - 1``). ``alpha_bar(0) = 1``. Everything is float64 "for accuracy", as in iDDPM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import UnetscopeError

__all__ = ["BETA_SCHEDULES", "make_betas", "space_timesteps", "NoiseSchedule", "Respaced"]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


class ScheduleError(UnetscopeError, ValueError):
    """A schedule setting outside what is supported."""


def make_betas(name: str, num_train_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """The betas of a named schedule, exactly as diffusers' schedulers build them (float64)."""
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
        raise ScheduleError(f"num_train_timesteps must be an integer >= 1, got {num_train_timesteps!r}")
    T = num_train_timesteps
    if name in ("linear", "scaled_linear"):
        for what, v in (("beta_start", beta_start), ("beta_end", beta_end)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 < v < 1):
                raise ScheduleError(f"{what} must be a number in (0, 1), got {v!r}")
    if name == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if name == "scaled_linear":  # Stable Diffusion's schedule
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    if name == "squaredcos_cap_v2":  # Nichol & Dhariwal (2021), Eq. 17, capped at 0.999

        def f(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float64)
    raise ScheduleError(f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}; got {name!r}")


def space_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """Evenly spaced kept timesteps (ascending), improved-diffusion's rule for one section."""
    if not 1 <= steps <= num_timesteps:
        raise ScheduleError(f"steps must be in 1..{num_timesteps} (the model's training timesteps), got {steps}")
    if steps == 1:
        return [0]
    stride = (num_timesteps - 1) / (steps - 1)
    kept, cur = [], 0.0
    for _ in range(steps):
        kept.append(round(cur))
        cur += stride
    return kept


@dataclass(frozen=True)
class NoiseSchedule:
    """A model's training schedule: ``beta_schedule`` over ``num_train_timesteps``."""

    beta_schedule: str = "linear"
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self):
        make_betas(self.beta_schedule, self.num_train_timesteps, self.beta_start, self.beta_end)

    @property
    def betas(self) -> torch.Tensor:
        return make_betas(self.beta_schedule, self.num_train_timesteps, self.beta_start, self.beta_end)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self.betas, dim=0)

    def q_sample(self, x0: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Diffuse ``x0`` to training ``timesteps`` (Eq. 1 composed): sqrt(ab) x0 + sqrt(1 - ab) eps."""
        ab = self.alphas_cumprod.to(x0.device)[timesteps].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def respace(self, steps: int) -> "Respaced":
        return Respaced(self, steps)


class Respaced:
    """``S`` sampling steps of a schedule, indexed by the paper's step number ``t`` (0..S).

    ``alpha_bar[t]`` is the cumulative alpha at ``tau(t)`` with ``alpha_bar[0] = 1``; the respaced
    ``beta[t] = 1 - alpha_bar[t] / alpha_bar[t-1]`` as in improved-diffusion's ``SpacedDiffusion``.
    """

    def __init__(self, schedule: NoiseSchedule, steps: int):
        self.schedule = schedule
        self.steps = int(steps)
        kept = space_timesteps(schedule.num_train_timesteps, self.steps)
        self.timesteps = torch.tensor([-1] + kept, dtype=torch.long)  # timesteps[t] = tau(t); [0] unused
        ac = schedule.alphas_cumprod
        self.alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), ac[kept]])  # (S+1,)
        self.beta = torch.zeros(self.steps + 1, dtype=torch.float64)
        self.beta[1:] = 1 - self.alpha_bar[1:] / self.alpha_bar[:-1]
        # posterior q(x_{t-1} | x_t, x_0) variance of the respaced process ("fixed_small")
        self.posterior_variance = torch.zeros_like(self.beta)
        self.posterior_variance[1:] = self.beta[1:] * (1 - self.alpha_bar[:-1]) / (1 - self.alpha_bar[1:])

    def tau(self, t: int) -> int:
        if not 1 <= t <= self.steps:
            raise ScheduleError(f"step must be in 1..{self.steps}, got {t}")
        return int(self.timesteps[t])

    def __repr__(self) -> str:
        return f"Respaced({self.schedule!r}, steps={self.steps})"
