"""Scoring plans: per-sample SSIM against the baseline on chunks of seeds, by the sweep engine
(shared prefixes), here or on an executor's workers.

Against a **reference** (``reference=``: the images another sampler made from the same seeds, as
the frontier search scores every candidate against DDIM-100), the sampler's own unintervened run is
scored too: an empty plan is the solver alone, taken from the baseline the sweep engine runs anyway."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import check_int
from ..metrics import ssim
from ..models import Cond
from ..plan import Plan
from ..sampling import Sampler, cond_slice
from .schedules import ShortcutError

__all__ = ["ScoreJob", "Scores", "score_chunk", "score_plans", "heldout_ssim", "seed_chunks"]


@dataclass(frozen=True)
class ScoreJob:
    """Plans to score on one chunk of seeds: all a worker needs (no model, no store)."""

    seeds: list[int]
    cond: Cond  # the chunk's conditions, as the sampler takes them
    plans: list[Plan]
    reference: torch.Tensor | None = None  # the chunk's reference images (decoded); None: the sampler's own baseline


@dataclass(frozen=True)
class Scores:
    """A chunk's per-sample SSIM of each plan against the baseline, and the work it took."""

    ssim: np.ndarray  # (plans, seeds)
    evaluations: int  # U-Net evaluations spent (each on the chunk's samples)
    seconds: float
    worker: str  # host/pid of the process that computed it


def score_chunk(sampler: Sampler, job: ScoreJob, on_evaluation=None) -> Scores:
    """Per-sample SSIM of ``job.plans`` against the baseline on ``job.seeds``, by the sweep engine
    (shared prefixes); pure: the same job gives the same scores in any process (a Ray worker included)."""
    from ..sweep import SweepEngine, worker_id

    t0 = time.perf_counter()
    m = sampler.model
    plans = list(job.plans)
    cut = [p for p in plans if p] if job.reference is not None else plans  # an empty plan: the baseline itself
    res = SweepEngine(sampler, on_evaluation=on_evaluation).run_chunk(list(job.seeds), job.cond, cut)
    own = m.decode(res.baseline_x0)
    if job.reference is None:
        ss = np.stack([ssim(m.decode(x0), own).numpy() for x0 in res.finals]) if res.finals else \
            np.zeros((0, len(job.seeds)))
        return Scores(ss, res.evaluations, time.perf_counter() - t0, worker_id())
    ref = job.reference.to(own.device, own.dtype)
    solo = ssim(own, ref).numpy()
    finals = iter(res.finals)
    rows = [ssim(m.decode(next(finals)), ref).numpy() if p else solo for p in plans]
    ss = np.stack(rows) if rows else np.zeros((0, len(job.seeds)))
    return Scores(ss, res.evaluations, time.perf_counter() - t0, worker_id())


def seed_chunks(n: int, executor, chunk_size: int | None) -> list[list[int]]:
    """Seed indices in chunks: ``chunk_size`` each, or (None) one chunk per worker of ``executor``."""
    if chunk_size is None:
        chunk_size = math.ceil(n / max(1, executor.parallelism() if executor is not None else 1))
    return [list(range(i, min(i + chunk_size, n))) for i in range(0, n, chunk_size)]


def score_plans(sampler: Sampler, plans: list[Plan], seeds: list[int], cond: Cond = None, *, executor=None,
                chunk_size: int | None = None, on_evaluation=None, workers: dict | None = None,
                reference: torch.Tensor | None = None) -> tuple[np.ndarray, int]:
    """Per-sample SSIM of each plan against the baseline on ``seeds``, ``(plans, seeds)``, and the
    U-Net evaluations spent. ``reference`` (images, one per seed, decoded): score against these
    instead of the sampler's own baseline; an empty plan is then the sampler's unintervened run. ``executor`` (``unetscope.executor``; None: here): where the chunks of
    seeds (``chunk_size`` each; None: one per worker) are computed; each chunk runs every plan with
    shared prefixes. ``on_evaluation()`` is called once per U-Net evaluation (for a chunk computed on
    a worker, when it returns). ``workers`` (a dict), when given, gains each worker's chunks,
    evaluations, image-evaluations and seconds."""
    from ..executor import tally_work

    seeds = list(seeds)
    if not seeds:
        raise ShortcutError("no seeds to score the plans on")
    chunk_size = check_int(chunk_size, ShortcutError, "chunk_size", 1, none="one chunk per worker")
    plans = [sampler.check_plan(p) for p in plans]  # a bad plan fails here, not on a worker
    if reference is not None and len(reference) != len(seeds):
        raise ShortcutError(f"{len(reference)} reference images for {len(seeds)} seeds: give one per seed")
    idx = seed_chunks(len(seeds), executor, chunk_size)
    jobs = [ScoreJob([seeds[i] for i in ix], cond_slice(cond, ix, len(seeds)), plans,
                     None if reference is None else reference[ix]) for ix in idx]
    out = np.zeros((len(plans), len(seeds)))
    spent = 0
    here = executor is None or getattr(executor, "in_process", False)
    if here:
        results = ((k, score_chunk(sampler, job, on_evaluation)) for k, job in enumerate(jobs))
    else:
        results = executor.map(score_chunk, jobs, sampler)
    for k, r in results:
        out[:, idx[k]] = r.ssim
        spent += r.evaluations
        if workers is not None:
            tally_work(workers, r.worker, r.evaluations, len(idx[k]), r.seconds)
        for _ in range(0 if here or on_evaluation is None else r.evaluations):
            on_evaluation()
    return out, spent


@torch.no_grad()
def heldout_ssim(sampler: Sampler, plan: Plan | list[Plan], seeds: list[int], cond: Cond = None, *,
                 executor=None, chunk_size: int | None = None) -> np.ndarray:
    """Per-sample SSIM against the baseline on ``seeds`` (no timing) of ``plan``, ``(seeds,)``; or of
    each of several plans, ``(plans, seeds)``, with one baseline and shared prefixes. ``executor``
    and ``chunk_size`` as in ``score_plans``."""
    several = isinstance(plan, (list, tuple)) and bool(plan) and all(isinstance(p, Plan) for p in plan)
    ss, _ = score_plans(sampler, list(plan) if several else [plan], seeds, cond, executor=executor, chunk_size=chunk_size)
    return ss if several else ss[0]
