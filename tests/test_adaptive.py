"""AdaptiveCache: per-sample caching of the bottom blocks, decided at run time from how much the
shallow encoder's output changed. Its limits are the unintervened sampler (threshold 0) and the
static cache (a huge threshold); the deep part runs on the sub-batch of samples that recompute; a
sample's result does not depend on its batch-mates; bad input is one line."""

import json

import pytest
import torch

import unetscope as us
from conftest import run_cli
from unetscope.plan import AdaptiveCache, DropBlocks, Plan, PlanError, ZeroSkips

SEEDS, CLASSES = [0, 1, 2], [3, 5, 7]


@pytest.fixture(scope="module")
def default():
    torch.manual_seed(0)
    return us.load_model("default")


def _sampler(m, method, steps=10):
    return us.Sampler(m, steps=steps, method=method, guidance=2.0)


@pytest.mark.parametrize("method", ["ddpm", "ddim", "dpm++"])
def test_limits_are_the_baseline_and_the_static_cache(default, method):
    """threshold 0: every step computes, the unintervened sample (bitwise). A huge threshold and no
    max_reuse: the range's first step computes and the rest read the cache, DropBlocks(fill="cache")
    from the step after."""
    s = _sampler(default, method)
    base = s.sample(SEEDS, CLASSES)
    zero = s.sample(SEEDS, CLASSES, Plan([AdaptiveCache(4, 0.0)]))
    assert torch.equal(zero.x0, base.x0)
    assert zero.units_per_sample == base.units_per_sample and not any(v.any() for v in zero.reused.values())
    huge = s.sample(SEEDS, CLASSES, Plan([AdaptiveCache(4, 1e9, start=8, n=5)]))
    static = s.sample(SEEDS, CLASSES, Plan([DropBlocks(4, 7, 4, "cache")]))
    assert torch.equal(huge.x0, static.x0)
    assert huge.units_per_sample == static.units_per_sample
    assert sorted(huge.reused) == [4, 5, 6, 7] and all(v.all() for v in huge.reused.values())


def test_max_reuse_forces_a_recompute(default):
    s = _sampler(default, "ddim")
    t = s.sample(SEEDS, CLASSES, Plan([AdaptiveCache(4, 1e9, max_reuse=2)]))
    # from step 10 (computes): reads at 9, 8, computes at 7, reads at 6, 5, computes at 4, ...
    assert [bool(t.reused[k][0]) for k in range(9, 0, -1)] == [True, True, False, True, True, False, True, True, False]


def _mid_rows(m):
    """Rows of every call of the U-Net's middle block (the deep part's core)."""
    rows = []
    h = m.module.mid_block.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    return rows, h


@pytest.mark.parametrize("method", ["ddpm", "dpm++"])
def test_the_deep_part_runs_on_the_recomputing_rows_only(default, method):
    """At each step the middle block sees two rows (guided and unguided) per sample that recomputes,
    and none of the others; each sample's units add up to what its decisions say."""
    s = _sampler(default, method)
    nb = 3
    for th in (0.1, 0.2, 0.3, 0.5, 0.8, 1.2):  # a threshold at which the samples decide differently
        ran = {k: int((~v).sum()) for k, v in s.sample(SEEDS, CLASSES, Plan([AdaptiveCache(nb, th)])).reused.items()}
        if any(0 < r < len(SEEDS) for r in ran.values()):
            break
    else:
        pytest.fail("no threshold made the samples decide differently")
    rows, h = _mid_rows(default)
    try:
        t = s.sample(SEEDS, CLASSES, Plan([AdaptiveCache(nb, th)]))
    finally:
        h.remove()
    assert ran == {k: int((~v).sum()) for k, v in t.reused.items()}
    want = [2 * len(SEEDS)] + [2 * ran[k] for k in sorted(ran, reverse=True) if ran[k]]
    assert rows == want
    K = default.num_blocks
    full = 2 * K + 1
    deep = 2 * nb + 1
    for i in range(len(SEEDS)):  # the first step, then per step the shallow part and the deep one where it ran
        runs = sum(1 for k, v in t.reused.items() if not v[i])
        assert t.units_per_sample[i] == full + len(t.reused) * (full - deep) + runs * deep


def test_a_sample_does_not_depend_on_its_batch(default):
    s = _sampler(default, "ddpm")
    seeds, classes = list(range(8)), [0, 1, 2, 3, 4, 5, 6, 7]
    plan = Plan([AdaptiveCache(6, 0.3, max_reuse=3)])
    batch = s.sample(seeds, classes, plan)
    for i in (2, 5):
        alone = s.sample([seeds[i]], [classes[i]], plan)
        assert torch.allclose(alone.x0[0], batch.x0[i], atol=1e-4)
        assert {k: bool(v[0]) for k, v in alone.reused.items()} == {k: bool(v[i]) for k, v in batch.reused.items()}


