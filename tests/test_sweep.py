"""The sweep engine: prefix sharing is exact and minimal; runs resume after a kill; figures and
the report are written."""

import json
import sqlite3
import subprocess
import sys

import pytest
import torch

from conftest import kill_when_stored
from unetscope import DropBlocks, Plan, ReuseEncoder, Sampler, SkipSteps, StopEarly, ZeroSkips, load_model
from unetscope.sweep import SweepEngine, count_evaluations


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


PLANS = [Plan([DropBlocks(2, 6, n)]) for n in (1, 2, 3)] + [
    Plan([SkipSteps(9, 2)]), Plan([ZeroSkips(2, 8, 3)]), Plan([DropBlocks(3, 7, 3, fill="cache")]),
    Plan([DropBlocks(3, 7, 3, fill="cache"), StopEarly(3)]), Plan([StopEarly(5)]),
    Plan([SkipSteps(12, 1), DropBlocks(2, 10, 2, fill="cache")]),
    # encoder propagation: alone, every 2nd step, after a jump, beside a cache cut and a zeroed skip
    Plan([ReuseEncoder(9, 3)]), Plan([ReuseEncoder(t, 1) for t in (11, 9, 7, 5, 3)]),
    Plan([SkipSteps(10, 2), ReuseEncoder(7, 2)]), Plan([ReuseEncoder(8, 2), DropBlocks(2, 6, 2, fill="cache")]),
    Plan([ReuseEncoder(8, 2), ZeroSkips(1, 8, 1)]), Plan([ReuseEncoder(6, 3), DropBlocks(1, 5, 1, fill="cache")])]


def test_prefix_sharing_is_bitwise_equal_to_running_each_plan(model):
    s = Sampler(model, steps=12, guidance=3.0)
    seeds, cond = [0, 1, 2], [1, 2, 3]
    res = SweepEngine(s, max_batch=len(seeds)).run_chunk(seeds, cond, PLANS)
    assert torch.equal(res.baseline_x0, s.sample(seeds, cond).x0)
    for plan, x0 in zip(PLANS, res.finals):
        assert torch.equal(x0, s.sample(seeds, cond, plan).x0), plan
    # stacking plans into larger batches only moves float rounding
    stacked = SweepEngine(s).run_chunk(seeds, cond, PLANS)
    for a, b in zip(res.finals, stacked.finals):
        assert torch.allclose(a, b, atol=1e-4)


def test_evaluations_spent_equal_the_minimum_counted_by_hand(model):
    s = Sampler(model, steps=10)
    plans = [Plan([DropBlocks(2, 6, n)]) for n in (1, 2, 3)]
    # baseline 10; n=1 diverges at 6 (6 evaluations); n=2 shares step 6, then 5; n=3 shares 6 and 5, then 4
    assert count_evaluations(plans, 10) == (10 + 6 + 5 + 4, 40)
    assert SweepEngine(s).run_chunk([0, 1], None if model.conditioning == "none" else [0, 1], plans).evaluations == 25
    # a jump or a stop at a plan's first step reuses the baseline's evaluation there
    plans = [Plan([SkipSteps(8, 2)]), Plan([StopEarly(4)])]
    # baseline 10; the jump from 8 lands on 5: 5 more evaluations; the stop costs none
    assert count_evaluations(plans, 10) == (15, 10 + 8 + 7)
    assert SweepEngine(s).run_chunk([0], [4], plans).evaluations == 15
    # ReuseEncoder changes the U-Net: its plans diverge at their first step and share what they agree on
    plans = [Plan([ReuseEncoder(6, 1)]), Plan([ReuseEncoder(6, 2)]), Plan([ReuseEncoder(6, 1), ReuseEncoder(4, 1)])]
    # baseline 10; the three share step 6 (one evaluation), then 5 runs plain for the 1st and 3rd (shared)
    # and reused for the 2nd; below: 1st 4..1 (4), 3rd reuses at 4 then 3..1 (4), 2nd 4..1 (4)
    assert count_evaluations(plans, 10) == (10 + 1 + 2 + 4 + 4 + 4, 40)
    assert SweepEngine(s).run_chunk([0], [4], plans).evaluations == 25


def _sweep_cmd(model_dir, out, *extra):
    return [sys.executable, "-m", "unetscope.cli", "sweep", "block-utility", "--model", str(model_dir), "--steps", "10",
            "--samples", "4", "--chunk-size", "1", "--out", str(out), "--quiet", "--threads", "1", *extra]
    # one thread here and in the killed process: the same rounding, so the resumed rows equal the whole run's


