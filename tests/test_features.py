"""feature-change: each unit's step-to-step change, streamed. Its rows equal a hand computation from
every step's captured activations, and the memory held does not grow with the number of steps."""

import sqlite3

import pytest
import torch

import unetscope as us
from conftest import run_cli
from unetscope.features import FeatureTracker, unit_sites


def _stored(out):
    import json

    with sqlite3.connect(out / "results.sqlite") as c:
        rows = c.execute("SELECT seed, variant, extra FROM results").fetchall()
    return {(seed, json.loads(v)["site"], json.loads(v)["t"]): json.loads(e)
            for seed, v, e in rows if json.loads(v).get("type") == "feature-change"}


def test_rows_equal_a_hand_computation(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "fc"
    code, stdout, err = run_cli(["sweep", "feature-change", "--model", tiny_model_dir, "--steps", "6", "--samples", "3",
                                 "--class", "2", "--guidance", "2", "--chunk-size", "2", "--out", out, "--quiet"], capsys)
    assert code == 0, err
    assert "change least" in stdout
    got = _stored(out)
    m = us.load_model(tiny_model_dir)
    K = m.num_blocks
    s = us.Sampler(m, steps=6, guidance=2.0)
    acts = {}
    for d in s.sample_progressive([0, 1, 2], 2, capture=unit_sites(K)):  # every step kept, by hand
        acts[d["t"]] = {k: v.clone().double() for k, v in d["cache"].items() if k in unit_sites(K)}
    assert len(got) == 3 * len(unit_sites(K)) * 5  # steps 5..1 against the step before
    for t in range(5, 0, -1):
        for site in unit_sites(K):
            a, b = acts[t][site], acts[t + 1][site]
            for i in range(3):  # sample i owns rows 2i and 2i+1 (guided and unguided)
                x, y = a[2 * i:2 * i + 2].flatten(), b[2 * i:2 * i + 2].flatten()
                rel = float((x - y).abs().sum() / y.abs().sum())
                cos = float(x @ y / (x.norm() * y.norm()))
                e = got[(i, site, t)]
                assert e["rel_l1"] == pytest.approx(rel, rel=1e-4, abs=1e-6), (site, t, i)
                assert e["cos"] == pytest.approx(cos, abs=1e-5), (site, t, i)
    # the figures and the findings are there
    figs = sorted(p.name for p in (out / "figures").rglob("*.png"))
    assert figs == ["feature_change_cosine.png", "feature_change_heatmap.png", "feature_change_units.png"]


def test_memory_is_two_steps_whatever_s(tiny_model_dir):
    m = us.load_model(tiny_model_dir)
    K = m.num_blocks
    peaks = []
    for S in (4, 24):
        tr = FeatureTracker(K)
        for d in us.Sampler(m, steps=S).sample_progressive([0, 1], 1, capture=tr.sites):
            tr.step(d["t"], d["cache"], 2)
        peaks.append(tr.peak_tensors)
        assert len(tr.stats) == (S - 1) * (2 * K + 1)
    assert peaks == [2 * (2 * K + 1)] * 2


def test_a_one_step_sampler_is_refused(tiny_model_dir, tmp_path, capsys):
    code, _, err = run_cli(["sweep", "feature-change", "--model", tiny_model_dir, "--steps", "1", "--samples", "1",
                            "--class", "1", "--out", tmp_path / "o", "--quiet"], capsys)
    assert code == 2 and "needs S >= 2" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_change_schedule_follows_block_cachings_rule():
    from unetscope.plan import DropBlocks, Plan
    from unetscope.shortcut import ShortcutError, change_schedule

    # S = 8: change of D[nb-1] at t from t + 1; accumulated until it exceeds 0.25, then computed
    ch = {7: 0.1, 6: 0.1, 5: 0.1, 4: 0.3, 3: 0.05, 2: 0.05, 1: 0.2}
    # t=7 acc .1 cache; 6 .2 cache; 5 .3 compute; 4 .3 compute; 3 .05 cache; 2 .1 cache; 1 .3 compute
    assert change_schedule(ch, 8, 2, 0.25) == Plan([DropBlocks(2, 7, 2, "cache"), DropBlocks(2, 3, 2, "cache")])
    assert change_schedule(ch, 8, 2, 0.0) == Plan()  # every step computes
    assert len(list(change_schedule(ch, 8, 2, 10.0))) == 1  # one cut from step 7 to 1
    for bad in (-1, float("nan"), float("inf"), "0.1"):
        with pytest.raises(ShortcutError, match="finite number >= 0"):
            change_schedule(ch, 8, 2, bad)
    with pytest.raises(ShortcutError, match="step 4 is missing"):
        change_schedule({k: v for k, v in ch.items() if k != 4}, 8, 2, 0.1)


def test_change_preset_end_to_end(tiny_model_dir, tmp_path, capsys):
    import json

    out = tmp_path / "ch"
    code, stdout, err = run_cli(["shortcut", "--preset", "change", "--threshold", "0.3", "--nb", "2", "--model",
                                 tiny_model_dir, "--steps", "8", "--samples", "2", "--class", "1", "--repeats", "1",
                                 "--out", out, "--quiet"], capsys)
    assert code == 0, err
    summ = json.loads((out / "summary.json").read_text())
    assert summ["name"] == "change (threshold 0.3, nb 2)"
    cuts = summ["schedule"]["interventions"]
    assert cuts and all(c["type"] == "DropBlocks" and c["nb"] == 2 and c["fill"] == "cache" for c in cuts)
    # the schedule is the rule applied to the change measured on seeds 2..9 (apart from the measured 0, 1)
    from unetscope.plan import Plan
    from unetscope.shortcut import change_schedule, feature_changes

    m = us.load_model(tiny_model_dir)
    ch = feature_changes(us.Sampler(m, steps=8, guidance=3.0), list(range(2, 10)), 1, ["D[1]"])["D[1]"]  # the CLI default
    assert Plan.from_dict(summ["schedule"]) == change_schedule(ch, 8, 2, 0.3)
    for argv, msg in [(["--preset", "change"], "--preset change needs --threshold X"),
                      (["--preset", "paper", "--threshold", "0.2"], "--threshold and --nb are the change preset's"),
                      (["--preset", "change", "--threshold", "-1"], "--threshold must be a finite number >= 0"),
                      (["--preset", "change", "--threshold", "0.1", "--nb", "9"], "nb must be in 1..4")]:
        code, _, err = run_cli(["shortcut", *argv, "--model", tiny_model_dir, "--steps", "8", "--samples", "1",
                                "--class", "1", "--out", tmp_path / "bad", "--quiet"], capsys)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert not (tmp_path / "bad").exists()