def test_the_sweep_engine_gives_each_plan_its_own_run(default):
    """Adaptive plans stacked with others in one sweep (shared prefixes, batched groups) end where
    each run alone ends."""
    from unetscope.sweep import SweepEngine

    s = _sampler(default, "ddim")
    plans = [Plan([AdaptiveCache(6, 0.3)]), Plan([AdaptiveCache(6, 0.3, start=6)]), Plan([AdaptiveCache(4, 0.5, start=6)]),
             Plan([DropBlocks(6, 5, 3, "cache")])]
    res = SweepEngine(s).run_chunk(SEEDS, CLASSES, plans)
    for p, x0 in zip(plans, res.finals):
        assert torch.allclose(x0, s.sample(SEEDS, CLASSES, p).x0, atol=1e-4), p


def test_a_research_unet_and_a_latent_text_model(sd_dir):
    """The same limits on U-Nets shaped the way research code writes them and on a text-to-image
    latent model (CLIP text conditioning, guidance)."""
    from research_shapes import IntColumnUNet, IntColumnUNetUnits, PadUNet, PadUNetUnits, UnitTimeUNet, UnitTimeUNetUnits

    for name, units, shape in [("pad", PadUNetUnits(PadUNet().eval()), (1, 28, 28)),
                               ("unit-time", UnitTimeUNetUnits(UnitTimeUNet().eval()), (1, 16, 16)),
                               ("int-column", IntColumnUNetUnits(IntColumnUNet().eval()), (1, 16, 16))]:
        m = us.wrap(units, sample_shape=shape, name=name)
        s = us.Sampler(m, steps=6, method="ddim")
        K = m.num_blocks
        base = s.sample([0, 1])
        assert torch.equal(s.sample([0, 1], plan=Plan([AdaptiveCache(K, 0.0)])).x0, base.x0), name
        huge = s.sample([0, 1], plan=Plan([AdaptiveCache(1, 1e9, start=5, n=3)]))
        assert torch.equal(huge.x0, s.sample([0, 1], plan=Plan([DropBlocks(1, 4, 2, "cache")])).x0), name
    m = us.load_model(sd_dir)
    s = us.Sampler(m, steps=5, method="ddim", guidance=3.0)
    base = s.sample([0, 1], ["a cat", "a dog"])
    assert torch.equal(s.sample([0, 1], ["a cat", "a dog"], Plan([AdaptiveCache(2, 0.0)])).x0, base.x0)


def test_plans_refuse_what_does_not_fit():
    with pytest.raises(PlanError, match="both change the U-Net at step 4"):
        Plan([AdaptiveCache(2, 0.1, start=5, n=3), ZeroSkips(1, 4, 1)])
    with pytest.raises(PlanError, match="both change the U-Net"):
        Plan([AdaptiveCache(2, 0.1), DropBlocks(1, 4, 2)]).check(10, 4)  # open range: refused once bound
    for kw, msg in [(dict(threshold=-0.1), "finite number >= 0"), (dict(threshold=float("nan")), "finite number >= 0"),
                    (dict(threshold=float("inf")), "finite number >= 0"), (dict(threshold="0.1"), "a number >= 0"),
                    (dict(max_reuse=0), "max_reuse must be in >= 1"), (dict(nb=0), "nb must be in >= 1")]:
        with pytest.raises(PlanError, match=msg):
            AdaptiveCache(**{"nb": 2, "threshold": 0.1, **kw})
    with pytest.raises(PlanError, match=r"nb must be in 1\.\.4"):
        Plan([AdaptiveCache(5, 0.1)]).check(10, 4)
    p = Plan([AdaptiveCache(2, 0.25, max_reuse=3)])
    assert Plan.from_json(p.to_json()) == p and p.check(10, 4).interventions[0].start == 10