def _rows(db):
    with sqlite3.connect(db) as c:
        return sorted(c.execute("SELECT run, seed, variant_id, variant, cond, ssim, psnr FROM results"))


def _in_process(cmd, capsys):
    """A ``python -m unetscope.cli ...`` command line run in this process: (code, stdout, stderr)."""
    from conftest import run_cli

    return run_cli(cmd[3:], capsys)


def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_model_dir, tmp_path, capsys):
    """The sweep that is killed is a process of its own; the reference and the resumed call run here."""
    whole = tmp_path / "whole"
    code, _, err = _in_process(_sweep_cmd(tiny_model_dir, whole), capsys)
    assert code == 0, err
    killed = tmp_path / "killed"
    p = subprocess.Popen(_sweep_cmd(tiny_model_dir, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = killed / "results.sqlite"
    n = kill_when_stored(lambda: p.pid, db, 2, until=lambda: p.poll() is not None)  # once some chunks are stored
    p.wait()
    assert 2 <= n < 4, "the sweep was not interrupted partway"
    partial = _rows(db)
    seconds_killed = _seconds(db)
    assert seconds_killed > 0  # the sampling time of the stored chunks is kept across the kill
    code, out, err = _in_process(_sweep_cmd(tiny_model_dir, killed), capsys)
    assert code == 0, err
    final = _rows(db)
    assert final == _rows(whole / "results.sqlite")
    assert set(partial) <= set(final)  # nothing stored was lost or changed
    spent = re_spent(out)
    assert spent["now"] < spent["total"]  # the resumed call did not redo the stored chunks
    assert _seconds(db) > seconds_killed and "over every call of this run" in out


def _seconds(db):
    from unetscope.store import ResultStore

    with ResultStore(db) as st:
        return sum(st.stats(r["run"]).get("seconds", 0) for r in st.runs())


def re_spent(text):
    import re

    m = re.search(r"evaluations spent (\d+) \(this call (\d+)\)", text)
    return {"total": int(m.group(1)), "now": int(m.group(2))}


def test_all_experiments_figures_and_report(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "rep"
    code, _, err = _in_process([sys.executable, "-m", "unetscope.cli", "reproduce", "--model", str(tiny_model_dir), "--steps",
                                "10", "--samples", "2", "--t-step", "3", "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    html = (out / "report.html").read_text()
    findings = sorted((out / "findings").glob("*.json"))
    assert {json.loads(f.read_text())["experiment"] for f in findings} == {
        "trajectory", "phases", "skip-vs-block", "block-utility", "consecutive-limit", "relax", "feature-change"}
    n_figs = 0
    for f in findings:
        for fig in json.loads(f.read_text())["figures"]:
            path = out / fig["file"]
            assert path.stat().st_size > 5000, path  # a rendered PNG, not an empty file
            assert f"src='{fig['file']}'" in html
            n_figs += 1
    assert n_figs >= 15
    # exports
    code, _, err = _in_process([sys.executable, "-m", "unetscope.cli", "report", str(out), "--csv", "--parquet"], capsys)
    assert code == 0, err
    assert (out / "results.csv").read_text().startswith("run,seed,variant,cond,ssim,psnr")
    import pandas as pd

    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == len((out / "results.csv").read_text().splitlines()) - 1 and df["ssim"].notna().sum() > 0


def test_sweep_bad_input(tiny_model_dir, tmp_path, capsys):
    from unetscope.cli import main

    for argv, msg in [(["--param", "nbs=[9]"], "nbs must be a non-empty list of integers in 1..4"),
                      (["--param", "nbs=3"], "nbs must be a non-empty list"),
                      (["--chunk-size", "0"], "chunk_size must be an integer >= 1"),
                      (["--param", "threshold=2"], "threshold must be in (0, 1]"),
                      (["--param", "zzz=1"], "has no parameter 'zzz'"),
                      (["--t-step", "0"], "t_step must be an integer >= 1")]:
        code = main(["sweep", "block-utility", "--model", str(tiny_model_dir), "--steps", "10", "--samples", "2",
                     "--out", str(tmp_path / "o"), "--quiet", *argv])
        err = capsys.readouterr().err
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    code = main(["report", str(tmp_path / "nothing")])
    assert code == 2 and "holds no results.sqlite" in capsys.readouterr().err


def test_analyses_on_synthetic_rows():
    from unetscope.experiments.relax import Relax

    # relax: the smallest r from which every longer relaxation holds (a lucky r = 0 does not count)
    rows = [{"variant": {"interventions": [{"type": "DropBlocks", "nb": 2, "start": 60, "n": 5, "fill": "zeros"},
                                           {"type": "DropBlocks", "nb": 2, "start": 60 - 5 - r, "n": 5, "fill": "zeros"}]},
             "seed": 0, "ssim": v, "psnr": 20.0} for r, v in [(0, 0.85), (1, 0.7), (2, 0.75), (3, 0.82), (4, 0.9)]]
    f = Relax().analyze(rows, {"threshold": 0.8, "nb": 2, "start": 60, "n": 5, "r_max": 4, "k": 1.0}, 100, 12)
    assert f["r_min"] == 3


@pytest.mark.parametrize("shape, curve, b1, b2, names", [
    # the paper's shape: low at the start, recovering, a dip in the middle, denoising at the end
    ("peak in the middle", [0.3, 0.6, 0.9, 0.8, 0.7, 0.6, 0.65, 0.8, 0.9, 0.95], 90, 50,
     ["composition", "transition", "denoising"]),
    # the research MNIST model's shape: its first point is its peak, the identity changes later
    ("peak at the start", [0.97, 0.9, 0.7, 0.5, 0.6, 0.85, 0.9, 0.93, 0.95, 0.97], 60, None, ["composition", "denoising"]),
    # monotone: removing steps costs less and less
    ("monotone", [0.4, 0.6, 0.75, 0.85, 0.88, 0.9, 0.93, 0.95, 0.97, 0.99], 80, None, ["composition", "denoising"]),
    # never below the threshold: no composition phase
    ("always above", [0.85, 0.9, 0.92, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99, 0.99], None, None, ["denoising"]),
])
def test_phase_segmentation_on_synthetic_curves(shape, curve, b1, b2, names):
    from unetscope.experiments.phases import Phases, segment_phases

    ts = list(range(100, 0, -10))
    seg = segment_phases(ts, curve, threshold=0.8, smooth=1)
    assert (seg["b1"], seg["b2"]) == (b1, b2), shape
    assert [ph["name"] for ph in seg["phases"]] == names
    assert seg["phases"][0]["steps"][0] == 100 and seg["phases"][-1]["steps"][1] == 1  # they tile the steps
    assert seg["lowest"]["ssim"] == min(curve)
    rows = [{"variant": {"interventions": [{"type": "SkipSteps", "start": t, "n": n}]}, "seed": 0,
             "ssim": v if n == 5 else 0.99, "psnr": 30.0} for t, v in zip(ts, curve) for n in (1, 5)]
    text = Phases().analyze(rows, dict(n_values=[1, 5], smooth=1, threshold=0.8, k=1.0, t_step=10), 100, 12)["text"]
    assert text.startswith(f"Removing n=5 steps hurts most at t = {seg['lowest']['t']}")
    assert ("the paper's three phases" in text) == (len(names) == 3)
    assert segment_phases([], [], 0.8) is None


def test_ssim_band_is_capped_at_one():
    from unetscope.experiments.common import band

    lo, hi = band([0.9, 0.5], [0.2, 0.1], 1.0, band_max=1.0)
    assert lo.tolist() == pytest.approx([0.7, 0.4]) and hi.tolist() == pytest.approx([1.0, 0.6])
    lo, hi = band([20.0], [3.0], 2.0)  # PSNR: no cap
    assert (lo.item(), hi.item()) == (14.0, 26.0)


def test_report_includes_shortcut_runs(tiny_model_dir, tmp_path, capsys):
    from unetscope.cli import main

    out = tmp_path / "mix"
    common = ["--model", str(tiny_model_dir), "--steps", "10", "--samples", "2", "--out", str(out), "--quiet"]
    assert main(["report", str(out)]) == 2 and "holds no results.sqlite" in capsys.readouterr().err
    assert main(["shortcut", "--preset", "paper", *common]) == 0
    assert main(["sweep", "trajectory", *common]) == 0
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert "Shortcut sampler" in html and all(f"src='{f}'" in html for f in summary["figures"])


def test_auto_max_batch_fits_the_device_budget(model):
    from unetscope.sweep import AUTO_PIXELS, auto_max_batch

    c, h, w = model.sample_shape
    for guidance, per_sample in ((3.0, 2), (1.0, 1)):
        s = Sampler(model, steps=10, guidance=guidance)
        per = auto_max_batch(s, 1)
        assert per * per_sample * h * w <= AUTO_PIXELS["cpu"] < (per + 1) * per_sample * h * w
        assert auto_max_batch(s, 10 * per) == 10 * per  # a call always holds at least one chunk
