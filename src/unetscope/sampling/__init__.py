"""Sampling: one driver (``Sampler``) over solvers behind one small interface, and one step clock.

- ``driver``: validation, the guided U-Net call under each step's action, chunks, ``compare``, the
  progressive loop and its one step record;
- ``respaced``: unetscope's DDPM/DDIM over respaced steps (the paper's Eq. 3 and 4);
- ``schedulers``: any diffusers scheduler (the vocabulary ``dpm++``, ``euler-a``, ``heun``, ...);
- ``clock``: which step each U-Net call of a scheduler belongs to (the sampler and ``accelerate`` alike);
- ``solver``: the interface a new solver implements (one file, added to ``driver.SOLVERS``).
"""

from .clock import ClockError, StepClock
from .driver import SOLVERS, Sampler, check_seeds, make_sampler, make_solver
from .records import KEEP, NonFiniteSampleError, SamplerError, StepOutput, Trajectory, cond_slice, x0_and_eps
from .respaced import METHODS, RespacedSolver, RespacedState
from .schedulers import SCHEDULERS, SchedulerSolver, SolverState, check_options, parse_option, resolve_scheduler, scheduler_names
from .solver import Solver, UNetCall

__all__ = ["Sampler", "make_sampler", "make_solver", "SOLVERS", "Trajectory", "StepOutput", "SamplerError",
           "NonFiniteSampleError", "cond_slice", "x0_and_eps", "check_seeds", "KEEP", "METHODS", "SCHEDULERS",
           "scheduler_names", "parse_option", "resolve_scheduler", "check_options", "Solver", "UNetCall", "RespacedSolver",
           "RespacedState", "SchedulerSolver", "SolverState", "StepClock", "ClockError"]
