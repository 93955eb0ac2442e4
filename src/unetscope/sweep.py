"""Experiment grids that spend no U-Net evaluation twice.

Every plan starts from the baseline trajectory's cached ``x_t`` at its first intervened step, and
plans that agree up to a step share the work up to there: the engine walks all plans down the steps
together, as a tree whose nodes are (history of actions, step). Evaluations with the same U-Net
intervention at a step are stacked into one batch of up to ``max_batch`` samples. Left unset, the
batch is sized for the device (``auto_max_batch``): a CPU runs a convolution fastest on a batch that
fits its caches (for the bundled 32x32 model, about 128 images: 2.4 ms per image against 4.8 ms at
512, ``benchmarks/batch_size.py``); elsewhere a call holds 256 images of 32x32 (or the same pixels).

Bitwise note: a CPU convolution's rounding depends on the batch it runs in. With ``max_batch`` equal
to the chunk size every evaluation holds exactly the samples a plain ``Sampler.sample`` call holds,
and results are bitwise identical to running each plan from ``x_S``; stacking plans (larger
``max_batch``) moves them by float rounding (~1e-6).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from .images import to_uint8
from .models import Cond
from .noise import NoiseBank
from .plan import NO_ACTION, Plan, PlanError
from .sampling import Sampler, StepOutput, cond_slice
from .store import variant_id

__all__ = ["SweepEngine", "ChunkResult", "count_evaluations", "run_grid", "GridConfig", "load_images", "auto_max_batch",
           "ChunkJob", "ChunkOutput", "compute_chunk", "write_chunk", "worker_id"]

# pixels per U-Net call when max_batch is not set (images x height x width, guidance's doubling included):
# on the CPU the batch that fits the caches (benchmarks/batch_size.py), elsewhere a size that keeps a
# Stable Diffusion call (64x64 latents: 64 of them) within the memory of a common GPU
AUTO_PIXELS = {"cpu": 128 * 32 * 32, "default": 256 * 32 * 32}


def auto_max_batch(sampler: Sampler, chunk: int) -> int:
    """Samples per stacked U-Net call for this model and device (at least one chunk)."""
    m = sampler.model
    shape = tuple(m.sample_shape)
    pixels = shape[-1] * shape[-2] if len(shape) >= 2 else 1
    budget = AUTO_PIXELS.get(torch.device(m.device).type, AUTO_PIXELS["default"])
    return max(chunk, budget // (pixels * sampler.denoiser.rows_per_sample))


def count_evaluations(plans: list[Plan], steps: int, calls=None) -> tuple[int, int]:
    """(minimum, naive) U-Net evaluations for the baseline plus ``plans``: the minimum counts each
    distinct (history, step, U-Net action) once; naive runs every plan from ``x_S``. ``calls(t)``: the
    U-Net calls of step t (a Heun step's two; default one)."""
    calls = calls or (lambda t: 1)
    nodes, naive = {}, 0
    for plan in [Plan(), *plans]:
        hist: tuple = ()
        for st in plan.walk(steps):
            nodes[(hist, st.t, st.action.unet)] = calls(st.t)
            hist = hist + ((st.t, st.action),)
            naive += calls(st.t)
    return sum(nodes.values()), naive


@dataclass
class _Group:
    plans: list[int]  # indices into the plan list: plans whose history so far is identical
    x: torch.Tensor  # (n, C, H, W) x_t of the group
    cache: dict = field(default_factory=dict)  # site -> cached output (rows of the group's samples)
    state: Any = None  # the solver's state at x (a scheduler's SolverState; DDPM/DDIM's: the samples' noise)


@dataclass
class ChunkResult:
    baseline_x0: torch.Tensor
    finals: list[torch.Tensor]  # x0 of each plan, in order
    x_t: dict[int, torch.Tensor]  # baseline x_t at the steps asked for
    x_est0: dict[int, torch.Tensor]
    evaluations: int  # U-Net evaluations spent (each on this chunk's samples)
    features: Any = None  # a FeatureTracker of the baseline's unit outputs, when asked for


@dataclass
class _Walk:
    """The state of one chunk's walk down the steps: the plans' actions, where each group of
    plans goes next, and the plans' outputs."""

    actions: list[dict]  # per plan: step -> StepAction
    bank: NoiseBank
    finals: list
    pending: dict = field(default_factory=lambda: defaultdict(list))  # step -> [_Group]

    def advance(self, s: Sampler, out: StepOutput, idx: list[int], cache: dict, state) -> None:
        """Land the plans ``idx``, whose action at ``out.t`` shares ``out``'s U-Net evaluation
        (they may differ in their jump or stop)."""
        a = self.actions[idx[0]].get(out.t, NO_ACTION)
        if a.stop:
            x_next = None
        elif a.jump == out.action.jump:
            x_next = out.x_next
        else:
            land = out.t - 1 - a.jump
            z = self.bank.step(out.t).to(out.x_t.device) if land > 0 else None
            x_next = s.update(out.x_est0, out.eps, out.t, land, z, out.frac)
        land = out.t - 1 - a.jump
        if a.stop or land == 0:
            for i in idx:
                self.finals[i] = out.x_est0 if a.stop else x_next
            return
        self.pending[land].append(_Group(idx, x_next, cache, state))


def _split(out: StepOutput, parts: int) -> list[StepOutput]:
    """A stacked step's output, cut back into its ``parts`` groups of equal size."""
    def cut(v):
        return [None] * parts if v is None else list(v.chunk(parts))

    caps = {k: cut(v) for k, v in out.captured.items()}
    return [StepOutput(t=out.t, land=out.land, action=out.action, x_t=xt, x_est0=x0, eps=e, frac=f, x_next=xn,
                       captured={k: v[i] for k, v in caps.items()}, units_run=out.units_run)
            for i, (xt, x0, e, f, xn) in enumerate(zip(cut(out.x_t), cut(out.x_est0), cut(out.eps), cut(out.frac),
                                                       cut(out.x_next)))]


class SweepEngine:
    """Runs many plans on one chunk of samples, sharing every prefix."""

    def __init__(self, sampler: Sampler, max_batch: int | None = None, on_evaluation=None):
        self.sampler = sampler
        self.max_batch = max_batch
        self.on_evaluation = on_evaluation  # called once per U-Net evaluation (progress bars)

    def _spent(self, k: int = 1) -> None:
        if self.on_evaluation:
            for _ in range(k):
                self.on_evaluation()

    @torch.no_grad()
    def run_chunk(self, seeds: list[int], cond: Cond, plans: list[Plan], keep_x_t=(), keep_x_est0=(),
                  features: bool = False) -> ChunkResult:
        """``plans`` on ``seeds`` from the baseline's shared prefixes; ``features``: the baseline's
        unit outputs streamed into a ``FeatureTracker`` (two steps held at a time)."""
        s, m = self.sampler, self.sampler.model
        K, n = m.num_blocks, len(seeds)
        plans = [s.check_plan(p) for p in plans]
        starts = defaultdict(list)
        for i, p in enumerate(plans):
            if p.first_step() is None:
                raise PlanError("an empty plan is the baseline; it is always run")
            starts[p.first_step()].append(i)
        keep = set().union(*(p.cache_sites(K) for p in plans)) if plans else set()
        step_groups = max(1, (self.max_batch or auto_max_batch(s, n)) // n)  # chunks per stacked U-Net call
        cond_n = m.make_cond(cond, n)  # (n, ...) tensors of the chunk's samples
        walk = _Walk([p.actions() for p in plans], NoiseBank(seeds, m.sample_shape), [None] * len(plans))
        evals = 0

        # 1. the baseline, keeping x_t where plans start and the cached outputs they inherit
        x_t, x_est0, snap = {}, {}, {}
        tracker = None
        if features:
            from .features import FeatureTracker

            tracker = FeatureTracker(K)
        for d in s.sample_progressive(seeds, cond, capture=keep | set(tracker.sites if tracker else ()), states_at=set(starts)):
            if tracker is not None:
                tracker.step(d["t"], d["cache"], n)
            evals += d["calls"]
            self._spent(d["calls"])
            t = d["t"]
            if t in keep_x_t:
                x_t[t] = d["x_in"].float().cpu()  # model space (a sigma scheduler's x_t is scaled)
            if t in keep_x_est0:
                x_est0[t] = d["x_est0"].float().cpu()
            before, snap = snap, {k: d["cache"][k] for k in keep if k in d["cache"]}
            if t in starts:
                parts = defaultdict(list)
                for i in starts[t]:
                    parts[walk.actions[i][t]].append(i)
                own = [i for a, idx in parts.items() if a.changes_unet for i in idx]
                if own:  # these change the U-Net at t: they evaluate it themselves
                    walk.pending[t].append(_Group(own, d["x_t"], dict(before), d["state"]))
                base = StepOutput(t=t, land=d["land"], action=NO_ACTION, x_t=d["x_t"], x_est0=d["x_est0"], eps=d["eps"],
                                  frac=d["frac"], x_next=d["x_next"], captured={}, units_run=d["units_run"])
                for a, idx in parts.items():  # a jump or a stop only: reuse the baseline's evaluation (a
                    if not a.changes_unet:       # jumping solver's state holds only the noise: the same after t)
                        walk.advance(s, base, idx, snap, d["state"])
            baseline_x0 = d["x_next"]

        # 2. all plans down the steps together, as a tree of shared histories; groups whose plans
        # run the U-Net alike at t are stacked into one call of up to step_groups chunks
        for t in range(s.steps, 0, -1):
            requests = defaultdict(list)  # U-Net action -> [(group, [(plans with one action at t)])]
            for g in walk.pending.pop(t, []):
                parts = defaultdict(list)
                for i in g.plans:
                    parts[walk.actions[i].get(t, NO_ACTION)].append(i)
                by_unet = defaultdict(list)
                for a, idx in parts.items():
                    by_unet[a.unet].append(idx)
                for ua, items in by_unet.items():
                    requests[ua].append((g, items))
            for ua, reqs in requests.items():
                for b in range(0, len(reqs), step_groups):
                    batch = reqs[b:b + step_groups]
                    B = len(batch)
                    fill = {k: torch.cat([g.cache[k] for g, _ in batch]) for k in ua.needs(K)
                            if all(k in g.cache for g, _ in batch)}  # a missing one is reported by step
                    C = {k: v.repeat(B, *([1] * (v.dim() - 1))) for k, v in cond_n.items()}
                    x = torch.cat([g.x for g, _ in batch])
                    states = [g.state.copy() for g, _ in batch]  # each group's own (a group may branch into several actions)
                    out = s.step(x, t, C, ua, cache=fill, capture=keep, state=states)
                    evals += B * s.calls(t)
                    self._spent(B * s.calls(t))
                    for (g, items), part, st in zip(batch, _split(out, B), states):
                        cache = {**g.cache, **part.captured}
                        for k, idx in enumerate(items):
                            walk.advance(s, part, idx, cache, st if k == 0 else st.copy())
        return ChunkResult(baseline_x0.float().cpu(), [f.float().cpu() for f in walk.finals], x_t, x_est0, evals, tracker)


# --- running a grid into a results database, resumably ---------------------------------------------
def _images_file(out_dir, run: str, seed: int):
    from .store import run_dir

    return run_dir(out_dir, "images", run) / f"{int(seed):05d}.pt"


@dataclass(frozen=True)
class GridConfig:
    """How ``run_grid`` runs a grid: where images go, the per-step measurements, the chunking."""

    out_dir: Any  # the run folder: images/RUN/SEED.pt are written under it
    trajectory_steps: tuple = ()  # steps whose baseline x_t and x_est0 are measured against x_0
    features: bool = False  # each unit's change from step to step (the feature-change experiment)
    chunk_size: int = 16  # samples per chunk: one transaction each, the unit of resume
    max_batch: int | None = None  # samples per stacked U-Net call (None: sized for the device)
    image_seeds: frozenset = frozenset()  # seeds whose images are kept for the figure grids
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise PlanError(f"chunk_size must be at least 1, got {self.chunk_size!r}")
        if self.max_batch is not None and (not isinstance(self.max_batch, int) or self.max_batch < 1):
            raise PlanError(f"max_batch must be at least 1, got {self.max_batch!r}")
        object.__setattr__(self, "trajectory_steps", tuple(int(t) for t in self.trajectory_steps))
        object.__setattr__(self, "image_seeds", frozenset(self.image_seeds))


@dataclass(frozen=True)
class ChunkJob:
    """One chunk of a grid, all a worker needs to compute its rows and kept images (no model, no store)."""

    index: int  # the chunk's place in the grid
    seeds: list[int]
    cond: Cond  # the chunk's conditions, as the sampler takes them
    stored_cond: list  # each sample's condition as its rows store it
    plans: list[Plan]  # the plans this chunk still needs
    trajectory_steps: tuple = ()
    image_seeds: frozenset = frozenset()  # this chunk's seeds whose images are kept
    max_batch: int | None = None
    features: bool = False


@dataclass
class ChunkOutput:
    """What computing a chunk gives the writer: its rows, its kept images and the work it took."""

    index: int
    rows: list[dict]
    images: dict  # seed -> {variant id: (C, H, W) uint8}
    evaluations: int  # U-Net evaluations spent (each on the chunk's samples)
    samples: int
    seconds: float  # the worker's compute time for the chunk
    worker: str  # host/pid of the process that computed it


def worker_id() -> str:
    """The host/pid of this process: which worker computed a chunk."""
    import os
    import socket

    return f"{socket.gethostname()}/{os.getpid()}"


def compute_chunk(sampler: Sampler, job: ChunkJob, on_evaluation=None) -> ChunkOutput:
    """A chunk's rows (SSIM/PSNR of every plan and per-step measurement against the baseline) and
    kept images; pure: the same job gives the same output in any process (a Ray worker included)."""
    import time

    from .metrics import psnr, ssim

    t0 = time.perf_counter()
    m, ch_seeds, ch_stored, steps = sampler.model, job.seeds, job.stored_cond, job.trajectory_steps
    res = SweepEngine(sampler, max_batch=job.max_batch, on_evaluation=on_evaluation).run_chunk(
        ch_seeds, job.cond, job.plans, keep_x_t=set(steps), keep_x_est0=set(steps), features=job.features)
    base_vid = variant_id({"type": "baseline"})
    base_img = m.decode(res.baseline_x0)
    rows = [dict(seed=s, variant={"type": "baseline"}, cond=c, extra={}) for s, c in zip(ch_seeds, ch_stored)]
    keep_imgs = {s: {base_vid: to_uint8(base_img[k])} for k, s in enumerate(ch_seeds) if s in job.image_seeds}
    for plan, x0 in zip(job.plans, res.finals):
        variant = plan.to_dict()
        vid = variant_id(variant)
        img = m.decode(x0)
        ss, pp = ssim(img, base_img), psnr(img, base_img)
        for k, s in enumerate(ch_seeds):
            rows.append(dict(seed=s, variant=variant, cond=ch_stored[k], ssim=float(ss[k]), psnr=float(pp[k])))
            if s in keep_imgs:
                keep_imgs[s][vid] = to_uint8(img[k])
    for t in steps:
        for kind, store_ in (("x_t", res.x_t), ("x_est0", res.x_est0)):
            img = m.decode(store_[t])
            ss, pp = ssim(img, base_img), psnr(img, base_img)
            for k, s in enumerate(ch_seeds):
                rows.append(dict(seed=s, variant={"type": kind, "t": int(t)}, cond=ch_stored[k],
                                 ssim=float(ss[k]), psnr=float(pp[k])))
                if s in keep_imgs:
                    keep_imgs[s][variant_id({"type": kind, "t": int(t)})] = to_uint8(img[k])
    if res.features is not None:
        rows += res.features.rows(ch_seeds, ch_stored)
    return ChunkOutput(job.index, rows, keep_imgs, res.evaluations, len(ch_seeds), time.perf_counter() - t0, worker_id())


def write_chunk(store, run: str, out_dir, out: ChunkOutput, stats: dict) -> None:
    """The driver's half of a chunk: its images, then its rows and ``stats`` in one transaction (rows
    in the store imply their images exist)."""
    import os

    for s, imgs in out.images.items():
        f = _images_file(out_dir, run, s)
        f.parent.mkdir(parents=True, exist_ok=True)
        old = _read_images(f)
        old.update(imgs)
        torch.save(old, f.with_suffix(".tmp"))
        os.replace(f.with_suffix(".tmp"), f)
    store.write(run, out.rows, stats=stats)


def run_grid(store, run: str, sampler: Sampler, seeds: list[int], cond: Cond, plans: list[Plan], config: GridConfig,
             executor=None) -> dict:
    """Run ``plans`` (plus, for ``config.trajectory_steps``, per-step measurements) on ``seeds``
    into ``store`` under ``run``. Chunks of samples are written in one transaction each; rows
    already in the store are not recomputed. ``executor`` (``unetscope.executor``): where the chunks
    are computed; None or an in-process one: here, in order; else its ``map`` sends them out and
    this process writes each as it completes (any order). Returns the evaluation counts (spent,
    minimum, naive) and each worker's throughput."""
    import time

    from .executor import tally_work

    c = config
    out_dir, trajectory_steps, chunk_size, max_batch, image_seeds = (c.out_dir, c.trajectory_steps, c.chunk_size,
                                                                      c.max_batch, c.image_seeds)
    if max_batch is not None and max_batch < min(chunk_size, len(seeds)):
        raise PlanError(f"max_batch ({max_batch}) must be at least the chunk size ({min(chunk_size, len(seeds))}): "
                        "a U-Net call holds at least one chunk")
    variants = [p.to_dict() for p in plans]
    traj = [{"type": k, "t": int(t)} for t in trajectory_steps for k in ("x_t", "x_est0")]
    vids = [variant_id(v) for v in variants]
    tids = [variant_id(v) for v in traj]
    base_vid = variant_id({"type": "baseline"})
    done = store.done(run)
    stored_cond = per_sample_cond(cond, len(seeds))
    chunks = [list(range(i, min(i + chunk_size, len(seeds)))) for i in range(0, len(seeds), chunk_size)]
    minimum, naive = count_evaluations(plans, sampler.steps, sampler.calls)
    todo = []
    for idx in chunks:
        ch_seeds = [seeds[i] for i in idx]
        need = [j for j, v in enumerate(vids) if any((s, v) not in done for s in ch_seeds)]
        need_traj = any((s, v) not in done for s in ch_seeds for v in tids + [base_vid])
        if need or need_traj:
            todo.append((idx, need))
    jobs = [ChunkJob(k, [seeds[i] for i in idx], cond_slice(cond, idx, len(seeds)), [stored_cond[i] for i in idx],
                     [plans[j] for j in need], trajectory_steps, frozenset(seeds[i] for i in idx if seeds[i] in image_seeds),
                     max_batch, c.features) for k, (idx, need) in enumerate(todo)]
    stats = store.stats(run)
    spent_before, seconds_before = stats.get("evaluations_spent", 0), stats.get("seconds", 0)
    bar = None
    total = sum(count_evaluations(job.plans, sampler.steps, sampler.calls)[0] for job in jobs)
    if c.progress and total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=run, unit="eval")
    here = executor is None or getattr(executor, "in_process", False)
    if here:  # in order, in this process, the bar moved per evaluation
        outputs = ((job.index, compute_chunk(sampler, job, bar.update if bar is not None else None)) for job in jobs)
    else:
        outputs = executor.map(compute_chunk, jobs, sampler)
    spent, t0, workers = 0, time.perf_counter(), {}
    for k, (_, out) in enumerate(outputs, 1):
        spent += out.evaluations
        tally_work(workers, out.worker, out.evaluations, out.samples, out.seconds)
        # the chunk's rows with the work they took (sampling time summed over resumed calls)
        write_chunk(store, run, out_dir, out, {"evaluations_spent": spent_before + spent,
                                               "seconds": seconds_before + time.perf_counter() - t0})
        if bar is not None and not here:
            bar.update(out.evaluations)
            bar.set_postfix_str(f"chunks {k}/{len(jobs)}, {len(workers)} workers", refresh=False)
    if bar is not None:
        bar.close()
    n_chunks = len(chunks)
    store.set_stat(run, "evaluations_minimum", minimum * n_chunks)
    store.set_stat(run, "evaluations_naive", naive * n_chunks)
    seconds = time.perf_counter() - t0
    return dict(plans=len(plans), spent=spent_before + spent, spent_now=spent, minimum=minimum * n_chunks, naive=naive * n_chunks,
                seconds=seconds, seconds_total=seconds_before + seconds if todo else seconds_before, chunks_run=len(todo),
                workers=workers)


def per_sample_cond(cond, n: int) -> list:
    """Each sample's condition as a JSON value for the results database (tensor dicts: None)."""
    if cond is None or isinstance(cond, dict):
        return [None] * n
    if isinstance(cond, (int, str)):
        return [cond] * n
    items = [c.item() if torch.is_tensor(c) else c for c in cond]
    return items * n if len(items) == 1 else items


def load_images(out_dir, run: str, seed: int) -> dict:
    """The images kept for a seed: variant id -> (C, H, W) uint8."""
    f = _images_file(out_dir, run, seed)
    return _read_images(f)


def _read_images(f) -> dict:
    """A seed's kept images (weights-only: reading a crafted file runs no code)."""
    from .store import StoreError

    if not f.exists():
        return {}
    try:
        obj = torch.load(f, weights_only=True)
    except Exception as e:
        raise StoreError(f"{f} is not a readable images file of unetscope ({type(e).__name__}); remove it to rebuild it") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise StoreError(f"{f} is not an images file of unetscope (a dict of variant id -> image); remove it to rebuild it")
    return obj
