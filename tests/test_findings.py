"""Every experiment's findings text says what its figure draws: on a coarse grid (t-step 5 and 10)
and on a fine one, each number in the text is read here from the numbers the figure plotted (the
JSON written beside each PNG), not from the analysis that wrote the text."""

import json
import re

import numpy as np
import pytest

from unetscope.experiments import EXPERIMENTS
from unetscope.experiments.common import t_grid
from unetscope.experiments.phases import smooth_in_steps
from unetscope.plan import DropBlocks, Plan, SkipSteps, ZeroSkips

SEEDS = range(8)
S, K = 50, 6
# the issue's curve (S = 50, n = 2, t-step 5): low at t = 30, below 0.8 for 35..25
ISSUE = {50: 0.958, 45: 0.892, 40: 0.801, 35: 0.786, 30: 0.636, 25: 0.775, 20: 0.935, 15: 0.940, 10: 0.972, 5: 0.977}


def _curve(t):
    """A smooth dip with the issue's shape, for grids the table does not cover."""
    return 0.97 - 0.33 * np.exp(-((t - 30) / 6.0) ** 2) - 0.05 * np.exp(-((t - 12) / 2.0) ** 2)


def _rows(variants_and_means, spread=0.02):
    """Rows of 8 seeds around each mean (the seeds' deviations cancel: the mean is exact)."""
    dev = np.linspace(-spread, spread, len(SEEDS))
    return [dict(seed=s, variant=v, ssim=float(m + dev[i]), psnr=20.0 + 10 * float(m), cond=None)
            for v, m in variants_and_means for i, s in enumerate(SEEDS)]


def _figure(out, name):
    return json.loads((out / name).with_suffix(".json").read_text())


def _run(name, rows, p, out):
    exp = EXPERIMENTS[name]
    f = exp.analyze(rows, p, S, K)
    files = exp.figures(rows, p, S, K, out, {})
    assert files, "no figure"
    return f, f["text"]


def _numbers(text):
    return [float(x) for x in re.findall(r"(?<![\w.])\d+\.\d+|(?<![\w.=])\d+(?![\w.])", text)]


# --- phases -------------------------------------------------------------------------------------
def _phases_rows(t_step, curve):
    ts = t_grid(S, 3, t_step)
    ts1 = t_grid(S, 2, t_step)
    return (_rows([(Plan([SkipSteps(t, 2)]).to_dict(), curve(t)) for t in ts])
            + _rows([(Plan([SkipSteps(t, 1)]).to_dict(), 0.97) for t in ts1]))


def _read_phases(fig, threshold):
    """What the figure draws: the curve the findings read (the dashed one when averaged)."""
    curve = fig["dashed"][0] if fig["dashed"] else next(c for c in fig["curves"] if c["label"] == "n = 2")
    order = np.argsort(curve["x"])[::-1]  # sampling order: t descending
    t = [curve["x"][i] for i in order]
    y = np.array(curve.get("y", curve.get("mean")))[order]
    low = int(np.argmin(y))
    runs, cur = [], None
    for ti, v in zip(t, y):
        if v < threshold:
            cur = [ti, ti] if cur is None else [cur[0], ti]
        elif cur:
            runs.append(cur)
            cur = None
    if cur:
        runs.append(cur)
    return t, y, t[low], y[low], runs


@pytest.mark.parametrize("t_step", [5, 10])
def test_phases_on_a_coarse_grid_reads_the_curve_as_drawn(t_step, tmp_path):
    p = EXPERIMENTS["phases"].resolve(S, K, {"t_step": t_step})
    curve = (lambda t: ISSUE[t]) if t_step == 5 else (lambda t: ISSUE.get(t, float(_curve(t))))
    f, text = _run("phases", _phases_rows(t_step, curve), p, tmp_path)
    fig = _figure(tmp_path, "phases_ssim.png")
    assert not fig["dashed"] and not f["smoothed"]  # a grid coarser than the 5-step window is read as is
    t, y, t_low, y_low, runs = _read_phases(fig, 0.8)
    assert f"hurts most at t = {t_low} (mean SSIM {y_low:.3f})" in text, text
    want = " and ".join(f"t = {a}" if a == b else f"t = {a}..{b}" for a, b in runs)
    assert f"below 0.8 for the starts {want}." in text, text
    if t_step == 5:  # the issue's own numbers
        assert "hurts most at t = 30 (mean SSIM 0.636)" in text and "for the starts t = 35..25." in text
    comp = f["phases"][0]
    assert comp["name"] == "composition" and comp["steps"] == [S, runs[0][1]]  # ends at the first run's last start
    assert f"composition t = {S}..{runs[0][1]}" in text
    # every number of the text's first sentence is a grid start, an SSIM the figure drew, or the threshold
    first = text.split(". ")[0]
    drawn = {round(v, 3) for v in y} | set(t) | {0.8, 2.0}
    assert all(round(v, 3) in drawn for v in _numbers(first)), (first, drawn)


