"""Schedules inside your own diffusers pipeline or loop: ``accelerate(pipe_or_unet, schedule)``.

Built the way diffusers builds its own hooks (``diffusers.hooks``: a hook object holds its state,
the state is reset at each generation, and removing the hook restores the module): while the handle
is active, every call of a stock ``UNet2DModel`` / ``UNet2DConditionModel`` at step t runs under the
schedule's action for that step through unetscope's ``UNetRunner``; a step with nothing to do, and
nothing that a later step reads, calls the U-Net's own forward untouched (an empty schedule is the
unhooked pipeline, bit for bit).

Step t of a schedule is the generation's (S - t + 1)-th distinct timestep (``t = S`` first, like
the paper). With the pipeline's scheduler known, a timestep's step is its place in
``scheduler.timesteps`` (so img2img, which starts part-way, lands on the right steps); a bare U-Net
counts the distinct timesteps since the generation began. A generation begins when the timestep goes
up, or when the pipeline's scheduler has been set anew (its ``step_index`` back to None). Calls at
the timestep of the call before (classifier-free guidance's two branches called apart; Heun's and
DPM2's second call of a step) are the same step: each takes the step's action, and each keeps its
own cache, refreshed only by calls that computed the part.

Compiled: ``accelerate(..., compile=True)`` compiles the runner's unit functions, each once, and
every call runs through them (a step's action never recompiles). ``torch.compile(pipe.unet)`` on a
hooked U-Net works: the hook is a graph break (``torch._dynamo.disable``), so the schedule's logic
runs as Python and nothing around it is compiled; a U-Net compiled before ``accelerate`` is hooked
under its wrapper.
"""

from __future__ import annotations

import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UnetscopeError
from .plan import NO_ACTION, Intervention, Plan, PlanError, SkipSteps, StepAction, StopEarly
from .plan_file import Recipe, read_schedule
from .runner import UNetRunner
from .sampling.clock import ClockError, StepClock, call_index

__all__ = ["accelerate", "Accelerated", "DeployError", "rescale_plan"]

HOOK_NAME = "unetscope_schedule"


class DeployError(UnetscopeError, ValueError):
    """A target, schedule or call that ``accelerate`` cannot take (the U-Net is left as it was)."""


def rescale_plan(plan: Plan, from_steps: int, to_steps: int) -> Plan:
    """A schedule found at S = ``from_steps`` moved to S = ``to_steps``, as the presets scale: every
    step number and count by to/from (rounded, at least 1). A cut that reads a cache keeps off the
    first step (nothing is cached there yet), and ranges that rounding made overlap are trimmed (a
    range trimmed to nothing is dropped)."""
    if from_steps == to_steps:
        return plan

    def s(v: int) -> int:
        return max(1, round(v * to_steps / from_steps))

    items = []
    for it in plan:
        d = it.to_dict()
        for k in ("start", "n", "at"):
            if d.get(k) is not None:
                d[k] = s(d[k])
        reads = d["type"] == "ReuseEncoder" or d["type"] == "DropBlocks" and d.get("fill") == "cache"
        if reads and d["start"] >= to_steps:
            d["start"] = to_steps - 1
        if d.get("start") is not None and d.get("n") is not None:
            d["n"] = min(d["n"], d["start"])
        items.append(d)
    ranged = sorted((d for d in items if d.get("start") is not None and d.get("n") is not None and d["type"] != "SkipSteps"),
                    key=lambda d: -d["start"])
    floor = to_steps + 1  # the lowest step taken by the ranges above
    for d in ranged:
        if d["start"] >= floor:
            d["n"] -= d["start"] - floor + 1
            d["start"] = floor - 1
        if d["n"] >= 1 and d["start"] >= 1:
            floor = d["start"] - d["n"] + 1
    return Plan.from_dict([d for d in items if d.get("n") is None or (d["n"] >= 1 and d["start"] >= 1)])


