"""unetscope: understand and accelerate diffusion U-Nets over sampling time.

Implements "Unraveling the Temporal Dynamics of the Unet in Diffusion Models": intervene on time
steps, skip connections and bottom blocks over ranges of steps, and compare with the baseline.
"""

from .adapters.base import AdapterError, UNetUnits
from .adapters.weights import load_weights
from .api import SettingsError, experiment, measure_shortcut, reproduce, search_shortcut, setup, write_report
from .deploy import Accelerated, DeployError, accelerate
from .explore import explore
from .guidance import Denoiser
from .metrics import psnr, ssim
from .models import Cond, DiffusionModel, ModelError, load_model, wrap
from .plan import (AdaptiveCache, DropBlocks, Intervention, Plan, PlanError, PlanStep, ReuseEncoder, SkipSteps, StepAction,
                   StopEarly, ZeroSkips)
from .sampler import Sampler, SamplerError, StepOutput, Trajectory
from .schedule import NoiseSchedule

__version__ = "0.1.0"

__all__ = [
    "load_model", "wrap", "DiffusionModel", "Cond", "Sampler", "Trajectory", "StepOutput", "Denoiser", "Plan", "PlanStep",
    "StepAction", "Intervention", "SkipSteps", "ZeroSkips", "DropBlocks", "StopEarly", "ReuseEncoder", "AdaptiveCache", "psnr", "ssim",
    "NoiseSchedule", "UNetUnits", "load_weights", "AdapterError", "ModelError", "PlanError", "SamplerError",
    "SettingsError", "setup", "experiment", "reproduce", "measure_shortcut", "search_shortcut", "write_report",
    "accelerate", "Accelerated", "DeployError", "explore",
]
