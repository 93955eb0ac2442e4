"""unetscope: understand and accelerate diffusion U-Nets over sampling time.

Implements "Unraveling the Temporal Dynamics of the Unet in Diffusion Models": intervene on time
steps, skip connections and bottom blocks over ranges of steps, and compare with the baseline.
"""

from .adapters.base import AdapterError, UNetUnits
from .metrics import psnr, ssim
from .models import DiffusionModel, ModelError, load_model, wrap
from .plan import DropBlocks, Plan, PlanError, SkipSteps, StopEarly, ZeroSkips
from .sampler import Sampler, SamplerError, Trajectory
from .schedule import NoiseSchedule

__version__ = "0.1.0"

__all__ = [
    "load_model", "wrap", "DiffusionModel", "Sampler", "Trajectory", "Plan", "SkipSteps", "ZeroSkips", "DropBlocks",
    "StopEarly", "psnr", "ssim", "NoiseSchedule", "UNetUnits", "AdapterError", "ModelError", "PlanError",
    "SamplerError",
]