def _plan_of(schedule) -> tuple[Plan, int | None, Recipe | None]:
    """A Plan, the S it was made for (None: unknown) and the recipe it belongs to (None: a plain
    schedule) from a Plan, interventions, a ``Recipe`` or a schedule file."""
    if isinstance(schedule, Recipe):
        return schedule.plan, schedule.steps, schedule
    if isinstance(schedule, Plan):
        return schedule, None, None
    if isinstance(schedule, Intervention):
        return Plan([schedule]), None, None
    if isinstance(schedule, (list, tuple)):
        try:
            return Plan(schedule), None, None
        except PlanError as e:
            raise DeployError(str(e)) from None
    if isinstance(schedule, (str, Path)):
        try:
            found = read_schedule(schedule)  # the file read once: its plan, the S it records and its recipe
            recipe = found.recipe
        except PlanError as e:
            raise DeployError(str(e)) from None
        return found.plan, found.steps, recipe
    raise DeployError(f"schedule must be a Plan, a list of interventions, a Recipe or a schedule file; got "
                      f"{type(schedule).__name__}")


def _recipe_class(recipe: Recipe):
    """(diffusers class, its constructor's settings and the recipe's options) of a recipe's scheduler."""
    from .sampling.records import SamplerError
    from .sampling.schedulers import check_options, resolve_scheduler

    try:
        _, cls, settings = resolve_scheduler(recipe.scheduler)
        return cls, {**settings, **check_options(cls, recipe.options)}
    except SamplerError as e:
        raise DeployError(f"the recipe's scheduler: {e}") from None


def _recipe_scheduler(recipe: Recipe, own):
    """The recipe's scheduler built from the pipeline's own scheduler's config (``own`` untouched)."""
    if recipe.scheduler in ("ddpm", "ddim"):
        raise DeployError(f"the recipe runs on unetscope's own respaced {recipe.scheduler}; a pipeline takes a diffusers "
                          f"scheduler (e.g. {'DDIMScheduler' if recipe.scheduler == 'ddim' else 'DDPMScheduler'}): search "
                          "the recipe with such a name (--scheduler DDIMScheduler)")
    cls, settings = _recipe_class(recipe)
    takes = [type(own), *getattr(own, "compatibles", [])]
    if cls not in takes:
        raise DeployError(f"the recipe's {cls.__name__} cannot stand in for the pipeline's {type(own).__name__} (its "
                          f"compatible schedulers: {', '.join(sorted({c.__name__ for c in takes}))})")
    try:
        new = cls.from_config(own.config, **settings)
    except Exception as e:  # noqa: BLE001 - diffusers refuses a value (an unknown algorithm_type, say)
        raise DeployError(f"{cls.__name__} cannot be built from the pipeline's scheduler config with "
                          f"{settings or 'its defaults'}: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}") from None
    return new


def _fixed_steps(steps: int, asked: list):
    """A scheduler's ``set_timesteps`` that sets the recipe's ``steps`` whatever count is asked; the
    first other count asked is noted in ``asked`` and warned of, once."""
    def set_timesteps(self, num_inference_steps=None, *args, **kwargs):
        if kwargs.get("timesteps") is not None or kwargs.get("sigmas") is not None:
            raise DeployError(f"this pipeline runs a recipe of {steps} steps: custom timesteps or sigmas are not taken "
                              "while it is accelerated")
        kwargs.pop("timesteps", None)
        kwargs.pop("sigmas", None)
        if num_inference_steps is not None and num_inference_steps != steps and not asked:
            asked.append(num_inference_steps)
            warnings.warn(f"unetscope.accelerate: the recipe runs {steps} steps; num_inference_steps={num_inference_steps} "
                          "is not taken", stacklevel=2)
        return type(self).set_timesteps(self, steps, *args, **kwargs)

    return set_timesteps


def _unet_and_scheduler(target):
    from diffusers import UNet2DConditionModel, UNet2DModel

    unet = getattr(target, "unet", target)
    unet = getattr(unet, "_orig_mod", unet)  # torch.compile's wrapper calls the module it holds: hook that
    if not isinstance(unet, (UNet2DModel, UNet2DConditionModel)):
        what = f"a pipeline whose .unet is a {type(unet).__name__}" if unet is not target else f"a {type(target).__name__}"
        raise DeployError(f"accelerate takes a diffusers pipeline with a UNet2DModel/UNet2DConditionModel, or one of "
                          f"those U-Nets; got {what}")
    return unet, getattr(target, "scheduler", None)


try:  # diffusers' hook registry (0.33+): the hook composes with diffusers' own and reset_stateful_hooks
    from diffusers.hooks.hooks import BaseState, HookRegistry, ModelHook, StateManager
except ImportError:  # an older diffusers: the handle replaces the U-Net's forward itself
    BaseState = ModelHook = object
    HookRegistry = StateManager = None


