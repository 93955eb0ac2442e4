"""Schedules as data: the paper's preset and the uniform (DeepCache- and Faster-Diffusion-style)
schedules, and the shortcut's names for reading and writing schedule files.

A shortcut schedule is a ``Plan`` (cuts = ``DropBlocks`` with their nb, fill and step range; the
relax periods are the gaps between cuts; an optional ``StopEarly``), saved as JSON or YAML
(``unetscope.plan_file``, which keeps the file's record as well).
"""

from __future__ import annotations

from pathlib import Path

from ..checks import check_number
from ..errors import UnetscopeError
from ..plan import DropBlocks, Plan, ReuseEncoder, StopEarly
from ..plan_file import ScheduleFileError, read_schedule, write_schedule

__all__ = ["ShortcutError", "load_schedule", "save_schedule", "paper_preset", "PRESETS",
           "uniform_cache_cuts", "uniform_reuse_cuts", "change_schedule"]


class ShortcutError(UnetscopeError, ValueError):
    """A schedule file or search setting that cannot be used."""


def load_schedule(path) -> Plan:
    """A schedule from a JSON or YAML file: ``{"interventions": [...]}`` or a bare list
    (``plan_file.read_schedule`` keeps the file's record too)."""
    try:
        return read_schedule(path).plan
    except ScheduleFileError as e:
        raise ShortcutError(str(e)) from None


def save_schedule(plan: Plan, path, meta: dict | None = None) -> Path:
    """``plan`` and its record ``meta`` to a JSON or YAML file (``plan_file.write_schedule``)."""
    try:
        return write_schedule(path, plan, meta)
    except ScheduleFileError as e:
        raise ShortcutError(str(e)) from None


def paper_preset(S: int, K: int, fill: str = "zeros") -> Plan:
    """The schedule of the paper's Fig. 11 (GLIDE: K = 16, S = 100), scaled to K and S.

    GLIDE: nb=6 for 5 steps from t=65; nb=8 for 2 steps (60, 59); relax 58..48; nb=8 for 7 steps
    (47..41); relax 40..32; nb=8 for 7 steps (31..25); stop early at t=18 (the last 17 steps skipped).
    Block counts scale by K/16 and step numbers by S/100 (rounded, at least 1)."""
    if K < 2 or S < 2:
        raise ShortcutError(f"the paper's schedule cuts part of the U-Net over several steps: it needs K >= 2 and S >= 2, "
                            f"got K = {K}, S = {S}")

    def b(v):
        return max(1, min(K, round(v * K / 16)))

    def t(v):
        return max(1, round(v * S / 100))

    cuts = [(6, 65, 5), (8, 60, 2), (8, 47, 7), (8, 31, 7)]
    items, floor = [], S + 1
    for nb, start, n in cuts:
        st = min(t(start), floor - 1)
        n_s = max(1, min(round(n * S / 100), st))
        if st - n_s + 1 < 1 or st < 1:
            continue
        items.append(DropBlocks(b(nb), st, n_s, fill))
        floor = st - n_s + 1
    stop = t(18)
    if stop < floor:
        items.append(StopEarly(stop))
    return Plan(tuple(items))


PRESETS = {"paper": paper_preset, "paper-cache": lambda S, K: paper_preset(S, K, fill="cache")}


def uniform_cache_cuts(S: int, every: int, nb: int) -> tuple:
    """DeepCache-style: a full evaluation every ``every`` steps (S, S-every, ..), the bottom nb
    blocks reused from it in between."""
    return tuple(DropBlocks(nb, t - 1, min(every - 1, t - 1), "cache") for t in range(S, 1, -every) if every > 1)


def uniform_reuse_cuts(S: int, every: int) -> tuple:
    """Faster-Diffusion-style: a full evaluation every ``every`` steps, the encoder's outputs
    reused from it in between (``ReuseEncoder``)."""
    return tuple(ReuseEncoder(t - 1, min(every - 1, t - 1)) for t in range(S, 1, -every) if every > 1)


def change_schedule(changes: dict[int, float], S: int, nb: int, threshold: float) -> Plan:
    """Block Caching's rule as a static schedule: the deep part (the bottom ``nb`` blocks) is
    computed again at the first step where its output's relative change, accumulated since the last
    step that computed it, exceeds ``threshold``; at the other steps ``D[nb-1]``'s output is read
    from the cache. ``changes[t]``: the mean relative L1 change of ``D[nb-1]``'s output at step t
    from step t + 1 (the ``feature-change`` statistics, t = S-1..1). Step S always computes."""
    threshold = check_number(threshold, ShortcutError, "the change preset's threshold", 0)
    missing = [t for t in range(S - 1, 0, -1) if t not in changes]
    if missing:
        raise ShortcutError(f"the change preset needs the change at every step below S; step {missing[0]} is missing")
    cached, acc = [], 0.0
    for t in range(S - 1, 0, -1):
        acc += changes[t]
        if acc > threshold:
            acc = 0.0  # computed here
        else:
            cached.append(t)
    cuts, run = [], []
    for t in cached + [None]:  # runs of consecutive cached steps -> one DropBlocks each
        if run and (t is None or t != run[-1] - 1):
            cuts.append(DropBlocks(nb, run[0], len(run), "cache"))
            run = []
        if t is not None:
            run.append(t)
    return Plan(tuple(cuts))
