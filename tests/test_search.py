"""The shortcut search: targets with a margin on validation seeds, held-out seeds it never saw,
budgets, the move set, and never ending below the uniform schedule it starts from. On the trained
research-style model (examples/mnist_unet.py), at S = 10."""

from pathlib import Path

import numpy as np
import pytest

import unetscope as us
from unetscope import Plan, Sampler, SkipSteps
from unetscope.shortcut import SearchConfig, ShortcutError, heldout_ssim, search, student_t, uniform_cache_cuts

ROOT = Path(__file__).resolve().parents[1]
REF = f"{ROOT / 'examples' / 'mnist_unet.py'}:make_model"
CAL, VAL, TEST = list(range(6)), list(range(6, 12)), list(range(100, 116))


@pytest.fixture(scope="module")
def sampler():
    return Sampler(us.load_model(REF), steps=10)


def _compute(sampler, plan):
    from unetscope.flops import FlopTable

    m = sampler.model
    import torch

    t = FlopTable(m.runner, torch.zeros(1, *m.sample_shape), torch.tensor([500]))
    return t.plan(plan, sampler.steps) / t.plan(Plan(), sampler.steps)


def _uniform(sampler):
    """Every uniform cached schedule the search could start from at S = 10."""
    return [Plan(uniform_cache_cuts(10, every, nb)) for every in (2, 3, 4, 5, 6, 8) for nb in range(1, 7)]


def test_margin_rules_on_synthetic_scores():
    cfg = SearchConfig(target_mean=0.8)
    tight = np.array([0.6, 1.0] * 4)  # mean exactly 0.8: the point estimate meets it, the lower bound does not
    assert cfg.meets(tight) and not cfg.holds(tight)
    assert cfg.holds(np.full(8, 0.9)) and SearchConfig(target_mean=0.9).holds(np.full(8, 0.9))
    q = SearchConfig(target_quantile=0.7, quantile=0.25)
    two_low = np.array([0.5, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])  # the 25% quantile is 0.8; resamples often hold 3 lows
    assert q.meets(two_low) and not q.holds(two_low) and q.holds(np.full(8, 0.9))
    assert not q.meets(np.array([0.5, 0.5, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9]))
    mn = SearchConfig(target_min=0.7)
    assert mn.holds(np.array([0.71, 0.99])) and not mn.holds(np.array([0.69, 0.99]))
    assert SearchConfig().targets == {"mean": 0.8} and SearchConfig(budget=0.5).targets == {}
    with pytest.raises(ShortcutError, match="not both"):
        SearchConfig(budget=0.5, target_min=0.7)


def test_the_mean_margin_widens_with_the_tail_the_calibration_seeds_saw():
    cfg = SearchConfig(target_mean=0.9)
    easy = np.array([0.93, 0.95, 0.94, 0.96, 0.92, 0.95, 0.94, 0.93])  # mean 0.94, all easy: tight bounds
    assert cfg.holds(easy)
    # the same validation scores, next to calibration seeds of the same schedule that met the tail:
    # pooled s = 0.19, Student's bound 0.94 - 1.415 * 0.19 / sqrt(8) = 0.85 < 0.9
    hard_cal = np.array([0.35, 0.97, 0.96, 0.40, 0.95, 0.97, 0.96, 0.95])
    pooled = np.concatenate([easy, hard_cal]).std(ddof=1)
    bound = easy.mean() - student_t(0.9, 7) * pooled / np.sqrt(8)
    assert bound < 0.9 and not cfg.holds(easy, spread=hard_cal)
    assert cfg.holds(easy, spread=easy[::-1])  # an easy calibration set changes nothing
    assert cfg.holds(np.full(8, 0.95), spread=np.full(8, 0.95))  # no spread at all: s = 0
    # only the mean target reads the spread
    assert SearchConfig(target_min=0.9).holds(easy, spread=hard_cal)


@pytest.mark.parametrize("df,p,exact", [(1, 0.9, 3.0777), (2, 0.9, 1.8856), (3, 0.9, 1.6377), (7, 0.9, 1.4149),
                                        (15, 0.95, 1.7531), (30, 0.99, 2.4573), (1000, 0.9, 1.2824)])
def test_student_t_quantiles_match_the_tables(df, p, exact):
    assert student_t(p, df) == pytest.approx(exact, rel=5e-3)


def test_search_meets_its_target_on_held_out_seeds_and_beats_the_uniform_start(sampler):
    cfg = dict(target_mean=0.9, max_rounds=4, per_round=8)
    res = search(sampler, CAL, None, validation_seeds=VAL, **cfg)
    plan = res["plan"]
    assert plan and res["validation_holds"] and res["calibration_ssim_mean"] >= 0.9
    # (determinism: test_shortcut searches twice on the tiny model, test_ray compares a search on Ray with one here)
    held = heldout_ssim(sampler, plan, TEST)
    assert held.mean() >= 0.9, held  # seeds the search never saw
    # never below the uniform schedule it starts from, nor any uniform one of no more compute
    found_c = _compute(sampler, plan)
    assert abs(found_c - res["predicted_compute"]) < 1e-9
    if res["history"]:
        start = Plan.from_dict(res["history"][0]["plan"])
        assert found_c <= _compute(sampler, start)
    cheaper = [u for u in _uniform(sampler) if _compute(sampler, u) <= found_c]
    for u, v in zip(cheaper, heldout_ssim(sampler, cheaper, VAL)):  # one baseline, shared prefixes
        assert v.mean() <= res["validation_ssim_mean"] + 1e-6 or v.mean() < 0.9, (u, v.mean())


def test_budget_gives_the_best_schedule_within_the_compute(sampler):
    res = search(sampler, CAL, None, validation_seeds=VAL, budget=0.6, max_rounds=4, per_round=8)
    assert res["predicted_compute"] <= 0.6 + 1e-9
    within = [u for u in _uniform(sampler) if _compute(sampler, u) <= 0.6]
    best_uniform = heldout_ssim(sampler, within, VAL).mean(1).max()
    assert res["validation_ssim_mean"] >= best_uniform - 1e-6


def test_skip_steps_and_stop_early_are_moves(sampler):
    res = search(sampler, CAL, None, validation_seeds=VAL, target_mean=0.5, fills=(), reuse_encoder=False,
                 max_rounds=3, per_round=6)
    kinds = {type(i).__name__ for i in res["plan"]}
    assert kinds and kinds <= {"SkipSteps", "StopEarly"}, res["plan"]
    assert res["predicted_compute"] < 1
    s = Plan([SkipSteps(8, 2)])
    assert heldout_ssim(sampler, s, CAL).shape == (6,)


def test_api_reports_held_out_and_the_uniform_rival(tmp_path):
    res = us.search_shortcut(REF, tmp_path / "s", target_mean=0.85, calibration=2, validation=2, samples=8, steps=10,
                             rounds=2, repeats=1)
    assert len(res["held_out_seeds"]) == 4 and not set(res["held_out_seeds"]) & set(res["calibration_seeds"] + res["validation_seeds"])
    assert res["held_out_meets_target"] == (res["held_out"]["ssim_mean"] >= 0.85)
    import json

    meta = json.loads((tmp_path / "s" / "schedule.json").read_text())
    assert meta["validation_seeds"] == res["validation_seeds"] and "mean SSIM >= 0.85" in meta["target"]
