"""The frontier search (#36): the fastest recipe over solvers, step counts and cuts against a reference.

Two versions of the trained research-style U-Net (examples/mnist_unet.py) decide the two outcomes.
Each carries the same extra work, ten times the U-Net's own per evaluation, which a work clock
counts and which changes no tensor (its images are the model's own, bitwise): in one it sits after
the head, which no cut removes, so a fewer-step solver must win; in the other after the middle
block, so caching the deep part removes most of a step's work and a stacked recipe must win. Time
is read off the work clock (the multiply-adds the convolutions and linear layers ran, and the extra
work), so the choice does not depend on the machine's load: the same calls give the same result,
twice.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import unetscope as us
from unetscope.shortcut import SearchConfig
from unetscope.shortcut.frontier import FrontierConfig, fewest_steps, frontier, parse_reference, parse_solvers

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Ballast(nn.Module):
    """Work that changes nothing: the clock counts ``work`` multiply-adds per sample that passes,
    as a block of that size would run; the tensor passes through unchanged."""

    def __init__(self, work: int):
        super().__init__()
        self.work = work

    def forward(self, h):
        return h


class Weighted:
    """The research U-Net's units with a ``Ballast`` after the middle block or after the head."""

    def __init__(self, units, where: str):
        self.units, self.where, self.num_blocks = units, where, units.num_blocks
        self.ballast = Ballast(0)

    def __getattr__(self, name):
        return getattr(self.units, name)

    def _ballast(self, h):
        return self.ballast(h)

    def middle(self, h, ctx):
        h = self.units.middle(h, ctx)
        return self._ballast(h) if self.where == "middle" else h

    def head(self, h, ctx):
        h = self.units.head(h, ctx)
        return self._ballast(h) if self.where == "head" else h


