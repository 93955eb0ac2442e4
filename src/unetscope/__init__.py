"""unetscope: understand and accelerate diffusion U-Nets over sampling time.

Implements "Unraveling the Temporal Dynamics of the Unet in Diffusion Models": intervene on time
steps, skip connections and bottom blocks over ranges of steps, and compare with the baseline.

The public names are imported on first use (PEP 562): ``import unetscope`` is quick and pulls in no
torch, so commands that need none (``unetscope explore``) start at once.
"""

from __future__ import annotations

import importlib

from .explore import explore  # light (no torch); eager, so that ``unetscope.explore`` stays the function

__version__ = "0.1.0"

__all__ = [
    "load_model", "wrap", "DiffusionModel", "Cond", "Sampler", "make_sampler", "Trajectory", "StepOutput", "Denoiser", "Plan", "PlanStep",
    "StepAction", "Intervention", "SkipSteps", "ZeroSkips", "DropBlocks", "StopEarly", "ReuseEncoder", "AdaptiveCache",
    "psnr", "ssim",
    "NoiseSchedule", "UNetUnits", "load_weights", "AdapterError", "ModelError", "PlanError", "SamplerError",
    "SettingsError", "setup", "experiment", "reproduce", "measure_shortcut", "search_shortcut", "write_report",
    "accelerate", "Accelerated", "DeployError", "UnetscopeError", "explore", "Recipe", "read_recipe", "write_recipe",
]

_SOURCES = {  # submodule -> the public names it defines
    "adapters.base": ("AdapterError", "UNetUnits"),
    "adapters.weights": ("load_weights",),
    "api": ("SettingsError", "experiment", "measure_shortcut", "reproduce", "search_shortcut", "setup", "write_report"),
    "deploy": ("Accelerated", "DeployError", "accelerate"),
    "errors": ("UnetscopeError",),
    "guidance": ("Denoiser",),
    "metrics": ("psnr", "ssim"),
    "models": ("Cond", "DiffusionModel", "ModelError", "load_model", "wrap"),
    "plan_file": ("Recipe", "read_recipe", "write_recipe"),
    "plan": ("AdaptiveCache", "DropBlocks", "Intervention", "Plan", "PlanError", "PlanStep", "ReuseEncoder", "SkipSteps",
             "StepAction", "StopEarly", "ZeroSkips"),
    "sampling": ("Sampler", "SamplerError", "StepOutput", "Trajectory", "make_sampler"),
    "schedule": ("NoiseSchedule",),
}
_LAZY = {name: mod for mod, names in _SOURCES.items() for name in names}


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is not None:
        value = getattr(importlib.import_module(f".{mod}", __name__), name)
        globals()[name] = value  # found once: later lookups do not come here
        return value
    if not name.startswith("_"):  # a submodule used as an attribute (``unetscope.metrics``), as eager imports allowed
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