def test_intervene_adaptive_cache(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "o"
    code, stdout, err = run_cli(["intervene", "--model", tiny_model_dir, "--steps", "8", "--samples", "2", "--class", "1",
                                 "--adaptive-cache", "2", "--threshold", "0.2", "--start", "7", "--out", out, "--quiet"],
                                capsys)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["plan"]["interventions"] == [dict(type="AdaptiveCache", nb=2, threshold=0.2, start=7, n=7, max_reuse=None)]
    assert all(0 < r["compute"] <= 1 for r in m["samples"])


@pytest.mark.parametrize("argv, msg", [
    (["--adaptive-cache", "2", "--threshold", "-1"], "AdaptiveCache.threshold must be a finite number >= 0, got -1"),
    (["--adaptive-cache", "2", "--threshold", "nan"], "AdaptiveCache.threshold must be a finite number >= 0, got nan"),
    (["--adaptive-cache", "9", "--threshold", "0.1"], "AdaptiveCache.nb must be in 1..4 (the model's blocks K), got 9"),
    (["--adaptive-cache", "2", "--threshold", "0.1", "--max-reuse", "0"], "AdaptiveCache.max_reuse must be in >= 1"),
    (["--threshold", "0.1"], "--threshold is AdaptiveCache's: give it with --adaptive-cache NB"),
    (["--drop-blocks", "2", "--start", "5", "--max-reuse", "2"], "--max-reuse is AdaptiveCache's"),
    (["--adaptive-cache", "2"], "--adaptive-cache needs --threshold X"),
    (["--plan", '[{"type": "AdaptiveCache", "nb": 2, "threshold": 0.1}, {"type": "DropBlocks", "nb": 1, "start": 3}]'],
     "both change the U-Net at step 3"),
])
def test_bad_adaptive_input_is_one_line(tiny_model_dir, tmp_path, capsys, argv, msg):
    out = tmp_path / "o"
    code, _, err = run_cli(["intervene", "--model", tiny_model_dir, "--steps", "8", "--samples", "1", "--class", "1",
                            "--out", out, *argv], capsys)
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


SEARCH = ["--steps", "8", "--samples", "8", "--calibration", "2", "--validation", "2", "--class", "1", "--repeats", "1",
          "--quiet"]


@pytest.mark.slow  # the whole command, every nb and max_reuse (the search's rules: test_adaptive_search_for_a_budget)
def test_adaptive_search_is_calibrated_and_deterministic(tiny_model_dir, tmp_path, capsys):
    """shortcut search --adaptive: an AdaptiveCache schedule whose target holds on the calibration
    seeds and, with the margin, on the validation seeds, measured on the held-out seeds with each
    sample's compute (determinism: test_adaptive_search_for_a_budget)."""
    out = tmp_path / "s1"
    code, stdout, err = run_cli(["shortcut", "search", "--adaptive", "--target-mean", "0.9", "--model", tiny_model_dir,
                                 *SEARCH, "--out", out], capsys)
    assert code == 0, err
    assert "AdaptiveCache" in stdout
    runs = [json.loads((out / "schedule.json").read_text())]
    (it,) = runs[0]["interventions"]
    assert it["type"] == "AdaptiveCache" and it["threshold"] > 0
    assert runs[0]["calibration_ssim_mean"] >= 0.9 and runs[0]["validation_ssim_mean"] >= 0.9
    summ = json.loads((tmp_path / "s1" / "summary.json").read_text())
    assert len(summ["per_sample"]) == 4 and all(0 < r["compute"] <= 1 for r in summ["per_sample"])
    assert summ["compute_saving"] == pytest.approx(1 - sum(r["compute"] for r in summ["per_sample"]) / 4)


def test_adaptive_search_for_a_budget(tiny_model_dir):
    from unetscope.shortcut import SearchConfig
    from unetscope.shortcut.adaptive import search_adaptive

    s = us.Sampler(us.load_model(tiny_model_dir), steps=8, guidance=3.0)
    kw = dict(validation_seeds=[2, 3], validation_cond=1, max_reuses=(None,))
    res = search_adaptive(s, [0, 1], 1, SearchConfig(budget=0.8, nbs=(2, 4)), **kw)
    again = search_adaptive(s, [0, 1], 1, SearchConfig(budget=0.8, nbs=(4,)), **kw)
    strip = [{k: v for k, v in h.items() if k != "round"} for h in res["history"] if h["plan"]["interventions"][0]["nb"] == 4]
    assert [{k: v for k, v in h.items() if k != "round"} for h in again["history"]] == strip  # deterministic
    assert res["predicted_compute"] <= 0.8 + 1e-9 and res["plan"].interventions[0].nb in (2, 4)
    # the compute it predicts is the compute the plan makes on those seeds
    t = s.sample([0, 1], 1, res["plan"])
    from unetscope.shortcut import sample_flops

    per = sample_flops(s, res["plan"], t.reused, 2, 1)
    base = sample_flops(s, Plan(), {}, 1, 1)[0]
    assert sum(per) / 2 / base == pytest.approx(res["predicted_compute"])


@pytest.mark.parametrize("argv, msg", [
    (["shortcut", "search", "--adaptive", "--executor", "ray"], "--adaptive runs in this process"),
    (["shortcut", "--preset", "paper", "--adaptive"], "--adaptive is for shortcut search"),
])
def test_adaptive_search_flags(tiny_model_dir, tmp_path, capsys, argv, msg):
    code, _, err = run_cli([*argv, "--model", tiny_model_dir, "--steps", "8", "--out", tmp_path / "o", "--quiet"], capsys)
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
