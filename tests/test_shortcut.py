import json

import pytest
import torch

from unetscope import DropBlocks, Plan, ReuseEncoder, Sampler, SkipSteps, StepAction, StopEarly, load_model
from unetscope.cli import main
from unetscope.flops import FlopTable, count_flops
from unetscope.shortcut import PRESETS, load_schedule, paper_preset, run_shortcut, save_schedule, search, unit_flops


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_schedule_round_trip(tmp_path, suffix):
    plan = Plan([DropBlocks(2, 12, 3, "cache"), DropBlocks(4, 6, 2), StopEarly(3)])
    path = save_schedule(plan, tmp_path / f"s{suffix}", meta={"note": "hand-made"})
    assert load_schedule(path) == plan


def test_paper_preset_is_fig11_at_k16_s100():
    assert paper_preset(100, 16) == Plan([DropBlocks(6, 65, 5), DropBlocks(8, 60, 2), DropBlocks(8, 47, 7),
                                          DropBlocks(8, 31, 7), StopEarly(18)])
    p = paper_preset(50, 12)
    p.check(50, 12)
    assert p.stop_at == 9 and max(it.nb for it in p if isinstance(it, DropBlocks)) == 6


BAD_SCHEDULES = [
    ('[{"type": "DropBlocks", "nb": 2, "start": 8, "n": 3}, {"type": "DropBlocks", "nb": 3, "start": 7, "n": 1}]',
     "both set DropBlocks at step 7"),
    ('[{"type": "DropBlocks", "nb": 7, "start": 8, "n": 3}]', "DropBlocks.nb must be in 1..4"),
    ('[{"type": "DropBlocks", "nb": 2, "start": 30, "n": 3}]', "start must be in 1..10"),
    ('[{"type": "DropBlocks", "nb": 2, "start": 5, "n": 3}, {"type": "StopEarly", "at": 6}]', "after StopEarly(at=6)"),
]


