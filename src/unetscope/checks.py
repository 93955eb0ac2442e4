"""Every user-facing validation, once: the command line (after parsing its strings), the API and the
samplers call these (smalldiffusion's "validate once, at the edge").

Each check takes the value and the error class to raise, so that every caller keeps its own typed
error (``SamplerError``, ``SettingsError``, the CLI's ``UsageError``), and returns the value
normalised (a Python int, a float, a list of ints). A refusal is one line: the field, what is
allowed, what was given. ``name`` is the field as its user knows it: ``"steps"`` in Python,
``"--steps"`` on the command line. A flag's value was already made an integer or a number by the
parser, so a flag's message says ``--rounds must be at least 1`` where Python's says ``rounds must
be an integer >= 1``.

Integers are ints, NumPy integers or 0-d integer tensors (research code passes all three), never
bools or floats; numbers are ints, floats, NumPy reals or 0-d real tensors, never bools. This module
is the bottom layer: it imports no other module of the package, and torch only inside the checks
that return a torch object (``check_dtype``, ``check_device``), so ``import unetscope`` stays light.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping

__all__ = ["as_int", "as_number", "check_int", "check_number", "check_bool", "check_seeds", "check_steps", "check_eta",
           "check_variance", "check_guidance", "check_batch_size", "check_dtype", "check_device", "available_devices",
           "check_threads", "check_scheduler_options", "parse_scheduler_option", "check_grid", "check_split",
           "check_shortcut_choice", "MAX_SEED", "METHODS", "VARIANCES", "DTYPES", "SCHEDULER_OWNED"]

MAX_SEED = 2**63 - 1  # seeds key NumPy's SeedSequence and SQLite's INTEGER: 64-bit signed
METHODS = ("ddpm", "ddim")  # unetscope's own samplers; any other name is a diffusers scheduler
VARIANCES = ("fixed_small", "fixed_large", "learned_range")
DTYPES = ("float32", "float16", "bfloat16")
# a diffusers scheduler's options that unetscope sets (from the model's training schedule and the guided call)
SCHEDULER_OWNED = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")


def _is_tensor(value) -> bool:
    return type(value).__name__ == "Tensor" and type(value).__module__.startswith("torch")


def as_int(value) -> int | None:
    """``value`` as a Python int when it is an integer (``5``, ``np.int64(5)``, ``torch.tensor(5)``),
    else None; bools (``True``, ``np.bool_``) and floats are not integers here."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):  # int and NumPy's integer types
        return int(value)
    if _is_tensor(value):
        if value.dim() == 0 and not (value.is_floating_point() or value.is_complex()) and str(value.dtype) != "torch.bool":
            return int(value.item())
    return None