def test_phases_on_a_fine_grid_says_it_averages_and_draws_the_average(tmp_path):
    rng = np.random.default_rng(0)
    noise = {t: float(rng.normal(0, 0.03)) for t in range(1, S + 1)}
    p = EXPERIMENTS["phases"].resolve(S, K, {})
    f, text = _run("phases", _phases_rows(1, lambda t: min(1.0, float(_curve(t)) + noise[t])), p, tmp_path)
    fig = _figure(tmp_path, "phases_ssim.png")
    assert f["smoothed"] and len(fig["dashed"]) == 1 and "averaged over 5 steps" in fig["dashed"][0]["label"]
    raw = next(c for c in fig["curves"] if c["label"] == "n = 2")
    # the dashed line is the raw curve's mean over the starts within 2 steps of each
    want = dict(zip(raw["x"], smooth_in_steps(raw["x"], raw["mean"], 5)))
    assert np.allclose(fig["dashed"][0]["y"], [want[t] for t in fig["dashed"][0]["x"]])
    t, y, t_low, y_low, runs = _read_phases(fig, 0.8)
    assert f"hurts most at t = {t_low} (mean SSIM {y_low:.3f} averaged over 5 steps, the dashed line)" in text, text
    want = " and ".join(f"t = {a}" if a == b else f"t = {a}..{b}" for a, b in runs)
    assert f"the averaged mean SSIM is below 0.8 for the starts {want}." in text, text


def test_smoothing_is_in_steps_not_grid_points():
    t = np.arange(50, 0, -5)
    y = np.array([ISSUE[v] for v in t])
    assert np.array_equal(smooth_in_steps(t, y, 5), y)  # 5-step grid, 5-step window: nothing averaged
    assert np.array_equal(smooth_in_steps(t, y, 9), y)  # +-4 steps still reaches no neighbour
    ten = smooth_in_steps(t, y, 11)  # +-5 steps: each point and its two neighbours
    assert ten[4] == pytest.approx((ISSUE[35] + ISSUE[30] + ISSUE[25]) / 3)
    assert ten[0] == pytest.approx((ISSUE[50] + ISSUE[45]) / 2)  # an end averages what it has


# --- block-utility, consecutive-limit, relax, skip-vs-block, trajectory ---------------------------
def _starts_from(x, mean, threshold):
    """The largest start from which every later start (smaller t) keeps the mean >= threshold."""
    best = None
    for t, m in sorted(zip(x, mean)):
        if m < threshold:
            break
        best = t
    return best


@pytest.mark.parametrize("t_step", [1, 5, 10])
def test_block_utility_reads_its_lines(t_step, tmp_path):
    p = EXPERIMENTS["block-utility"].resolve(S, K, {"t_step": t_step})
    ts = t_grid(S, p["n"], t_step)
    rows = _rows([(Plan([DropBlocks(nb, t, p["n"])]).to_dict(), float(np.clip(1.05 - 0.1 * nb * (t / S) ** 0.5 - 0.3 * (nb == K), 0, 1)))
                  for nb in p["nbs"] for t in ts])
    f, text = _run("block-utility", rows, p, tmp_path)
    fig = _figure(tmp_path, "block_utility_ssim.png")
    heat = _figure(tmp_path, "block_utility_heatmap.png")
    assert heat["rows"] == p["nbs"] and heat["cols"] == sorted(ts, reverse=True)
    seen = 0
    for c in fig["curves"]:
        nb = int(c["label"].split("= ")[1])
        t0 = _starts_from(c["x"], c["mean"], 0.8)
        assert (f"nb={nb}: t <= {t0}" if t0 else f"nb={nb}: never") in text, (nb, t0, text)
        row = heat["values"][heat["rows"].index(nb)]
        assert np.allclose(row, [c["mean"][c["x"].index(t)] for t in heat["cols"]])  # the heat map draws the same means
        seen += t0 is not None
    assert 0 < seen < len(p["nbs"])  # the curves put some nb on each side of the threshold


