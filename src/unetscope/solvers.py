"""DPM-Solver++(2M), the fewer-step solver a user picks for speed, as one case of the scheduler-driven
sampler (``unetscope.schedulers``): ``DPMSolverSampler(model, steps)`` is ``Sampler(model, steps,
method="dpm++")``.

DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2: multistep, second order, data prediction) is
diffusers' ``DPMSolverMultistepScheduler`` with its defaults (``linspace`` timesteps, first order at
the first and the last step, final sigma zero), driving the same guided U-Net call as every sampler;
``x_S`` comes from the noise bank, so a DPM-Solver++ sample and a DDIM sample of one seed start from
the same noise. U-Net interventions (``DropBlocks``, ``ZeroSkips``, ``ReuseEncoder``,
``AdaptiveCache``) run on its steps; ``SkipSteps`` and ``StopEarly`` are refused (take fewer steps).
"""

from __future__ import annotations

from .models import DiffusionModel
from .sampling import Sampler

__all__ = ["DPMSolverSampler"]


def DPMSolverSampler(model: DiffusionModel, steps: int = 20, guidance: float = 1.0, clip_x0: bool | None = None,
                     batch_size: int | None = None, **kwargs):
    """DPM-Solver++(2M) over ``steps`` U-Net evaluations: ``Sampler(model, steps, method="dpm++", ...)``."""
    return Sampler(model, steps=steps, method="dpm++", guidance=guidance, clip_x0=clip_x0, batch_size=batch_size, **kwargs)
