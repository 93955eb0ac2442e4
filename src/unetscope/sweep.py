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

import torch

from .noise import NoiseBank
from .plan import Plan, PlanError, StepAction
from .sampler import Sampler, cond_slice
from .store import variant_id

__all__ = ["SweepEngine", "ChunkResult", "count_evaluations", "run_grid", "load_images", "auto_max_batch"]

_NONE = StepAction()

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
    return max(chunk, budget // (pixels * sampler.rows_per_sample))


def _walk(plan: Plan, steps: int):
    """(t, action) of every evaluation a plan makes, from x_S."""
    acts, t = plan.actions(), steps
    while t >= 1:
        a = acts.get(t, _NONE)
        yield t, a
        if a.stop:
            return
        t = t - 1 - a.jump


def _full_key(a: StepAction) -> tuple:
    return (*a.unet_key, a.jump, a.stop)


def count_evaluations(plans: list[Plan], steps: int) -> tuple[int, int]:
    """(minimum, naive) U-Net evaluations for the baseline plus ``plans``: the minimum counts each
    distinct (history, step, U-Net action) once; naive runs every plan from ``x_S``."""
    nodes, naive = set(), 0
    for plan in [Plan(), *plans]:
        hist: tuple = ()
        for t, a in _walk(plan, steps):
            nodes.add((hist, t, a.unet_key))
            hist = hist + ((t, _full_key(a)),)
            naive += 1
    return len(nodes), naive


@dataclass
class _Group:
    plans: list[int]  # indices into the plan list: plans whose history so far is identical
    x: torch.Tensor  # (n, C, H, W) x_t of the group
    cache: dict = field(default_factory=dict)  # decoder index -> D[j] output (guided layout)


@dataclass
class ChunkResult:
    baseline_x0: torch.Tensor
    finals: list[torch.Tensor]  # x0 of each plan, in order
    x_t: dict[int, torch.Tensor]  # baseline x_t at the steps asked for
    x_est0: dict[int, torch.Tensor]
    evaluations: int  # U-Net evaluations spent (each on this chunk's samples)


def _stack(ts: list[torch.Tensor], doubled: bool) -> torch.Tensor:
    if not doubled:
        return torch.cat(ts)
    halves = [t.chunk(2) for t in ts]  # guided layout: [cond rows; uncond rows]
    return torch.cat([h[0] for h in halves] + [h[1] for h in halves])


def _unstack(t: torch.Tensor, n: int, doubled: bool) -> list[torch.Tensor]:
    if not doubled:
        return list(t.split(n))
    c, u = t.chunk(2)
    return [torch.cat([a, b]) for a, b in zip(c.split(n), u.split(n))]


class SweepEngine:
    """Runs many plans on one chunk of samples, sharing every prefix."""

    def __init__(self, sampler: Sampler, max_batch: int | None = None, on_evaluation=None):
        self.sampler = sampler
        self.max_batch = max_batch
        self.on_evaluation = on_evaluation  # called once per U-Net evaluation (progress bars)

    @torch.no_grad()
    def run_chunk(self, seeds: list[int], cond, plans: list[Plan], keep_x_t=(), keep_x_est0=()) -> ChunkResult:
        s, m = self.sampler, self.sampler.model
        S, n = s.steps, len(seeds)
        plans = [s._check_plan(p) for p in plans]
        starts = defaultdict(list)
        for i, p in enumerate(plans):
            if p.first_step() is None:
                raise PlanError("an empty plan is the baseline; it is always run")
            starts[p.first_step()].append(i)
        cache_js = sorted({nb - 1 for p in plans for nb in p.uses_cache()})
        guided = s.rows_per_sample == 2
        step_groups = max(1, (self.max_batch or auto_max_batch(s, n)) // n)  # chunks per stacked U-Net call
        cond_n = m.make_cond(cond, n)
        bank = NoiseBank(seeds, m.sample_shape)
        evals = 0

        # 1. the baseline, keeping x_t where plans start and the D[j] caches they inherit
        x_t, x_est0, snap, pending = {}, {}, {}, defaultdict(list)
        finals: list[torch.Tensor | None] = [None] * len(plans)
        actions = [p.actions() for p in plans]
        for d in s.sample_progressive(seeds, cond, capture=cache_js):
            evals += 1
            if self.on_evaluation:
                self.on_evaluation()
            t = d["t"]
            if t in keep_x_t:
                x_t[t] = d["x_t"].float().cpu()
            if t in keep_x_est0:
                x_est0[t] = d["x_est0"].float().cpu()
            before = snap
            if cache_js:
                snap = {j: d["cache"][j] for j in cache_js if j in d["cache"]}
            if t in starts:
                parts = defaultdict(list)
                for i in starts[t]:
                    parts[actions[i][t]].append(i)
                own = [i for a, idx in parts.items() if a.unet_key != _NONE.unet_key for i in idx]
                if own:  # these change the U-Net at t: they evaluate it themselves
                    pending[t].append(_Group(own, d["x_t"], dict(before)))
                for a, idx in parts.items():  # a jump or a stop only: reuse the baseline's evaluation
                    if a.unet_key == _NONE.unet_key:
                        self._advance(a, idx, t, d["x_t"], d["x_est0"], d["eps"], d["frac"], bank, snap, finals, pending)
            baseline_x0 = d["x_next"]

        # 2. all plans down the steps together, as a tree of shared histories
        for t in range(S, 0, -1):
            groups = pending.pop(t, [])
            if not groups:
                continue
            requests = defaultdict(list)  # unet_key -> [(group, partitions)]
            for g in groups:
                parts = defaultdict(list)
                for i in g.plans:
                    parts[actions[i].get(t, _NONE)].append(i)
                by_unet = defaultdict(list)
                for a, idx in parts.items():
                    by_unet[a.unet_key].append((a, idx))
                for key, items in by_unet.items():
                    requests[key].append((g, items))
            for key, reqs in requests.items():
                zero_skips, drop_blocks, fill_kind = key
                for b in range(0, len(reqs), step_groups):
                    batch = reqs[b:b + step_groups]
                    act = StepAction(zero_skips=zero_skips, drop_blocks=drop_blocks, fill=fill_kind)
                    fill = None
                    if drop_blocks and fill_kind == "cache":
                        missing = [g for g, _ in batch if (drop_blocks - 1) not in g.cache]
                        if missing:
                            raise PlanError(f"DropBlocks(nb={drop_blocks}, fill='cache') at step {t}: no earlier step "
                                            f"computed D[{drop_blocks - 1}] to reuse; start the cut later")
                        fill = _stack([g.cache[drop_blocks - 1] for g, _ in batch], guided)
                    capture = {j for j in cache_js if j >= drop_blocks}
                    X = torch.cat([g.x for g, _ in batch])
                    C = {k: v.repeat(len(batch), *([1] * (v.dim() - 1))) for k, v in cond_n.items()}
                    out, res = s._evaluate(X, t, s._cond_batch(C, len(batch) * n), act, fill, capture)
                    evals += len(batch)
                    if self.on_evaluation:
                        for _ in batch:
                            self.on_evaluation()
                    outs = out.split(n)
                    caps = {j: _unstack(v, n, guided) for j, v in res.captured.items()}
                    for gi, (g, items) in enumerate(batch):
                        cache = dict(g.cache)
                        cache.update({j: v[gi] for j, v in caps.items()})
                        x0, eps, frac = s.predict(outs[gi], g.x, t)
                        for a, idx in items:
                            self._advance(a, idx, t, g.x, x0, eps, frac, bank, cache, finals, pending)
        return ChunkResult(baseline_x0.float().cpu(), [f.float().cpu() for f in finals], x_t, x_est0, evals)

    def _advance(self, a: StepAction, idx: list[int], t: int, x, x0, eps, frac, bank, cache, finals, pending) -> None:
        """Apply one step's update for the plans ``idx`` (all with action ``a`` at t)."""
        s = self.sampler
        land = t - 1 - a.jump
        if a.stop or land == 0:
            for i in idx:
                finals[i] = x0 if a.stop else s.update(x0, eps, t, 0, None, frac)
            return
        z = bank.step(t).to(x.device)
        pending[land].append(_Group(idx, s.update(x0, eps, t, land, z, frac), cache))


# --- running a grid into a results database, resumably ---------------------------------------------
def _images_file(out_dir, run: str, seed: int):
    from pathlib import Path

    return Path(out_dir) / "images" / run / f"{seed:05d}.pt"


def run_grid(store, run: str, sampler: Sampler, seeds: list[int], cond, plans: list[Plan], *, out_dir,
             trajectory_steps=(), chunk_size: int = 16, max_batch: int | None = None, image_seeds=(),
             progress: bool = True) -> dict:
    """Run ``plans`` (plus, for ``trajectory_steps``, per-step measurements) on ``seeds`` into
    ``store`` under ``run``. Chunks of samples are written in one transaction each; rows already in
    the store are not recomputed. Returns the evaluation counts (spent, minimum, naive)."""
    import os
    import time

    from .metrics import psnr, ssim

    if chunk_size < 1:
        raise PlanError(f"chunk_size must be at least 1, got {chunk_size}")
    if max_batch is not None and max_batch < min(chunk_size, len(seeds)):
        raise PlanError(f"max_batch ({max_batch}) must be at least the chunk size ({min(chunk_size, len(seeds))}): "
                        "a U-Net call holds at least one chunk")
    m = sampler.model
    variants = [p.to_dict() for p in plans]
    traj = [{"type": k, "t": int(t)} for t in trajectory_steps for k in ("x_t", "x_est0")]
    vids = [variant_id(v) for v in variants]
    tids = [variant_id(v) for v in traj]
    base_vid = variant_id({"type": "baseline"})
    done = store.done(run)
    stored_cond = per_sample_cond(cond, len(seeds))
    chunks = [list(range(i, min(i + chunk_size, len(seeds)))) for i in range(0, len(seeds), chunk_size)]
    minimum, naive = count_evaluations(plans, sampler.steps)
    todo = []
    for idx in chunks:
        ch_seeds = [seeds[i] for i in idx]
        need = [j for j, v in enumerate(vids) if any((s, v) not in done for s in ch_seeds)]
        need_traj = any((s, v) not in done for s in ch_seeds for v in tids + [base_vid])
        if need or need_traj:
            todo.append((idx, need))
    stats = store.stats(run)
    spent_before, seconds_before = stats.get("evaluations_spent", 0), stats.get("seconds", 0)
    bar = None
    total = sum(count_evaluations([plans[j] for j in need], sampler.steps)[0] for _, need in todo)
    if progress and total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=run, unit="eval")
    engine = SweepEngine(sampler, max_batch=max_batch, on_evaluation=bar.update if bar is not None else None)
    spent, t0 = 0, time.perf_counter()
    for idx, need in todo:
        ch_seeds, ch_cond = [seeds[i] for i in idx], cond_slice(cond, idx, len(seeds))
        ch_stored = [stored_cond[i] for i in idx]
        res = engine.run_chunk(ch_seeds, ch_cond, [plans[j] for j in need], keep_x_t=set(trajectory_steps),
                               keep_x_est0=set(trajectory_steps))
        spent += res.evaluations
        base_img = m.decode(res.baseline_x0)
        rows = [dict(seed=s, variant={"type": "baseline"}, cond=c, extra={}) for s, c in zip(ch_seeds, ch_stored)]
        keep_imgs = {s: {base_vid: _u8(base_img[k])} for k, s in enumerate(ch_seeds) if s in image_seeds}
        for j, x0 in zip(need, res.finals):
            img = m.decode(x0)
            ss, pp = ssim(img, base_img), psnr(img, base_img)
            for k, s in enumerate(ch_seeds):
                rows.append(dict(seed=s, variant=variants[j], cond=ch_stored[k],
                                 ssim=float(ss[k]), psnr=float(pp[k])))
                if s in keep_imgs:
                    keep_imgs[s][vids[j]] = _u8(img[k])
        for t in trajectory_steps:
            for kind, store_ in (("x_t", res.x_t), ("x_est0", res.x_est0)):
                img = m.decode(store_[t])
                ss, pp = ssim(img, base_img), psnr(img, base_img)
                for k, s in enumerate(ch_seeds):
                    rows.append(dict(seed=s, variant={"type": kind, "t": int(t)}, cond=ch_stored[k],
                                     ssim=float(ss[k]), psnr=float(pp[k])))
                    if s in keep_imgs:
                        keep_imgs[s][variant_id({"type": kind, "t": int(t)})] = _u8(img[k])
        for s, imgs in keep_imgs.items():  # images first: rows in the store imply their images exist
            f = _images_file(out_dir, run, s)
            f.parent.mkdir(parents=True, exist_ok=True)
            old = torch.load(f) if f.exists() else {}
            old.update(imgs)
            torch.save(old, f.with_suffix(".tmp"))
            os.replace(f.with_suffix(".tmp"), f)
        # the chunk's rows with the work they took (sampling time summed over resumed calls)
        store.write(run, rows, stats={"evaluations_spent": spent_before + spent,
                                      "seconds": seconds_before + time.perf_counter() - t0})
    if bar is not None:
        bar.close()
    n_chunks = len(chunks)
    store.set_stat(run, "evaluations_minimum", minimum * n_chunks)
    store.set_stat(run, "evaluations_naive", naive * n_chunks)
    seconds = time.perf_counter() - t0
    return dict(plans=len(plans), spent=spent_before + spent, spent_now=spent, minimum=minimum * n_chunks, naive=naive * n_chunks,
                seconds=seconds, seconds_total=seconds_before + seconds if todo else seconds_before, chunks_run=len(todo))


def per_sample_cond(cond, n: int) -> list:
    """Each sample's condition as a JSON value for the results database (tensor dicts: None)."""
    if cond is None or isinstance(cond, dict):
        return [None] * n
    if isinstance(cond, (int, str)):
        return [cond] * n
    items = [c.item() if torch.is_tensor(c) else c for c in cond]
    return items * n if len(items) == 1 else items


def _u8(img: torch.Tensor) -> torch.Tensor:
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def load_images(out_dir, run: str, seed: int) -> dict:
    """The images kept for a seed: variant id -> (C, H, W) uint8."""
    f = _images_file(out_dir, run, seed)
    return torch.load(f) if f.exists() else {}
