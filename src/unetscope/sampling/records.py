"""What sampling hands back (one step's record, a whole run's trajectory), its errors, and the two
small conversions every solver shares: a model output to (x_est0, eps), and a slice of conditions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import UnetscopeError
from ..models import Cond, DiffusionModel, ModelError
from ..plan import Plan, StepAction

__all__ = ["StepOutput", "Trajectory", "SamplerError", "NonFiniteSampleError", "x0_and_eps", "cond_slice", "KEEP"]

KEEP = ("x_t", "x_est0")  # the per-step tensors a run may keep


class SamplerError(UnetscopeError, ValueError):
    """A sampler setting outside what is allowed."""


class NonFiniteSampleError(SamplerError):
    """The model produced NaN or inf: sampling stops at the first step where it happens."""


@dataclass
class StepOutput:
    """What one ``Sampler.step`` made (tensors of the step's N samples): the one step record."""

    t: int
    land: int  # the step x_next belongs to (t - 1, or below for a jump; 0 is the output)
    action: StepAction
    x_t: torch.Tensor
    x_est0: torch.Tensor  # (N, C, H, W), clipped if the sampler clips (a two-call step: its last call's)
    eps: torch.Tensor
    frac: torch.Tensor | None  # learned variance interpolation (learned_range), else None
    x_next: torch.Tensor | None  # None after a stop
    captured: dict[str, torch.Tensor]  # site -> output, as asked by ``capture`` (per-sample rows)
    units_run: float  # units computed per sample, summed over the step's calls (AdaptiveCache: the samples' mean)
    deep: torch.Tensor | None = None  # AdaptiveCache: per sample, whether its bottom blocks ran (on any call)
    x_in: torch.Tensor | None = None  # the U-Net's input of the step's first call, in model space
    units_per_sample: torch.Tensor | None = None  # units per sample over the step's calls
    calls: int = 1  # U-Net calls the step made (a Heun step: two)


@dataclass
class Trajectory:
    """The result of one sampling call: ``x0`` (model space) and, on request, every step's
    ``x_t`` and ``x_est0`` (dicts keyed by step number, on the CPU)."""

    x0: torch.Tensor  # (N, C, H, W)
    seeds: list[int]
    plan: Plan
    model: DiffusionModel = field(repr=False)
    x_t: dict[int, torch.Tensor] = field(default_factory=dict)
    x_est0: dict[int, torch.Tensor] = field(default_factory=dict)
    steps_run: list[int] = field(default_factory=list)  # the step of each U-Net call, in order
    units_run: float = 0  # encoder + decoder (+ middle) units computed, summed over evaluations (samples' mean)
    seconds: float = 0.0
    units_per_sample: list[int] = field(default_factory=list)  # each sample's units, summed over its evaluations
    reused: dict[int, torch.Tensor] = field(default_factory=dict)  # AdaptiveCache: step -> per sample, cache read

    @property
    def nfe(self) -> int:
        """U-Net evaluations (one per call; guidance's two halves run as one batch)."""
        return len(self.steps_run)

    @property
    def images(self) -> torch.Tensor:
        """``x0`` as images in [0, 1] (decoded by the VAE for latent models)."""
        return self.model.decode(self.x0)


def x0_and_eps(out: torch.Tensor, x: torch.Tensor, ab: float, kind: str, clip: bool):
    """A model output at alpha_bar ``ab`` -> (x_est0, eps) for an epsilon, v or sample prediction;
    x_est0 clipped to [-1, 1] (and eps made consistent with it) when ``clip``."""
    a, s = math.sqrt(ab), math.sqrt(1 - ab)
    if kind == "epsilon":
        eps = out
        x0 = (x - s * eps) / a
    elif kind == "v_prediction":
        x0 = a * x - s * out
        eps = a * out + s * x
    else:  # "sample"
        x0 = out
        eps = (x - a * x0) / s
    if clip:
        x0 = x0.clamp(-1, 1)
        eps = (x - a * x0) / s
    return x0, eps


def cond_slice(cond: Cond, idx, n: int) -> Cond:
    """The conditions of samples ``idx`` out of ``n``: one value for all (a class, a prompt), one per
    sample (a list), or a dict of batch-first tensors (raw keyword conditioning)."""
    idx = list(idx)
    if cond is None or isinstance(cond, (int, str)) or (torch.is_tensor(cond) and cond.dim() == 0):
        return cond
    if isinstance(cond, dict):
        return {k: v[idx] for k, v in cond.items()}
    items = list(cond)
    if len(items) == 1:
        return items
    if len(items) != n:
        raise ModelError(f"give one condition per sample ({n}), got {len(items)}")
    return [items[i] for i in idx]