class _Branch(BaseState):
    """Nothing but a name: a pipeline's ``cache_context("cond"|"uncond")`` tells the hook which branch calls."""

    def reset(self, *args, **kwargs) -> None:
        pass


@dataclass
class _Generation:
    """The hook's state for one generation (reset when a new one begins)."""

    key: tuple | None = None  # the pipeline scheduler's timesteps (a new set_timesteps: a new generation)
    clock: StepClock | None = None
    last_call: int | None = None  # the scheduler's call index of the call before
    branch: int = 0  # this call's place among the calls at the same index (guidance's branches called apart)
    last_timestep: float | None = None  # without a scheduler: the timestep of the call before
    distinct: int = 0  # distinct timesteps seen (the bare-U-Net count)
    slot: Any = 0  # whose cache this call keeps: its branch
    caches: dict = field(default_factory=dict)  # slot -> {site: tensor}


@dataclass
class Stats:
    """What the hook did since it was attached (or since ``reset``)."""

    calls: int = 0
    generations: int = 0
    units_run: int = 0  # encoder, middle and decoder units computed
    units_full: int = 0  # what the same calls cost unhooked
    cut_calls: int = 0  # calls that ran under an intervention

    @property
    def compute_fraction(self) -> float:
        return self.units_run / self.units_full if self.units_full else 1.0