def as_number(value) -> float | None:
    """``value`` as a Python float when it is a real number (an int, a float, ``np.float32(0.5)``,
    ``torch.tensor(0.5)``), else None; bools are not numbers here. NaN and infinities are returned
    (the bounds of a check refuse them)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # bool, np.bool_
        return None
    if isinstance(value, numbers.Real):  # int, float, fractions, NumPy's integers and floats
        try:
            return float(value)
        except OverflowError:  # an int too large for a float: beyond any bound
            return math.inf if value > 0 else -math.inf
    if _is_tensor(value) and value.dim() == 0 and not value.is_complex() and str(value.dtype) != "torch.bool":
        return float(value.item())
    return None


def _flag(name: str) -> bool:
    """Whether ``name`` is a command-line flag (``--steps``) rather than a Python parameter."""
    return name.startswith("--")


def _num(v) -> str:
    return f"{v:,}" if isinstance(v, int) and abs(v) >= 10_000 else str(v)


def check_int(value, error: type[Exception], name: str, low: int | None = None, high: int | None = None, *,
              none: str | None = None, note: str | None = None) -> int | None:
    """``value`` as an int in ``low..high`` (either bound may be left out). ``none``: None is allowed
    and means this (said in the message: ``batch_size must be an integer >= 1 (or None: one batch)``);
    ``note``: why the bounds are what they are."""
    if value is None and none is not None:
        return None
    v = as_int(value)
    if v is not None and (low is None or v >= low) and (high is None or v <= high):
        return v
    if low is not None and high is not None:  # (``a..b`` says integers)
        allowed = f"in {_num(low)}..{_num(high)}"
    elif low is not None:
        allowed = f"at least {_num(low)}" if _flag(name) else f"an integer >= {_num(low)}"
    elif high is not None:
        allowed = f"at most {_num(high)}" if _flag(name) else f"an integer <= {_num(high)}"
    else:
        allowed = "an integer"
    extra = [note] if note else []
    if none is not None and not _flag(name):  # on the command line, None is a flag left out
        extra.append(f"or None: {none}")
    paren = f" ({'; '.join(extra)})" if extra else ""
    raise error(f"{name} must be {allowed}{paren}, got {value!r}")


def check_number(value, error: type[Exception], name: str, low: float | None = None, high: float | None = None, *,
                 open_low: bool = False, open_high: bool = False, none: str | None = None) -> float | None:
    """``value`` as a finite float within ``[low, high]`` (``open_low``/``open_high``: the bound
    itself excluded; either bound may be left out). ``none``: None is allowed and means this."""
    if value is None and none is not None:
        return None
    v = as_number(value)
    ok = (v is not None and math.isfinite(v) and (low is None or (v > low if open_low else v >= low))
          and (high is None or (v < high if open_high else v <= high)))
    if ok:
        return v
    if low is not None and high is not None:
        allowed = f"a number in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    elif low is not None:
        allowed = f"a finite number {'>' if open_low else '>='} {low}"
    elif high is not None:
        allowed = f"a finite number {'<' if open_high else '<='} {high}"
    else:
        allowed = "a finite number"
    paren = f" (or None: {none})" if none is not None and not _flag(name) else ""
    raise error(f"{name} must be {allowed}{paren}, got {value!r}")


def check_bool(value, error: type[Exception], name: str) -> bool:
    """``value`` when it is True or False (a truthy string or number is refused: it is a mistake)."""
    if not isinstance(value, bool):
        raise error(f"{name} must be True or False, got {value!r}")
    return value


# --- the sampler's settings ----------------------------------------------------------------------
def check_seeds(seeds, error: type[Exception], *, name: str = "seeds", whole: bool = False) -> list[int]:
    """Seeds as a list of integers in 0..2^63-1 (a float seed is refused, not truncated). ``whole``:
    the message shows the whole list given (the API's ``setup``), not the first seed that is wrong."""
    try:
        items = list(seeds)
    except TypeError:
        if whole:
            raise error(f"{name} must be a non-empty list of integers in 0..2^63-1, got {seeds!r}") from None
        raise error(f"{name} must be a sequence of integers, got {type(seeds).__name__}") from None
    out = [as_int(s) for s in items]
    bad = next((i for i, v in enumerate(out) if v is None or not 0 <= v <= MAX_SEED), None)
    if whole and (not items or bad is not None):
        shown = repr(items if len(items) <= 20 else [*items[:20], "..."])
        raise error(f"{name} must be a non-empty list of integers in 0..2^63-1, got {shown}")
    if not items:
        raise error("give at least one seed")
    if bad is not None:
        if out[bad] is None:
            raise error(f"{name} must be integers, got {items[bad]!r}")
        raise error(f"{name} must be in 0..2^63-1, got {out[bad]}")
    return out


def check_steps(steps, T: int | None, error: type[Exception], *, name: str = "steps") -> int:
    """Sampling steps S, an integer in 1..T (the model's training timesteps; None: not known yet)."""
    v = as_int(steps)
    if v is None or v < 1 or (T is not None and v > T):
        raise error(f"{name} must be an integer in 1..{'T' if T is None else T} (the model's training timesteps), "
                    f"got {steps!r}")
    return v


def _with(name: str, value) -> str:
    """A setting as its user writes it: ``--sampler ddpm`` on the command line, ``method 'ddpm'`` in Python."""
    return f"{name} {value}" if _flag(name) else f"{name} {value!r}"


def _use(name: str, value: str) -> str:
    return f"{name} {value}" if _flag(name) else f"{name}={value!r}"


def check_eta(eta, method: str, error: type[Exception], *, name: str = "eta", method_name: str = "method") -> float:
    """DDIM's eta: a number in [0, 1], and 0 with any other sampler (it would have no effect)."""
    if method not in METHODS:  # a diffusers scheduler: eta is DDIM's
        v = as_number(eta)
        if v is None or v != 0:
            shown = eta if _flag(name) else repr(eta)
            where = _with(method_name, method) if _flag(name) else f"scheduler {method!r}"
            raise error(f"{name} {shown} has no effect with {where}: eta is DDIM's (use {_use(method_name, 'ddim')})")
        return 0.0
    v = check_number(eta, error, name, 0, 1)
    if v and method != "ddim":
        raise error(f"{name} {eta} has no effect with {_with(method_name, method)}: eta is DDIM's "
                    f"(use {_use(method_name, 'ddim')})")
    return v


def check_variance(variance, method: str, error: type[Exception], *, model_variance: str | None = None,
                   name: str = "variance", method_name: str = "method", strict: bool = False) -> str | None:
    """DDPM's variance: refused with a diffusers scheduler (it takes none); for unetscope's own
    samplers one of ``VARIANCES``, None meaning the model's (``model_variance``), and
    ``learned_range`` only for a model that learned it. ``strict``: refused with DDIM too (where it
    is read past): a command-line flag that has no effect is a mistake."""
    if variance is not None and (method not in METHODS or (strict and method != "ddpm")):
        where = _with(method_name, method) if _flag(name) or method in METHODS else f"scheduler {method!r}"
        raise error(f"{_with(name, variance)} has no effect with {where}: it is DDPM's (use {_use(method_name, 'ddpm')})")
    if method not in METHODS:
        return None
    v = variance or model_variance
    if v is None and model_variance is None:
        return None
    if v not in VARIANCES:
        raise error(f"{name} must be fixed_small, fixed_large or learned_range, got {v!r}")
    if v == "learned_range" and model_variance is not None and model_variance != "learned_range":
        raise error(f"{name} learned_range needs a model that outputs 2C channels (learned variance)")
    return v


def check_guidance(guidance, error: type[Exception], *, model=None, name: str = "guidance") -> float:
    """Classifier-free guidance: a finite number >= 0; other than 1 only for a ``model`` with an
    unconditional branch (a null class or a text encoder)."""
    v = check_number(guidance, error, name, 0)
    if model is not None and v != 1 and not model.has_null_branch:
        why = "is unconditional" if model.conditioning == "none" else "has no unconditional branch (a null class or a text encoder)"
        raise error(f"{name} needs an unconditional branch; {model.name} {why}: use {name} 1")
    return v


def check_batch_size(batch_size, error: type[Exception], *, name: str = "batch_size") -> int | None:
    """Samples per U-Net batch: an integer >= 1, or None (one batch)."""
    return check_int(batch_size, error, name, 1, none="one batch")


def check_dtype(dtype, error: type[Exception], *, name: str = "dtype"):
    """The weights' dtype as a torch.dtype: a name (``DTYPES``) or a torch.dtype; None stays None (the model's own)."""
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return getattr(torch, dtype)
    raise error(f"{name} must be one of {', '.join(DTYPES)} (or a torch.dtype), got {dtype!r}")


def available_devices() -> list[str]:
    """The devices torch can use here: ``cpu``, each ``cuda:N``, and ``mps`` where they exist."""
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(device, error: type[Exception], *, name: str = "device"):
    """``device`` as a torch.device that exists on this machine (None: the CPU); the message names those that do."""
    import torch

    if device is None:
        return torch.device("cpu")
    try:
        d = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise error(f"{name} {device!r} is not a device name; this machine has {', '.join(available_devices())}") from None
    here = available_devices()
    key = "cuda:0" if d.type == "cuda" and d.index is None else "mps" if d.type == "mps" else str(d)
    if d.type == "cpu" or key in here:
        return d
    raise error(f"{name} {str(device)!r} is not available on this machine; it has {', '.join(here)}")


def check_threads(threads, error: type[Exception], *, name: str = "threads", zero: str = "torch's default") -> int:
    """torch CPU threads: 0 (``zero`` says what it means) or a positive count."""
    v = as_int(threads)
    if v is None or v < 0:
        raise error(f"{name} must be 0 ({zero}) or a positive count, got {threads!r}")
    return v


# --- a diffusers scheduler's options -------------------------------------------------------------
def parse_scheduler_option(text, error: type[Exception]) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--scheduler-opt``: VALUE as JSON where it reads as JSON (3, 0.5, true, "x"),
    else as text; NaN and infinities refused."""
    import json

    if not isinstance(text, str) or "=" not in text or not text.split("=", 1)[0].strip():
        raise error(f"a scheduler option is KEY=VALUE (e.g. solver_order=3), got {text!r}")
    key, raw = (s.strip() for s in text.split("=", 1))
    low = raw.lower()
    if low in ("true", "false"):
        return key, low == "true"
    if low.lstrip("+-") in ("nan", "inf", "infinity"):
        raise error(f"scheduler option {key}={raw} is not a finite number")
    try:
        value = json.loads(raw, parse_constant=lambda c: float("nan"))
    except ValueError:
        value = raw
    return key, value


def check_scheduler_options(options, cls, error: type[Exception], *, method: str | None = None,
                            name: str = "scheduler options", method_name: str = "method") -> dict:
    """The user's options of the diffusers scheduler class ``cls``: keys its constructor takes, finite
    values, none that unetscope sets (``SCHEDULER_OWNED``). ``cls`` None: ``method`` is unetscope's
    own sampler, which takes none."""
    if cls is None:
        if options:
            if _flag(name):
                raise error(f"{name} is a diffusers scheduler's; {_with(method_name, method)} is unetscope's own and takes none")
            raise error(f"{name} are a diffusers scheduler's; {method_name} {method!r} is unetscope's own (got {dict(options)})")
        return {}
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise error(f"{name} must be a dict of name -> value, got {type(options).__name__}")
    takes = set(inspect.signature(cls.__init__).parameters) - {"self"}
    out = {}
    for k, v in options.items():
        if k in SCHEDULER_OWNED:
            raise error(f"scheduler option {k!r} is set by unetscope (from the model's training schedule and the "
                        "guided epsilon prediction); leave it out")
        if k not in takes:
            raise error(f"{cls.__name__} takes no option {k!r}; it takes {', '.join(sorted(takes - set(SCHEDULER_OWNED)))}")
        if isinstance(v, float) and not math.isfinite(v):
            raise error(f"scheduler option {k}={v!r} is not a finite number")
        if not isinstance(v, (bool, int, float, str, type(None), list)):
            raise error(f"scheduler option {k} must be a number, true/false, a string or a list, got {type(v).__name__}")
        out[k] = v
    return out


# --- sizes of a sweep and of the shortcut search -------------------------------------------------
def check_grid(error: type[Exception], *, t_step=None, chunk_size=None, images=None, max_batch=None) -> tuple:
    """A sweep's sizes (``t_step``, ``chunk_size``, ``max_batch`` >= 1; ``images`` >= 0), each None when
    left to its default; returned as ints (or None) in that order."""
    def size(v, name, low, note=None):
        return None if v is None else check_int(v, error, name, low, note=note)

    return (size(t_step, "t_step", 1), size(chunk_size, "chunk_size", 1),
            size(images, "images", 0, "samples whose images are kept"), size(max_batch, "max_batch", 1))


def check_split(n: int, calibration, validation, error: type[Exception], *, names: tuple[str, str] = ("calibration", "validation"),
                ) -> tuple[int, int]:
    """The shortcut search's split of ``n`` seeds: ``calibration`` in 1..n-1 to search on, ``validation``
    in 0..n-calibration-1 to check each move (None: at least 16 and as many as the calibration, at most
    half the rest); at least one seed is left, held out."""
    cal_name, val_name = names
    cal = as_int(calibration)
    if cal is None or not 1 <= cal < n:
        raise error(f"{cal_name} must be in 1..{n - 1} (the rest of the samples validate and are held out), got {calibration!r}")
    if validation is None:
        return cal, min(max(cal, 16), (n - cal) // 2)
    val = as_int(validation)
    if val is None or not 0 <= val < n - cal:
        raise error(f"{val_name} must be in 0..{n - cal - 1} ({n} samples, {cal} calibrate, at least one is held out), "
                    f"got {validation!r}")
    return cal, val


def check_shortcut_choice(schedule, preset, presets, error: type[Exception], *, threshold=None, nb=None,
                          flags: bool = False) -> float | None:
    """A shortcut run's schedule: one of a schedule file or a named preset (``presets``); the change
    preset's ``threshold`` (a finite number >= 0, needed) and ``nb`` with that preset only. ``flags``:
    the names are the command line's. Returns the threshold as a float (None without one)."""
    s, p, t = ("--schedule FILE", "--preset", "--threshold") if flags else ("schedule (a file)", "preset", "threshold")
    if (schedule is None) == (preset is None):
        raise error(f"give one of {s} or {p}{' NAME' if flags else ''} ({', '.join(presets)})")
    if preset is not None and preset not in presets:
        raise error(f"{p} must be one of {', '.join(presets)}; got {preset!r}")
    if preset == "change" and threshold is None:
        raise error(f"{_use(p, 'change') if flags else 'the change preset'} needs {t}{' X' if flags else ''} (the deep "
                    "part's accumulated relative change at which it is computed again)")
    if preset != "change" and (threshold is not None or nb is not None):
        nbn = "--nb" if flags else "nb"
        raise error(f"{t} and {nbn} are the change preset's: give them with {_use(p, 'change')}")
    return check_number(threshold, error, t if flags else "the change preset's threshold", 0, none="no change preset")