@pytest.mark.parametrize("text, message", BAD_SCHEDULES)
def test_bad_schedules_exit_2(text, message, tiny_model_dir, tmp_path, capsys):
    f = tmp_path / "bad.json"
    f.write_text(text)
    code = main(["shortcut", "--model", str(tiny_model_dir), "--steps", "10", "--samples", "2", "--schedule", str(f),
                 "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_missing_schedule_and_bad_yaml(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "b.yaml").write_text("interventions: [unclosed")
    for sched, msg in ((tmp_path / "none.json", "does not exist"), (tmp_path / "b.yaml", "not valid YAML")):
        code = main(["shortcut", "--model", str(tiny_model_dir), "--steps", "10", "--samples", "2", "--schedule", str(sched),
                     "--out", str(tmp_path / "o")])
        assert code == 2 and msg in capsys.readouterr().err


def test_shortcut_run_matches_the_sampler(model, tmp_path):
    s = Sampler(model, steps=10, guidance=3.0)
    plan = Plan([DropBlocks(3, 8, 3, "cache"), StopEarly(3)])
    seeds, cond = [0, 1, 2], [4, 5, 6]
    summ = run_shortcut(s, plan, seeds, cond, tmp_path)
    assert torch.equal(summ["images_shortcut"], s.sample(seeds, cond, plan).images)
    disk = json.loads((tmp_path / "summary.json").read_text())
    for k in ("time_saving", "compute_saving", "ssim_mean", "ssim_mad", "psnr_mean", "samples", "schedule"):
        assert k in disk
    assert disk["samples"] == 3 and disk["schedule"] == plan.to_dict()
    assert 0 < disk["compute_saving"] < 1 and disk["nfe_shortcut"] == 8
    assert all((tmp_path / f).stat().st_size > 5000 for f in disk["figures"])
    assert [f.split("/")[-1] for f in disk["figures"]] == ["ssim_histogram.png", "best_worst.png"]
    # the summary's numbers are the histogram's: the values it bins, the mean it marks
    hist = json.loads((tmp_path / disk["figures"][0]).with_suffix(".json").read_text())
    assert hist["values"] == pytest.approx([r["ssim"] for r in disk["per_sample"]])
    assert hist["mark"] == pytest.approx(disk["ssim_mean"]) == pytest.approx(sum(hist["values"]) / 3)
    assert f"mean = {disk['ssim_mean']:.3f}" in hist["title"]


def test_flops_of_a_cut_step_are_the_units_it_ran(model):
    r = model.runner
    x, t = torch.randn(2, *model.sample_shape), torch.full((2,), 500)
    cond = model.make_cond([1, 2], 2)
    per = unit_flops(r, x, t, cond)
    K = model.num_blocks
    assert sum(per.values()) == count_flops(r, x, t, cond)
    for nb in range(1, K + 1):
        ran = per.get("prepare", 0) + per.get("head", 0) + sum(per[f"E[{i}]"] for i in range(K - nb)) \
            + sum(per[f"D[{j}]"] for j in range(nb, K))
        assert count_flops(r, x, t, cond, drop_blocks=nb) == ran
    # ReuseEncoder runs the decoder only (plus the embeddings and the head)
    dec = per.get("prepare", 0) + per.get("head", 0) + sum(per[f"D[{j}]"] for j in range(K))
    assert count_flops(r, x, t, cond, StepAction(reuse_encoder=True)) == dec
    assert count_flops(r, x, t, cond, StepAction(reuse_encoder=True, drop_blocks=2, fill="cache")) == \
        dec - sum(per[f"D[{j}]"] for j in range(2))
    # and a plan's FLOPs count what its walk runs (jumps included)
    table = FlopTable(r, x[:1], t[:1], {k: v[:1] for k, v in cond.items()})
    plan = Plan([SkipSteps(9, 2), ReuseEncoder(6, 2)])
    # steps 10, 9 (jumps to 6), 6 and 5 reusing the encoder, 4..1: six full evaluations and two reusing
    assert table.plan(plan, 10) == 6 * table(StepAction()) + 2 * table(StepAction(reuse_encoder=True))


def test_search_meets_its_target_on_the_calibration_seeds(model):
    s = Sampler(model, steps=10, guidance=3.0)
    seeds, cond = [0, 1, 2], [1, 2, 3]
    res = search(s, seeds, cond, target_mean=0.9, per_round=6, max_rounds=6)
    plan = res["plan"]
    assert len(plan) >= 1 and res["predicted_compute"] < 1
    from unetscope import ssim

    assert search(s, seeds, cond, target_mean=0.9, per_round=6, max_rounds=6)["plan"] == plan  # deterministic
    base, short = s.sample(seeds, cond), s.sample(seeds, cond, plan)
    assert ssim(short.images, base.images).mean() >= 0.9 - 1e-4
    assert set(PRESETS) >= {"paper", "paper-cache"}


def test_timing_protocol_warms_up_interleaves_and_warns():
    from unetscope.timing import Timing, interleave, timing_warnings

    calls, now = [], [0.0]
    cost = {"baseline": 1.0, "shortcut": 0.5}

    def clock():
        return now[0]

    def make(name):
        def f():
            calls.append(name)
            now[0] += cost[name]
            return name
        return f

    timings, first = interleave({"baseline": make("baseline"), "shortcut": make("shortcut")}, repeats=3, clock=clock)
    assert calls == ["baseline", "shortcut"] * 4  # one warm-up round (untimed), then 3 interleaved rounds
    assert timings["baseline"].times == [1.0] * 3 and timings["shortcut"].median == 0.5 and first["shortcut"] == "shortcut"
    assert timing_warnings(timings["baseline"], timings["shortcut"], compute_saving=0.5) == []
    # a time saving far from the compute saving, and a wide spread, each warn in one line
    gap = timing_warnings(Timing([1.0, 1.0, 1.0]), Timing([0.2, 0.2, 0.2]), compute_saving=0.3)
    assert len(gap) == 1 and "differ by 0.50" in gap[0] and "--threads" in gap[0]
    spread = timing_warnings(Timing([1.0, 1.5, 1.0]), Timing([0.5, 0.5, 0.5]))
    assert len(spread) == 1 and "spread by 50%" in spread[0]
    # the same gap, predicted by the times of single evaluations: the model's own, not the machine's
    own = timing_warnings(Timing([1.0] * 3), Timing([0.8] * 3), compute_saving=0.35, predicted_saving=0.18)
    assert len(own) == 1 and "as the times of single evaluations predict (18.0%)" in own[0] and "--threads" not in own[0]
    off = timing_warnings(Timing([1.0] * 3), Timing([0.8] * 3), compute_saving=0.35, predicted_saving=0.30)
    assert len(off) == 1 and "machine is busy" in off[0]
    with pytest.raises(ValueError, match="repeats must be"):
        interleave({"a": make("baseline")}, repeats=0)


def test_measure_reports_medians_spreads_and_refuses_an_empty_schedule(model):
    from unetscope.shortcut import ShortcutError, measure

    s = Sampler(model, steps=6, guidance=3.0)
    res = measure(s, Plan([DropBlocks(2, 4, 2)]), [0, 1], [1, 2], repeats=2)
    t = res["timing"]
    assert len(t["baseline"]["runs"]) == 2 and t["repeats"] == 2 and t["warmup"] == 1
    assert t["baseline"]["min"] <= t["baseline"]["median"] <= t["baseline"]["max"]
    assert res["seconds_baseline"] == t["baseline"]["median"] and isinstance(res["warnings"], list)
    assert -1 < res["time_saving_predicted"] < 1
    with pytest.raises(ShortcutError, match="holds no interventions"):
        measure(s, Plan(), [0], [1])


def test_the_time_a_plan_takes_predicted_from_single_evaluations(model):
    """action_seconds times one evaluation per distinct action (a fake clock: each call costs its
    units); predicted_time_fraction sums them over the plan's evaluations, plus the per-step time
    outside the U-Net that the baseline's measured seconds leave."""
    from unetscope.plan import NO_ACTION
    from unetscope.shortcut import action_seconds, predicted_time_fraction

    s = Sampler(model, steps=10, guidance=3.0)
    K = model.num_blocks
    plan = Plan([DropBlocks(K - 1, 8, 3, "cache"), SkipSteps(4, 2)])  # steps 8..6 cut; 4 jumps over 3, 2
    now = [0.0]
    den = s.denoiser

    class Counting:  # every evaluation advances the clock by the units it runs
        rows_per_sample = den.rows_per_sample

        def __call__(self, *a, **k):
            res = den(*a, **k)
            now[0] += res.units_run
            return res

    s.denoiser = Counting()
    try:
        sec = action_seconds(s, plan, [0, 1, 2], [1, 2, 3], repeats=3, clock=lambda: now[0])
    finally:
        s.denoiser = den
    drop = StepAction(drop_blocks=K - 1, fill="cache")
    assert set(sec) == {NO_ACTION, drop}  # a jump is no U-Net action of its own
    full, cut = sec[NO_ACTION], sec[drop]
    assert (full, cut) == (len(NO_ACTION.computes(K)), len(drop.computes(K)))  # the units each ran, by the clock
    want = (5 * full + 3 * cut) / (10 * full)  # 8 evaluations: 3 cut, 5 full (10, 9, 5, 4, 1)
    assert predicted_time_fraction(s, plan, sec) == pytest.approx(want)
    other = 4.0  # seconds per step outside the U-Net
    withb = predicted_time_fraction(s, plan, sec, seconds_baseline=10 * (full + other))
    assert withb == pytest.approx((5 * full + 3 * cut + 8 * other) / (10 * (full + other)))
    from unetscope.shortcut import ShortcutError

    with pytest.raises(ShortcutError, match="every U-Net action of the plan"):
        predicted_time_fraction(s, plan, {NO_ACTION: full})
    # batched by the sampler (2 of 3 seeds a chunk) with one label per seed: the first chunk is timed
    b = Sampler(model, steps=10, guidance=3.0, batch_size=2)
    assert set(action_seconds(b, plan, [0, 1, 2], [1, 2, 3], repeats=1)) == {NO_ACTION, drop}


def test_shortcuts_run_under_ddim(model, tmp_path):
    """The same schedule under DDIM (eta 0): the shortcut's images are the sampler's own output."""
    s = Sampler(model, steps=10, method="ddim", guidance=3.0)
    plan = Plan([DropBlocks(2, 8, 3, "cache"), ReuseEncoder(4, 1), StopEarly(2)])
    seeds, cond = [0, 1], [3, 4]
    summ = run_shortcut(s, plan, seeds, cond, tmp_path, repeats=1)
    assert torch.equal(summ["images_shortcut"], s.sample(seeds, cond, plan).images)
    assert summ["sampler"]["method"] == "ddim" and 0 < summ["compute_saving"] < 1
