"""The timing protocol of every saving unetscope prints: warm up each side, run them interleaved
(``A B A B ...``, so drifts in machine load hit both alike), report the median and the spread of
each, and warn when the spread is large or when the time saving disagrees with the compute saving
(the usual causes: a busy machine, or torch threads oversubscribed by two processes on few cores).

CUDA and MPS run kernels asynchronously: a clock read right after a call times the launches, not the
work. Every timed run waits for the device (``synchronize``, the one place that knows how) before
the clock starts and before it stops; the CPU needs no wait."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Timing", "interleave", "timed", "synchronize", "timing_warnings", "SPREAD_WARN", "GAP_WARN", "PREDICT_OK"]

SPREAD_WARN = 0.10  # (max - min) / median above this: the machine was not quiet
GAP_WARN = 0.10  # |time saving - compute saving| above this: the time does not follow the work
PREDICT_OK = 0.05  # |time saving - predicted from single evaluations| within this: the gap is the model's own


@dataclass
class Timing:
    """Seconds of the timed runs of one side."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def low(self) -> float:
        return min(self.times)

    @property
    def high(self) -> float:
        return max(self.times)

    @property
    def spread(self) -> float:
        """(max - min) / median: 0 for identical runs."""
        return (self.high - self.low) / self.median if self.median > 0 else 0.0

    def to_dict(self) -> dict:
        return dict(median=self.median, min=self.low, max=self.high, spread=self.spread, runs=list(self.times))


def synchronize(device=None) -> None:
    """Wait until ``device`` has finished the work queued on it: ``torch.cuda.synchronize(device)``
    on CUDA, ``torch.mps.synchronize()`` on MPS; nothing on the CPU (or for None)."""
    if device is None:
        return
    import torch

    d = torch.device(device)
    if d.type == "cuda":
        torch.cuda.synchronize(d)
    elif d.type == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], Any], device=None, clock: Callable[[], float] = time.perf_counter) -> tuple[float, Any]:
    """``(seconds, result)`` of one call of ``fn``, the device waited for before and after."""
    synchronize(device)
    t0 = clock()
    r = fn()
    synchronize(device)
    return clock() - t0, r


def interleave(fns: Mapping[str, Callable[[], Any]], repeats: int = 3, warmup: int = 1,
               clock: Callable[[], float] = time.perf_counter, device=None) -> tuple[dict[str, Timing], dict[str, Any]]:
    """Run each function ``warmup`` times (untimed), then ``repeats`` rounds of all of them in turn,
    timing each run (``timed``: the ``device`` waited for around it). Returns the timings and each
    function's first result (from the warm-up, or the first timed run when there is none)."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    first: dict[str, Any] = {}
    for _ in range(warmup):
        for k, f in fns.items():
            r = f()
            synchronize(device)  # a warm-up's queued work is not the first timed run's
            first.setdefault(k, r)
    timings = {k: Timing() for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            seconds, r = timed(f, device, clock)
            timings[k].times.append(seconds)
            first.setdefault(k, r)
    return timings, first


def timing_warnings(base: Timing, other: Timing, compute_saving: float | None = None,
                    predicted_saving: float | None = None) -> list[str]:
    """One-line warnings for a measured saving that should not be trusted as it stands.

    ``predicted_saving``: the time saving the seconds of single evaluations predict (``unetscope.
    shortcut.action_seconds``). When the measured saving is within ``PREDICT_OK`` of it, a gap to the
    compute saving is the model's own (FLOPs are not time on this device) and is said as such;
    otherwise the gap is blamed on the machine."""
    out = []
    spread = max(base.spread, other.spread)
    if spread > SPREAD_WARN:
        out.append(f"timed runs spread by {spread:.0%} (over {SPREAD_WARN:.0%}): the machine is busy or threads "
                   "oversubscribed; rerun with --threads N / on a quiet machine")
    if compute_saving is not None and base.median > 0:
        saving = 1 - other.median / base.median
        gap = saving - compute_saving
        if abs(gap) > GAP_WARN:
            if predicted_saving is not None and abs(saving - predicted_saving) <= PREDICT_OK:
                out.append(f"the time saving and the compute saving differ by {abs(gap):.2f} (over {GAP_WARN:.2f}), as "
                           f"the times of single evaluations predict ({predicted_saving:.1%}): the skipped blocks run "
                           "at another speed per FLOP than the rest on this device; the time saving stands")
            else:
                out.append(f"the time saving and the compute saving differ by {abs(gap):.2f} (over {GAP_WARN:.2f}): "
                           "the machine is busy or threads oversubscribed; rerun with --threads N / on a quiet machine")
    return out