def weighted_model(where: str):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("mnist_unet", Path(__file__).parents[1] / "examples" / "mnist_unet.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    base = ex.make_model()
    w = Weighted(base.runner.units, where)
    model = us.wrap(w, name=f"mnist-unet, work in the {where}", **ex.SETTINGS)
    own = WorkClock(w.units.net)
    model.runner(torch.zeros(1, *model.sample_shape), torch.tensor([500]), None)
    w.ballast.work = 10 * own.work  # ten times the U-Net's own work per evaluation of a sample
    own.close()
    return model, w


class WorkClock:
    """Seconds as the multiply-adds run: every Conv2d and Linear of a module adds its count."""

    def __init__(self, module: nn.Module, per_second: float = 1e9):
        self.work, self.rate = 0, per_second
        self.hooks = [m.register_forward_hook(self._count) for m in module.modules()
                      if isinstance(m, (nn.Conv2d, nn.Linear, Ballast))]

    def _count(self, mod, inputs, out):
        self.work += out.shape[0] * mod.work if isinstance(mod, Ballast) else out.numel() * mod.weight[0].numel()

    def __call__(self) -> float:
        return self.work / self.rate

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


def _run(made, target, reference=("ddim", 20), solvers=("ddim", "dpm++"), seeds=range(12), **kw):
    model, units = made
    base = us.Sampler(model, steps=reference[1], method=reference[0])
    clock = WorkClock(nn.ModuleList([units.units.net, units.ballast]))
    cfg = FrontierConfig(reference=reference, solvers=solvers, search=SearchConfig(target_mean=target, max_rounds=4),
                         repeats=2, warmup=1, stack_top=1, **kw)
    seeds = list(seeds)
    k = len(seeds) // 3
    try:
        return frontier(base, seeds[:k], None, cfg, validation_seeds=seeds[k:2 * k], held_out_seeds=seeds[2 * k:],
                        clock=clock)
    finally:
        clock.close()


@pytest.fixture(scope="module")
def top_heavy():
    """The extra work after the head: no cut removes it."""
    return weighted_model("head")


@pytest.fixture(scope="module")
def deep_heavy():
    """The extra work in the middle block: a cut of the deep part removes it."""
    return weighted_model("middle")


@pytest.fixture(scope="module")
def top_result(top_heavy):
    return _run(top_heavy, 0.95)


@pytest.fixture(scope="module")
def deep_result(deep_heavy):
    return _run(deep_heavy, 0.95)


@pytest.mark.slow
def test_a_fewer_step_solver_wins_where_cuts_save_little(top_result):
    res = top_result
    r = res["recipe"]
    assert not r.plan, f"expected the solver alone, got {r.describe()}"
    best = res["best_solver"]
    assert res["chosen"]["label"] == best["label"] and r.steps < 20
    # it is the fastest of the solvers that hold, each at its fewest steps
    alone = [c for c in res["candidates"] if c["kind"] == "solver"]
    assert {c["recipe"]["scheduler"] for c in alone} == {"ddim", "dpm++"}
    assert min(c["timing"]["median"] for c in alone) == best["timing"]["median"]
    # cuts were searched (stacked and alone) and lost: none saves the min_gain where the work sits
    assert any(c["kind"] == "stacked" for c in res["candidates"]) and res["best_cache"] is not None
    # the held-out seeds only measured it: the reference's time against the chosen one's
    held = res["held_out"]
    assert held["chosen"]["time_fraction"] < 1 and held["chosen"]["ssim_mean"] > 0.8


@pytest.mark.slow
def test_caching_wins_where_the_deep_blocks_dominate(deep_result):
    res = deep_result
    r = res["recipe"]
    assert r.plan, f"expected a stacked recipe, got {r.describe()}"
    assert res["chosen"]["kind"] == "stacked"
    chosen, best = res["chosen"]["timing"]["median"], res["best_solver"]["timing"]["median"]
    assert chosen < best * 0.95  # kept only where it beats the best solver alone by more than min_gain
    assert res["held_out"]["chosen"]["time_fraction"] < res["held_out"]["best solver alone"]["time_fraction"]


def test_fewest_steps_bisects_to_the_crossing():
    calls = []

    def score(n):
        calls.append(n)
        return np.array([min(1.0, n / 37)])

    n, probed = fewest_steps(score, lambda ss: ss.mean() >= 0.5, 100)
    assert n == 19 and set(calls) == set(probed) and len(calls) <= 9
    assert fewest_steps(lambda n: np.array([0.1]), lambda ss: ss.mean() >= 0.5, 50)[0] is None
    # a solver that cannot take a step count (None) counts as missing it
    assert fewest_steps(lambda n: None if n < 5 else np.array([1.0]), lambda ss: True, 30)[0] == 5


def test_parsing_the_reference_and_the_solvers():
    assert parse_reference("ddim:100") == ("ddim", 100)
    assert parse_solvers("ddim,dpm++:20", reference_steps=50) == (("ddim", None), ("dpm++", 20))
    for bad in ("ddim", "ddim:0", "ddim:x", ":5", "a:b:c"):
        with pytest.raises(us.UnetscopeError):
            parse_reference(bad)
    with pytest.raises(us.UnetscopeError, match="unknown solver 'nope'"):
        parse_solvers("ddim,nope")
    with pytest.raises(us.UnetscopeError, match="more steps than the reference"):
        parse_solvers("dpm++:200", reference_steps=100)


def test_the_held_out_seeds_never_choose(top_heavy):
    """Other held-out seeds: the same choice and the same candidates, only the held-out figures move."""
    kw = dict(solvers=("dpm++",), adaptive=False, cache_alone=False)
    a = _run(top_heavy, 0.95, seeds=[0, 1, 2, 3, 4, 5, 6, 7, 8], **kw)
    b = _run(top_heavy, 0.95, seeds=[0, 1, 2, 3, 4, 5, 9, 10, 11], **kw)
    assert a["recipe"] == b["recipe"] and a["candidates"] == b["candidates"] and a["curves"] == b["curves"]
    assert a["seeds"] == dict(calibration=3, validation=3, held_out=3)
    assert a["held_out"]["seeds"] == [6, 7, 8] and a["held_out"]["chosen"]["ssim"] != b["held_out"]["chosen"]["ssim"]


@pytest.mark.slow
def test_a_recipe_from_the_search_runs_through_schedule_with_the_held_out_images(deep_heavy, deep_result, tmp_path):
    from unetscope.plan_file import read_recipe, write_recipe

    res = deep_result
    r = res["recipe"]
    path = write_recipe(tmp_path / "recipe.json", r)
    back = read_recipe(path)
    assert back == r and back.reference == dict(scheduler="ddim", steps=20, options={})
    held = res["held_out"]
    summ = us.measure_shortcut(deep_heavy[0], tmp_path / "run", schedule=str(path), seeds=held["seeds"], repeats=1,
                               rival=False)
    assert torch.equal(summ["images_shortcut"].float().cpu(), held["images"])  # the search's held-out run, bitwise
    assert [p["ssim"] for p in summ["per_sample"]] == pytest.approx(held["chosen"]["ssim"], abs=1e-6)
    assert summ["baseline_sampler"]["steps"] == 20 and summ["sampler"]["steps"] == r.steps


@pytest.mark.slow
def test_evaluations_are_reported_against_the_minimum(top_result):
    res = top_result
    assert 0 < res["evaluations_minimum"] <= res["evaluations"]
    assert res["reference_evaluations"] == 2 * 20  # the reference on the calibration and the validation seeds


def test_the_cli_frontier_writes_the_recipe_the_record_and_the_figure(tmp_path, capsys):
    from tests.conftest import run_cli

    out = tmp_path / "fr"
    code, stdout, err = run_cli(["shortcut", "search", "--frontier", "--model", "examples/mnist_unet.py:make_model",
                                 "--reference", "ddim:12", "--solvers", "dpm++,unipc", "--target-mean", "0.9",
                                 "--samples", "9", "--calibration", "3", "--validation", "3", "--rounds", "1",
                                 "--repeats", "1", "--out", out, "--quiet"], capsys)
    assert code == 0, err
    assert "frontier search for mean SSIM >= 0.9 against DDIM at 12 steps: chosen on 3 calibration and 3 validation " \
           "seeds; 3 held-out seeds only measured" in stdout
    assert "chosen:" in stdout and "held out: mean SSIM" in stdout and "of the reference's" in stdout
    rec = us.read_recipe(out / "recipe.json")
    assert rec.scheduler in ("dpm++", "unipc", "ddim") and rec.reference["steps"] == 12
    record = json.loads((out / "frontier.json").read_text())
    assert record["seeds_used"] == dict(calibration=[0, 1, 2], validation=[3, 4, 5], held_out=[6, 7, 8])
    assert (out / "figures" / "frontier.png").stat().st_size > 10_000
    data = json.loads((out / "figures" / "frontier.json").read_text())
    assert data["kind"] == "frontier" and set(data["lines"]) <= {"DPM-Solver++", "UniPC"} and data["lines"]


@pytest.mark.parametrize("argv, msg", [
    (["--solvers", "ddim,nope"], "unknown solver 'nope'"),
    (["--reference", "ddim:10", "--solvers", "dpm++:20"], "more steps than the reference"),
    (["--budget", "0.5", "--target-mean", "0.9"], "--budget is the plain search's"),
    (["--budget", "0.5"], "--budget is the plain search's"),
    (["--reference", "ddim"], "SCHEDULER:STEPS"),
    (["--reference", "ddim:10", "--steps", "20"], "disagree with --reference"),
    (["--adaptive"], "leave --adaptive out"),
])
def test_bad_frontier_input_is_one_line_exit_2_nothing_written(argv, msg, tmp_path, capsys):
    from tests.conftest import run_cli

    out = tmp_path / "never"
    code, stdout, err = run_cli(["shortcut", "search", "--frontier", "--model", "examples/mnist_unet.py:make_model",
                                 "--out", out, *argv], capsys)
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_reference_and_solvers_need_frontier(tmp_path, capsys):
    from tests.conftest import run_cli

    code, _, err = run_cli(["shortcut", "search", "--model", "examples/mnist_unet.py:make_model", "--solvers", "dpm++",
                            "--out", tmp_path / "x"], capsys)
    assert code == 2 and "add --frontier" in err and not (tmp_path / "x").exists()
    code, _, err = run_cli(["shortcut", "run", "--model", "examples/mnist_unet.py:make_model", "--preset", "paper",
                            "--frontier", "--out", tmp_path / "y"], capsys)
    assert code == 2 and "--frontier is for shortcut search --frontier" in err


def test_a_shortcut_run_names_its_rival(tmp_path, capsys):
    from tests.conftest import run_cli

    code, stdout, err = run_cli(["shortcut", "run", "--model", "examples/mnist_unet.py:make_model", "--preset",
                                 "paper-cache", "--scheduler", "ddim", "--steps", "20", "--samples", "4", "--repeats", "1",
                                 "--out", tmp_path / "r", "--quiet"], capsys)
    assert code == 0, err
    line = [ln for ln in stdout.splitlines() if "rival:" in ln]
    assert len(line) == 1 and "DPM-Solver++ at" in line[0] and "of the time" in line[0], stdout
    summ = json.loads((tmp_path / "r" / "summary.json").read_text())
    r = summ["rival"]
    assert r["found"] and 1 <= r["steps"] <= 20 and r["ssim_mean"] >= summ["ssim_mean"]
    # the bisection's answer: one step fewer keeps less than the shortcut's SSIM (or is below one step)
    below = r["probed"].get(str(r["steps"] - 1))
    assert r["steps"] == 1 or below is None or below < summ["ssim_mean"]


def test_a_stochastic_reference_says_no_solver_follows_its_noise(tmp_path, capsys):
    from tests.conftest import run_cli

    code, stdout, err = run_cli(["shortcut", "run", "--model", "examples/mnist_unet.py:make_model", "--preset",
                                 "paper-cache", "--scheduler", "ddpm", "--steps", "10", "--samples", "3", "--repeats", "1",
                                 "--out", tmp_path / "r", "--quiet"], capsys)
    assert code == 0, err
    line = [ln for ln in stdout.splitlines() if "rival:" in ln][0]
    summ = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert not summ["rival"]["found"] and summ["rival"]["stochastic"]
    assert "no DPM-Solver++ run of at most 10 steps keeps a mean SSIM of" in line and "per-step noise is its own" in line


def test_candidates_of_one_solver_share_their_prefixes_against_a_reference(top_heavy):
    """score_plans against another sampler's images: the solver alone is the sweep's own baseline, and
    the cut candidates of one solver and step count cost the minimum of evaluations, not one run each."""
    from unetscope.plan import DropBlocks
    from unetscope.shortcut import score_plans
    from unetscope.sweep import count_evaluations

    model = top_heavy[0]
    s = us.Sampler(model, steps=10, method="dpm++")
    seeds = [0, 1, 2]
    ref = model.decode(us.Sampler(model, steps=20, method="ddim").sample(seeds).x0)
    a = us.Plan([DropBlocks(2, 6, 2, "cache")])
    b = us.Plan([DropBlocks(2, 6, 2, "cache"), DropBlocks(3, 3, 1, "cache")])
    ss, spent = score_plans(s, [us.Plan(), a, b], seeds, reference=ref)
    minimum, naive = count_evaluations([a, b], 10, s.calls)
    assert spent == minimum < naive
    for row, plan in zip(ss, [None, a, b]):  # each row is what running that candidate alone gives
        alone = us.ssim(model.decode(s.sample(seeds, None, plan).x0), ref).numpy()
        assert row == pytest.approx(alone, abs=1e-5)
    with pytest.raises(us.UnetscopeError, match="2 reference images for 3 seeds"):
        score_plans(s, [a], seeds, reference=ref[:2])