class ScheduleHook(ModelHook):
    """The hook on one U-Net: maps each call to its step (the step clock of ``unetscope.sampling``, as
    unetscope's own sampler does) and runs that step's action."""

    _is_stateful = True

    def __init__(self, unet, units, plan: Plan, plan_steps: int | None, steps: int | None, scheduler=None, pipe=None,
                 paired: bool | None = None):
        if ModelHook is not object:
            super().__init__()
            self.branches = StateManager(_Branch)  # diffusers sets a pipeline's cache context here
        self.unet, self.plan, self.plan_steps, self.steps, self.scheduler = unet, plan, plan_steps, steps, scheduler
        self.units = units
        self.runner = UNetRunner(self.units)
        self._clocks: dict[tuple, StepClock] = {}  # a scheduler's timesteps -> its clock (once per setting)
        self.K = self.units.num_blocks
        self.state = _Generation()
        self.stats = Stats()
        self._resolved: tuple[int, dict, set] | None = None  # (S, actions, the sites a later step reads)
        self.notes: list[str] = []
        self.device = next(unet.parameters()).device
        self.pipe, self.paired = pipe, paired  # AdaptiveCache: do a sample's [uncond; cond] rows decide together?
        # torch.compile(unet) traces up to here and calls the hook as Python: its state (steps, caches)
        # would otherwise be guarded on, and recompiled for, at every step
        self.new_forward = torch._dynamo.disable(self._registered_forward)

    def _registered_forward(self, module, sample, timestep, *args, **kwargs):
        return self.call(self.fn_ref.original_forward, sample, timestep, *args, **kwargs)

    def reset_state(self, module=None):
        """A new generation (diffusers' ``reset_stateful_hooks`` calls this too)."""
        self.state = _Generation()
        return module

    # -- the generation's steps ---------------------------------------------------------------
    def _generation_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        n = getattr(self.scheduler, "num_inference_steps", None)
        if isinstance(n, int) and n > 0:
            return n
        raise DeployError("accelerate cannot tell the generation's number of steps: give steps=S (a bare U-Net, or a "
                          "scheduler whose set_timesteps has not run)")

    def _resolve(self) -> tuple[int, dict, set]:
        S = self._generation_steps()
        if self._resolved is None or self._resolved[0] != S:
            plan = self.plan
            if self.plan_steps is not None and self.plan_steps != S:
                plan = rescale_plan(plan, self.plan_steps, S)
                note = (f"unetscope.accelerate: the schedule was made for S = {self.plan_steps} steps; rescaled to this "
                        f"generation's S = {S}: {plan!r}")
                self.notes.append(note)
                warnings.warn(note, stacklevel=4)
            try:
                plan = plan.check(S, self.K)  # an AdaptiveCache without a range gets its own here
            except PlanError as e:
                raise DeployError(f"the schedule does not fit this generation (S = {S} steps, K = {self.K}): {e}") from None
            self._resolved = (S, plan.actions(), plan.cache_sites(self.K))
        return self._resolved

    def _context(self):
        """The cache context a pipeline set around this call (diffusers' ``cache_context``), else None."""
        return getattr(getattr(self, "branches", None), "_context", None)

    def _step_of(self, timestep: float, S: int) -> int:
        """The schedule's step t of this call (S first), updating the generation's state: the scheduler's
        call index through its step clock, else (a bare U-Net) the count of distinct timesteps."""
        sched = self.scheduler
        ts = getattr(sched, "timesteps", None) if sched is not None else None
        k = call_index(sched, timestep) if ts is not None and len(ts) else None
        ctx = self._context()
        if k is None:
            return self._step_of_timestep(timestep, ctx)
        st = self.state
        key = (id(ts), len(ts))
        if st.key != key or (st.last_call is not None and k < st.last_call):  # set_timesteps ran again, or a new loop
            self.reset_state()
            st = self.state
            st.key, st.clock = key, self._clock(sched, ts)
            self.stats.generations += 1
        st.branch = st.branch + 1 if k == st.last_call else 0
        st.last_call = k
        st.slot = ctx.name if ctx is not None else st.branch
        try:
            return st.clock.step(k)
        except ClockError as e:
            raise DeployError(f"{e}: is the scheduler set (set_timesteps) for this generation?") from None

    def _clock(self, sched, ts) -> StepClock:
        key = (type(sched).__name__, tuple(torch.as_tensor(ts).flatten().tolist()))
        if key not in self._clocks:
            try:
                self._clocks = {key: StepClock.of(sched)}  # one setting at a time
            except ClockError as e:
                raise DeployError(str(e)) from None
        return self._clocks[key]

    def _step_of_timestep(self, timestep: float, ctx) -> int:
        """A bare U-Net: step t is the generation's (S - t + 1)-th distinct timestep; a generation begins
        when the timestep goes up; a call at the timestep of the call before is the same step."""
        st = self.state
        if st.last_timestep is not None and timestep > st.last_timestep:
            self.reset_state()
            st = self.state
        if st.last_timestep is None:
            self.stats.generations += 1
        if st.last_timestep is not None and timestep == st.last_timestep:
            st.branch += 1
        else:
            st.branch = 0
            st.distinct += 1
        st.last_timestep = timestep
        st.slot = ctx.name if ctx is not None else st.branch
        return self._generation_steps() - st.distinct + 1

    # -- the call -----------------------------------------------------------------------------
    def call(self, original, sample, timestep, *args, **kwargs):
        """One call of the U-Net: its step's action, or the U-Net's own forward where there is nothing to do."""
        S, actions, read_later = self._resolve()
        t_value = float(torch.as_tensor(timestep).flatten()[0]) if torch.is_tensor(timestep) or not isinstance(
            timestep, (int, float)) else float(timestep)
        t = self._step_of(t_value, S)
        if not 1 <= t <= S:
            raise DeployError(f"this call is step {t} of a generation of S = {S} steps (more distinct timesteps than S): "
                              "give steps= the generation's number of steps, or scheduler= the loop's scheduler")
        action = actions.get(t, NO_ACTION).unet
        capture = [s for s in read_later if s in action.computes(self.K) or action == NO_ACTION]
        self.stats.calls += 1
        self.stats.units_full += 2 * self.K + 1
        if action == NO_ACTION and not capture and self.runner.compiled is None:
            self.stats.units_run += 2 * self.K + 1
            return original(sample, timestep, *args, **kwargs)
        return self._run(action, capture, sample, timestep, args, kwargs)

    def _run(self, action: StepAction, capture, sample, timestep, args, kwargs):
        from diffusers import UNet2DConditionModel

        conditional = isinstance(self.unet, UNet2DConditionModel)
        names = ("encoder_hidden_states", "class_labels", "timestep_cond", "attention_mask", "cross_attention_kwargs",
                 "added_cond_kwargs", "down_block_additional_residuals", "mid_block_additional_residual",
                 "down_intrablock_additional_residuals", "encoder_attention_mask", "return_dict") if conditional \
            else ("class_labels", "return_dict")
        if len(args) > len(names):
            raise DeployError(f"{type(self.unet).__name__} takes at most {len(names) + 2} positional arguments")
        kw = dict(zip(names, args))
        for k, v in kwargs.items():
            if k in kw:
                raise DeployError(f"{type(self.unet).__name__} got {k} twice")
            kw[k] = v
        unknown = sorted(set(kw) - set(names))
        if unknown:
            raise DeployError(f"{type(self.unet).__name__} takes no argument {unknown[0]!r}")
        return_dict = kw.pop("return_dict", True)
        for k in ("down_block_additional_residuals", "mid_block_additional_residual", "down_intrablock_additional_residuals"):
            if kw.pop(k, None) is not None:
                raise DeployError(f"{k} (ControlNet / T2I-Adapter residuals) is not supported on the steps a schedule "
                                  "intervenes on; use a schedule without them, or no ControlNet")
        xattn = dict(kw.pop("cross_attention_kwargs", None) or {})
        lora_scale = xattn.pop("scale", None)
        if xattn:
            raise DeployError(f"cross_attention_kwargs {sorted(xattn)} are not supported on intervened steps (only 'scale')")
        cond = {k: v for k, v in kw.items() if v is not None}
        n = sample.shape[0]
        tau = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], dtype=torch.long if isinstance(
            timestep, int) else torch.float32, device=sample.device)
        tau = tau.to(sample.device).reshape(-1)
        tau = tau.expand(n) if tau.numel() == 1 else tau
        cache = self._cache_for(n)
        a = action
        if any(s not in cache for s in action.needs(self.K)):
            a, capture = NO_ACTION, list(self._resolved[2])  # nothing cached for this call's rows yet: compute it all
            self.notes.append(f"a call at step with {action.describe()} found no cache for its rows and ran in full")
        scaled = lora_scale is not None and lora_scale != 1.0
        if scaled:
            from diffusers.utils import scale_lora_layers

            scale_lora_layers(self.unet, lora_scale)
        try:
            fill = a.take(cache, self.K, 0) if a.needs(self.K) else None
            if a.decides and self._pairs(n):
                out = self._paired_run(sample, tau, cond, a, fill, capture)
            else:
                out = self.runner(sample, tau, cond, a, fill=fill, capture=capture)
        finally:
            if scaled:
                from diffusers.utils import unscale_lora_layers

                unscale_lora_layers(self.unet, lora_scale)
        self.state.caches.setdefault(self.state.slot, {}).update(out.captured)
        self.stats.units_run += out.units_run
        self.stats.cut_calls += a != NO_ACTION
        res = out.out.to(sample.dtype)
        if not return_dict:
            return (res,)
        if conditional:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=res)
        from diffusers.models.unets.unet_2d import UNet2DOutput

        return UNet2DOutput(sample=res)

    def _pairs(self, n: int) -> bool:
        """Whether this call's rows are classifier-free guidance's two halves ([uncond; cond], as
        diffusers' pipelines batch them): ``paired``, else the pipeline's ``do_classifier_free_guidance``."""
        paired = self.paired
        if paired is None:
            paired = bool(getattr(self.pipe, "do_classifier_free_guidance", False)) if self.pipe is not None else False
        return paired and n % 2 == 0

    def _paired_run(self, sample, tau, cond, a, fill, capture):
        """An AdaptiveCache call on [uncond; cond] rows: run with each sample's two rows side by side
        (so that they decide together), and hand the output and the caches back in the pipeline's order."""
        n = sample.shape[0]
        perm = torch.arange(n, device=sample.device).view(2, n // 2).t().reshape(-1)  # u0, c0, u1, c1, ...
        inv = torch.argsort(perm)

        def rows(v, p):
            return v[p] if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v

        out = self.runner(sample[perm], tau[perm], {k: rows(v, perm) for k, v in cond.items()}, a,
                          fill=None if fill is None else {k: v[perm] for k, v in fill.items()}, capture=capture, group=2)
        out.out = out.out[inv]
        out.captured = {k: v[inv] for k, v in out.captured.items()}
        if out.deep is not None:
            out.deep = out.deep[inv]
        return out

    def _cache_for(self, n: int) -> dict:
        """This call's cache: its own slot's, else the latest slot's whose rows match (Heun's first step
        has one call; its second calls read the first calls' cache until they computed their own)."""
        own = self.state.caches.get(self.state.slot)
        if own and all(v.shape[0] == n for v in own.values()):
            return own
        for slot in sorted(self.state.caches, reverse=True):
            c = self.state.caches[slot]
            if c and all(v.shape[0] == n for v in c.values()):
                return c
        return {}


class Accelerated:
    """The handle ``accelerate`` returns: a context manager; ``remove()`` restores the U-Net (and a
    pipeline's scheduler, where a recipe set its own), ``reset()`` starts a new generation, ``stats``
    counts what the hook ran; ``recipe`` is the recipe it runs (None: a plain schedule).

    The hook is registered in diffusers' ``HookRegistry`` under ``"unetscope_schedule"`` (so it composes
    with diffusers' own hooks, and ``reset_stateful_hooks`` starts a new generation); with an older
    diffusers it replaces the U-Net's ``forward`` itself."""

    def __init__(self, unet, hook: ScheduleHook, recipe: Recipe | None = None, pipe=None, scheduler=None):
        self.unet, self.hook, self.recipe = unet, hook, recipe
        self._pipe, self._own_scheduler = (pipe, pipe.scheduler) if scheduler is not None else (None, None)
        self._had_forward = "forward" in unet.__dict__
        self._old_forward = unet.__dict__.get("forward")
        self._had_registry = hasattr(unet, "_diffusers_hook")
        if HookRegistry is not None:
            HookRegistry.check_if_exists_or_initialize(unet).register_hook(hook, HOOK_NAME)
        else:
            original = unet.forward

            def forward(sample, timestep, *args, **kwargs):
                return hook.call(original, sample, timestep, *args, **kwargs)

            forward = torch._dynamo.disable(forward)  # the hook runs as Python (see ScheduleHook)
            forward.__wrapped__ = original
            unet.forward = forward
        unet._unetscope_hook = self
        if self._pipe is not None:
            self._pipe.scheduler = scheduler  # the recipe's, until remove()
        self.active = True

    @property
    def stats(self) -> Stats:
        return self.hook.stats

    @property
    def notes(self) -> list[str]:
        return self.hook.notes

    def compile_stats(self) -> dict | None:
        """Graphs compiled, in all and per unit, with ``compile=True`` (None: not compiled)."""
        return self.hook.runner.compile_stats()

    def reset(self) -> None:
        """Forget the current generation (its step count and caches); the next call begins a new one."""
        self.hook.reset_state()

    def remove(self) -> None:
        """Restore the U-Net's forward as it was; idempotent."""
        if not self.active:
            return
        registry = getattr(self.unet, "_diffusers_hook", None) if HookRegistry is not None else None
        if registry is not None:
            registry.remove_hook(HOOK_NAME, recurse=False)
            if not registry.hooks:  # the registry leaves forward in the instance: take it back as it was
                if self._had_forward:
                    self.unet.forward = self._old_forward
                else:
                    self.unet.__dict__.pop("forward", None)
                if not self._had_registry:
                    del self.unet._diffusers_hook
        elif self._had_forward:
            self.unet.forward = self._old_forward
        else:
            del self.unet.forward
        if getattr(self.unet, "_unetscope_hook", None) is self:
            del self.unet._unetscope_hook
        if self._pipe is not None:
            self._pipe.scheduler = self._own_scheduler  # the pipeline's own scheduler object, as it was
        self.active = False

    def __enter__(self) -> "Accelerated":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def accelerate(target, schedule, *, steps: int | None = None, scheduler=None, compile: bool | str = False,
               paired: bool | None = None) -> Accelerated:
    """Run ``schedule`` inside a diffusers pipeline (its ``.unet``) or on a stock diffusers U-Net.

    ``schedule``: a Plan, a list of interventions, a schedule file (``unetscope shortcut search``
    writes one; one found at another S is rescaled with a one-line note), or a recipe (a ``Recipe`` or
    a file that holds one: a sampler and a plan on it). With a recipe, a pipeline runs on the recipe's
    scheduler (built from its own scheduler's config; its own scheduler object is back on ``remove()``)
    at the recipe's steps whatever ``num_inference_steps`` it is called with (another count is warned
    of, once); a bare U-Net's loop takes the recipe's steps, and ``scheduler=`` must be of the recipe's
    class. ``steps=`` other than the recipe's is refused. It takes U-Net
    interventions only (``DropBlocks``, ``ZeroSkips``, ``ReuseEncoder``, ``AdaptiveCache``): the
    pipeline's own scheduler walks the steps, so ``SkipSteps`` and ``StopEarly`` are refused (take
    fewer steps). ``paired``: whether a call's rows are classifier-free guidance's [uncond; cond]
    halves, whose two rows of a sample decide together under ``AdaptiveCache`` (None: a pipeline's
    ``do_classifier_free_guidance`` at call time; a bare U-Net: no, each row decides alone).
    ``steps``: S, the generation's number of steps (default: the pipeline scheduler's).
    ``scheduler``: the scheduler of a hand-written loop (a pipeline's is its own): each call's step is
    then read off the scheduler's step clock, as unetscope's sampler reads it (a Heun or KDPM2 step's
    two calls, PNDM's warm-up, img2img's partial walk); without one a bare U-Net's step t is the
    generation's (S - t + 1)-th distinct timestep.
    ``compile``: True (inductor, or ``$UNETSCOPE_COMPILE_BACKEND``) or a ``torch.compile`` backend's
    name: every call runs through the runner's unit functions, each compiled once
    (``handle.compile_stats()`` counts)."""
    if compile is not False and compile is not True and not isinstance(compile, str):
        raise DeployError(f"compile must be True, False or a torch.compile backend's name, got {compile!r}")
    unet, own = _unet_and_scheduler(target)
    if scheduler is not None and own is not None and scheduler is not own:
        raise DeployError("scheduler= is for a bare U-Net's loop; a pipeline's scheduler is its own")
    if scheduler is not None and not (hasattr(scheduler, "step") and hasattr(scheduler, "set_timesteps")):
        raise DeployError(f"scheduler must be a diffusers scheduler (with set_timesteps and step), got "
                          f"{type(scheduler).__name__}")
    scheduler = own if scheduler is None else scheduler
    if getattr(unet, "_unetscope_hook", None) is not None:
        raise DeployError("this U-Net already runs a schedule: remove() that handle first")
    if steps is not None:
        from .checks import as_int

        if as_int(steps) is None or as_int(steps) < 1:
            raise DeployError(f"steps must be an integer >= 1, got {steps!r}")
        steps = as_int(steps)
    plan, plan_steps, recipe = _plan_of(schedule)
    swap = None  # a pipeline's scheduler for the recipe
    if recipe is not None:
        if steps is not None and steps != recipe.steps:
            raise DeployError(f"steps={steps} disagrees with the recipe ({recipe.describe()}): leave steps out, the "
                              "recipe sets them")
        steps = recipe.steps
        if own is not None:  # a pipeline: the recipe's scheduler, from its own one's config, at the recipe's steps
            swap = _recipe_scheduler(recipe, own)
            swap.set_timesteps = types.MethodType(_fixed_steps(recipe.steps, []), swap)
            scheduler = swap
        elif scheduler is not None:  # a bare U-Net's loop: its scheduler must be the recipe's
            import diffusers

            respaced = {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler"}.get(recipe.scheduler)
            cls = getattr(diffusers, respaced) if respaced else _recipe_class(recipe)[0]
            if not isinstance(scheduler, cls):
                raise DeployError(f"scheduler= is a {type(scheduler).__name__}; the recipe runs on {recipe.scheduler} "
                                  f"({cls.__name__}): give a {cls.__name__} set to {recipe.steps} steps")
    walk = [it for it in plan if isinstance(it, (SkipSteps, StopEarly))]
    if walk:
        raise DeployError(f"{walk[0]!r} changes the walk over the steps, which the pipeline's scheduler owns: take fewer "
                          "steps instead (accelerate takes DropBlocks, ZeroSkips, ReuseEncoder and AdaptiveCache)")
    if paired is not None and not isinstance(paired, bool):
        raise DeployError(f"paired must be True, False or None (from the pipeline), got {paired!r}")
    from .adapters.base import AdapterError
    from .adapters.diffusers_unet import DiffusersUNetUnits

    try:
        units = DiffusersUNetUnits(unet)  # an unsupported block: a DeployError, before anything is hooked
    except AdapterError as e:
        raise DeployError(str(e)) from None
    if steps is not None:
        try:
            (rescale_plan(plan, plan_steps, steps) if plan_steps else plan).check(steps, units.num_blocks)
        except PlanError as e:
            raise DeployError(f"the schedule does not fit S = {steps} steps: {e}") from None
    hook = ScheduleHook(unet, units, plan, plan_steps, steps, scheduler if scheduler is not unet else None,
                        pipe=target if getattr(target, "unet", None) is not None else None, paired=paired)
    if compile:
        from .compiling import CompileError

        try:
            hook.runner.compile(None if compile is True else compile, hook.device)
        except CompileError as e:
            raise DeployError(str(e)) from None
    return Accelerated(unet, hook, recipe, pipe=target if swap is not None else None, scheduler=swap)