@pytest.mark.parametrize("t_step", [1, 5, 10])
def test_skip_vs_block_reads_its_curves(t_step, tmp_path):
    p = EXPERIMENTS["skip-vs-block"].resolve(S, K, {"t_step": t_step})
    ts = t_grid(S, p["n"], t_step)
    rows = _rows([(Plan([ZeroSkips(p["ns"], t, p["n"])]).to_dict(), 0.6 + 0.35 * (1 - t / S)) for t in ts]
                 + [(Plan([DropBlocks(p["nb"], t, p["n"])]).to_dict(), float(_curve(t))) for t in ts])
    f, text = _run("skip-vs-block", rows, p, tmp_path)
    fig = _figure(tmp_path, "skip_vs_block_ssim.png")
    z, d = fig["curves"]
    assert z["label"].startswith("ZeroSkips") and d["label"].startswith("DropBlocks")
    assert f"keeps mean SSIM {np.mean(z['mean']):.3f}; dropping the bottom {p['nb']} blocks keeps {np.mean(d['mean']):.3f}" in text
    assert f"Dropping stays at SSIM >= 0.8 from t = {_starts_from(d['x'], d['mean'], 0.8)} down" in text, text
    assert f"zeroing skips from t = {_starts_from(z['x'], z['mean'], 0.8)} down" in text, text


@pytest.mark.parametrize("t_step", [1, 5, 10])
def test_trajectory_reads_its_curve(t_step, tmp_path):
    p = EXPERIMENTS["trajectory"].resolve(S, K, {"t_step": t_step})
    ts = EXPERIMENTS["trajectory"].trajectory_steps(p, S)
    rows = _rows([({"type": "x_est0", "t": t}, float(np.clip(1.02 - 0.9 * t / S, 0, 1))) for t in ts]
                 + [({"type": "x_t", "t": t}, 0.5) for t in ts], spread=0.01)
    f, text = _run("trajectory", rows, p, tmp_path)
    fig = _figure(tmp_path, "trajectory_ssim_est0.png")
    c = fig["curves"][0]
    good = _starts_from(c["x"], c["mean"], 0.9)
    assert good and f"from t = {good} on" in text and f"saves {good - 1} of {S} evaluations" in text, text
    assert fig["vlines"] == [dict(x=good, label=f"t={good}")]


@pytest.mark.parametrize("n_max", [4, 15])
def test_consecutive_limit_reads_its_curves(n_max, tmp_path):
    p = EXPERIMENTS["consecutive-limit"].resolve(S, K, {"starts": json.dumps({"2": 30, "4": 20}), "nbs": "[2, 4]",
                                                         "n_max": n_max})
    rows = _rows([(Plan([DropBlocks(nb, p["starts"][str(nb)], n)]).to_dict(), 0.98 - 0.03 * n * nb / 2)
                  for nb in (2, 4) for n in range(1, n_max + 1)])
    f, text = _run("consecutive-limit", rows, p, tmp_path)
    fig = _figure(tmp_path, "consecutive_limit.png")
    for c in fig["curves"]:
        nb = int(re.match(r"nb = (\d+)", c["label"]).group(1))
        lim = max([n for n in c["x"] if all(m >= 0.8 for x, m in zip(c["x"], c["mean"]) if x <= n)], default=0)
        assert f"nb={nb} from t={p['starts'][str(nb)]}: n <= {lim}" in text, (nb, lim, text)


def test_relax_reads_its_curve(tmp_path):
    p = EXPERIMENTS["relax"].resolve(S, K, {"start": 30, "n": 3, "nb": 3, "r_max": 12})
    rows = _rows([(Plan([DropBlocks(3, 30, 3), DropBlocks(3, 30 - 3 - r, 3)]).to_dict(), 0.7 + 0.03 * r)
                  for r in range(0, 13)])
    f, text = _run("relax", rows, p, tmp_path)
    c = _figure(tmp_path, "relax.png")["curves"][0]
    r_min = min(r for r in c["x"] if all(m >= 0.8 for x, m in zip(c["x"], c["mean"]) if x >= r))
    assert f"r >= {r_min} keeps mean SSIM >= 0.8" in text, (r_min, text)
