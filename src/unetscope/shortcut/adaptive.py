"""Calibrating ``AdaptiveCache`` to a target: its nb, threshold and max_reuse chosen on the
calibration seeds, kept only where the target also holds on the validation seeds with the static
search's margin (``SearchConfig.holds``).

The threshold is the one continuous knob: a higher threshold reads the cache more often, so the
compute falls and, on the whole, the SSIM with it. For each nb and max_reuse the search doubles the
threshold from 0.05 until the calibration seeds miss the target (or, for a budget, until the
compute is within it), then bisects. Each candidate runs the sampler on the seeds (the decisions
follow the trajectory, so there is no prefix to share past the first step) and is scored once.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..metrics import ssim
from ..models import Cond
from ..plan import AdaptiveCache, Plan, StepAction
from ..sampling import Sampler, cond_slice
from .schedules import ShortcutError
from .search import SearchConfig

__all__ = ["search_adaptive", "AdaptiveEvaluator"]

START, DOUBLINGS, BISECTIONS, BACKOFFS = 0.05, 8, 5, 4


class AdaptiveEvaluator:
    """Per-sample SSIM against the baseline (or ``reference`` images, one per seed) and per-sample
    compute (executed FLOPs over the baseline's) of ``AdaptiveCache`` plans on one set of seeds, each
    plan run once."""

    def __init__(self, sampler: Sampler, seeds, cond, flops, base_flops: int, reference=None):
        self.sampler, self.seeds, self.cond, self.flops, self.base = sampler, list(seeds), cond, flops, base_flops
        m = sampler.model
        if reference is None:
            tr = sampler.sample(self.seeds, cond)
            self.ref, self.evaluations = m.decode(tr.x0), sampler.steps
        else:
            self.ref, self.evaluations = reference, 0
        self.known: dict[Plan, tuple[np.ndarray, np.ndarray]] = {}

    @torch.no_grad()
    def __call__(self, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
        if plan not in self.known:
            s = self.sampler
            tr = s.sample(self.seeds, self.cond, plan)
            out = s.model.decode(tr.x0)
            ss = ssim(out, self.ref.to(out.device, out.dtype)).numpy()
            per = self.flops.samples(s.check_plan(plan), s.steps, tr.reused, len(self.seeds))
            self.known[plan] = (ss, np.asarray(per, dtype=float) / self.base)
            self.evaluations += tr.nfe
        return self.known[plan]


def _plan(nb, th, mr) -> Plan:
    return Plan([AdaptiveCache(nb, float(th), max_reuse=mr)])


def search_adaptive(sampler: Sampler, seeds: list[int], cond: Cond = None, config: SearchConfig | None = None, *,
                    validation_seeds: list[int] | None = None, validation_cond: Cond = None, log=None,
                    max_reuses: tuple = (None, 3), reference=None, validation_reference=None, **settings) -> dict:
    """An ``AdaptiveCache`` schedule for a quality target (the least calibration compute whose
    target holds on the validation seeds with a margin) or a compute budget (the best validation
    SSIM whose calibration compute is within it), over nb (``SearchConfig.block_counts``),
    ``max_reuses`` and the threshold. Returns the keys of ``search``'s result. ``reference`` /
    ``validation_reference``: images to score against instead of the sampler's own (``search``)."""
    from ..flops import FlopTable

    cfg = replace(config or SearchConfig(), **settings) if settings else (config or SearchConfig())
    say = log or (lambda _m: None)
    m, S, K = sampler.model, sampler.steps, sampler.model.num_blocks
    x1 = torch.zeros(1, *m.sample_shape, device=m.device, dtype=m.dtype)
    t1 = torch.full((1,), m.schedule.num_train_timesteps // 2, dtype=torch.long, device=m.device)
    flops = FlopTable(m.runner, x1, t1, m.make_cond(cond_slice(cond, [0], len(seeds)), 1), sampler.denoiser.rows_per_sample)
    base = flops.plan(Plan(), S)
    cal = AdaptiveEvaluator(sampler, seeds, cond, flops, base, reference)
    val = AdaptiveEvaluator(sampler, validation_seeds, validation_cond, flops, base, validation_reference) \
        if validation_seeds else None
    history: list[dict] = []

    def note(nb, th, mr, what):
        ss, comp = cal(_plan(nb, th, mr))
        history.append(dict(round=len(history), start=what, plan=_plan(nb, th, mr).to_dict(), compute=float(comp.mean()),
                            ssim_mean=float(ss.mean()), ssim_min=float(ss.min())))
        say(f"nb {nb}, max_reuse {mr}: threshold {th:.4f}, calibration compute {comp.mean():.3f}, mean SSIM {ss.mean():.3f}")

    def holds(p: Plan) -> bool:
        if val is None:
            return bool(cfg.meets(cal(p)[0]))
        return bool(cfg.holds(val(p)[0], spread=cal(p)[0]))

    def quality(p: Plan) -> float:
        return float((val or cal)(p)[0].mean())

    found = []  # (plan, calibration compute)
    for nb in cfg.block_counts(K):
        for mr in max_reuses:
            if cfg.budget is None:  # the largest threshold whose target holds on the calibration seeds
                ok, bad, th = 0.0, None, START
                for _ in range(DOUBLINGS):
                    if cfg.meets(cal(_plan(nb, th, mr))[0]):
                        ok, th = th, th * 2
                    else:
                        bad = th
                        break
                for _ in range(BISECTIONS if bad is not None else 0):
                    mid = (ok + bad) / 2
                    if cfg.meets(cal(_plan(nb, mid, mr))[0]):
                        ok = mid
                    else:
                        bad = mid
                for _ in range(BACKOFFS):  # then the margin on the validation seeds
                    if ok == 0 or holds(_plan(nb, ok, mr)):
                        break
                    ok *= 0.7
                if ok > 0 and holds(_plan(nb, ok, mr)):
                    note(nb, ok, mr, "adaptive")
                    found.append((_plan(nb, ok, mr), float(cal(_plan(nb, ok, mr))[1].mean())))
            else:  # the smallest threshold whose calibration compute is within the budget
                B = cfg.budget + 1e-9
                lo, hi, th = 0.0, None, START
                for _ in range(DOUBLINGS):
                    if cal(_plan(nb, th, mr))[1].mean() <= B:
                        hi = th
                        break
                    lo, th = th, th * 2
                if hi is None:
                    continue
                for _ in range(BISECTIONS):
                    mid = (lo + hi) / 2
                    if cal(_plan(nb, mid, mr))[1].mean() <= B:
                        hi = mid
                    else:
                        lo = mid
                note(nb, hi, mr, "adaptive")
                found.append((_plan(nb, hi, mr), float(cal(_plan(nb, hi, mr))[1].mean())))
    if not found:
        if cfg.budget is not None:
            raise ShortcutError(f"no AdaptiveCache threshold brings the compute within the budget ({cfg.budget:.3f} of the "
                                "baseline's) on the calibration seeds: raise the budget")
        plan, comp = Plan(), 1.0
    elif cfg.budget is None:
        plan, comp = min(found, key=lambda f: (f[1], -quality(f[0]), repr(f[0])))
    else:
        plan, comp = max(found, key=lambda f: (quality(f[0]), -f[1], repr(f[0])))
    scored = bool(plan) or reference is not None  # against a reference the solver alone is scored too
    ss_cal = cal(plan)[0] if scored else np.ones(len(seeds))
    ss_val = (val(plan)[0] if scored else np.ones(len(validation_seeds))) if val is not None else None
    return dict(plan=plan, predicted_compute=comp, history=history, target=cfg.describe_target() + " (AdaptiveCache)",
                calibration_ssim_mean=float(ss_cal.mean()), calibration_ssim_min=float(ss_cal.min()),
                validation_ssim_mean=None if ss_val is None else float(ss_val.mean()),
                validation_ssim_min=None if ss_val is None else float(ss_val.min()),
                validation_holds=None if ss_val is None else bool(cfg.budget is not None or cfg.holds(ss_val, spread=ss_cal)),
                validation_compute=None if val is None or not plan else float(val(plan)[1].mean()),
                uniform_rival=None, evaluations=cal.evaluations + (val.evaluations if val else 0), workers={},
                flops_per_nb=[flops(StepAction(drop_blocks=nb)) for nb in range(K + 1)])
