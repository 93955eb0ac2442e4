"""benchmarks/shortcut_pareto.py on a tiny model: both references, the solvers and a shortcut, the
stored points (what they hold is recomputed here), resuming without recomputing, refusing a folder
made with other settings, the separate timing pass, and the command lines the docs show."""

import contextlib
import importlib.util
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "shortcut_pareto.py"
TINY = ["--samples", "3", "--steps", "10", "--ddim-steps", "5", "--dpm-steps", "5", "--methods",
        "ddim,dpm-solver++,stop-early", "--threads", "1"]


def _script():
    spec = importlib.util.spec_from_file_location("shortcut_pareto", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(*argv):
    """The script's main() in this process (a fresh module each call): exit code, stdout and stderr
    as a subprocess would give them; test_bad_arguments_are_one_line_errors runs it as a process too."""
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = _script().main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own errors
            code = e.code
        finally:
            torch.set_num_threads(threads)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def _run_process(*argv):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, argv)], capture_output=True, text=True)


@pytest.fixture(scope="session")  # under xdist a module fixture can be torn down and made again
def quality_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pareto") / "out"
    r = _run("--model", tiny_model_dir, *TINY, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r


def test_the_quality_pass_stores_every_point_of_both_references(quality_run, tiny_model_dir):
    from unetscope import Plan, Sampler, StopEarly, load_model, ssim
    from unetscope.images import to_uint8

    out, r = quality_run
    data = json.loads((out / "pareto.json").read_text())
    pts = {(p["ref"], p["method"], p["label"]): p for p in data["points"]}
    labels = {(m, lab) for _, m, lab in pts}
    assert labels == {("ddpm", "S=10"), ("ddim", "S=10"), ("ddim", "S=5"), ("dpm-solver++", "S=5"),
                      ("stop-early", "StopEarly(4)"), ("stop-early", "StopEarly(2)"), ("stop-early", "StopEarly(1)")}
    assert len(pts) == 14 and {ref for ref, _, _ in pts} == {"ddpm", "ddim"}
    for ref in ("ddpm", "ddim"):  # the reference against itself
        own = pts[(ref, ref, "S=10")]
        assert own["ssim_mean"] == 1 and own["frechet"] == 0 and own["agree_reference"] == 1 and own["compute_fraction"] == 1
    # what a point holds is what running it alone gives: the same seeds (same x_S), uint8 images
    model = load_model(tiny_model_dir)
    seeds, cond = [1000, 1001, 1002], [0, 1, 2]
    q = lambda tr: to_uint8(tr.images).float() / 255  # noqa: E731
    ddim = Sampler(model, steps=10, method="ddim", guidance=3.0)
    ref = q(ddim.sample(seeds, cond))
    stored = json.loads((out / "quality" / "ddim" / "dpm-solver-S-5.json").read_text())
    dpm = q(Sampler(model, steps=5, method="dpm++", guidance=3.0).sample(seeds, cond))
    assert stored["ssim"] == pytest.approx(ssim(dpm, ref).tolist(), abs=1e-4) and stored["samples"] == 3
    stop = json.loads((out / "quality" / "ddim" / "stop-early-StopEarly-4.json").read_text())  # run by prefix sharing
    alone = q(ddim.sample(seeds, cond, Plan([StopEarly(4)])))
    assert stop["ssim"] == pytest.approx(ssim(alone, ref).tolist(), abs=1e-4)
    assert stop["compute_fraction"] == pytest.approx(0.7, abs=0.02) and 0 < stop["ssim_mean"] < 1  # steps 10..4 run
    assert "agree_label" in stop and len(stop["predicted"]) == 3
    table = (out / "table.md").read_text()
    assert "| DDIM-10 | dpm-solver++ | S=5 | 5 | 0.500 |" in table and (out / "pareto.png").stat().st_size > 10000
    assert "14 to run" in r.stdout


def test_a_rerun_skips_stored_points_and_other_settings_are_refused(quality_run, tiny_model_dir):
    out, _ = quality_run
    files = sorted((out / "quality").rglob("*"))
    before = {f: f.stat().st_mtime_ns for f in files}
    r = _run("--model", tiny_model_dir, *TINY, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "14 of 14 points stored" in r.stdout and "0 to run" in r.stdout
    assert {f: f.stat().st_mtime_ns for f in sorted((out / "quality").rglob("*"))} == before
    r = _run("--model", tiny_model_dir, *TINY, "--guidance", "2", "--out", out)
    assert r.returncode == 2 and "other settings (guidance differ)" in r.stderr and "Traceback" not in r.stderr
    r = _run("--model", tiny_model_dir, *TINY[:1], "4", *TINY[2:], "--out", out)
    assert r.returncode == 2 and "samples differ" in r.stderr


def test_the_timing_pass_is_separate_and_fills_the_time_column(quality_run, tiny_model_dir):
    out, _ = quality_run
    r = _run("--model", tiny_model_dir, *TINY, "--timing-only", "--samples", "2", "--repeats", "1", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    timed = sorted((out / "timing").glob("*/*.json"))
    assert len(timed) == 12  # every point but the two references themselves
    t = json.loads((out / "timing" / "ddpm" / "ddim-S-5.json").read_text())
    assert t["entry"]["runs"] and t["reference"]["runs"] and t["time_fraction"] > 0 and t["compute_fraction"] == 0.5
    data = json.loads((out / "pareto.json").read_text())
    assert all(p["time_fraction"] > 0 for p in data["points"])
    assert "DDIM reference measured time" in r.stdout and "DDPM reference measured time" in r.stdout
    r = _run("--model", tiny_model_dir, *TINY, "--timing-only", "--samples", "2", "--repeats", "2", "--out", out)
    assert r.returncode == 2 and "timing pass made with other settings (repeats differ)" in r.stderr
    # the FLOPs came from the quality pass's records; a timing pass with none counts them itself, the same
    for f in timed:
        assert json.loads(f.read_text())["compute_fraction"] == pytest.approx(
            json.loads((out / "quality" / f.parent.name / f.name).read_text())["compute_fraction"]), f
    alone = out.parent / "timing-alone"  # the quality pass without that point's record
    shutil.copytree(out, alone, ignore=shutil.ignore_patterns("timing", "ddim-S-5.json"))
    r = _run("--model", tiny_model_dir, *TINY, "--refs", "ddim", "--methods", "ddim", "--timing-only", "--samples", "2",
             "--repeats", "1", "--out", alone)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [p.name for p in (alone / "timing").glob("*/*.json")] == ["ddim-S-5.json"]
    assert json.loads((alone / "timing" / "ddim" / "ddim-S-5.json").read_text())["compute_fraction"] == 0.5


def test_a_shortcut_stacked_on_fewer_solver_steps(tiny_model_dir, tmp_path):
    """ddim+deepcache and dpm+deepcache: DDIM at --stack-steps and DPM-Solver++ at --dpm-stack-steps
    with DeepCache-style caching, what running each alone gives; FLOPs against the 10-step
    reference's; timed on the solver it runs on."""
    from unetscope import Plan, Sampler, load_model, ssim
    from unetscope.images import to_uint8
    from unetscope.shortcut import uniform_cache_cuts

    argv = ["--model", tiny_model_dir, "--samples", "3", "--steps", "10", "--refs", "ddim", "--methods",
            "ddim+deepcache,dpm+deepcache", "--stack-steps", "6", "--dpm-stack-steps", "7", "--ddim-steps", "5",
            "--dpm-steps", "5", "--threads", "1", "--out", tmp_path / "o"]
    r = _run(*argv)
    assert r.returncode == 0, r.stderr[-2000:]
    model = load_model(tiny_model_dir)
    nb = (3 * model.num_blocks) // 4
    stored = json.loads((tmp_path / "o" / "quality" / "ddim" / f"ddim-deepcache-S-6-every-2-nb-{nb}.json").read_text())
    seeds, cond = [1000, 1001, 1002], [0, 1, 2]
    q = lambda tr: to_uint8(tr.images).float() / 255  # noqa: E731
    ref = q(Sampler(model, steps=10, method="ddim", guidance=3.0).sample(seeds, cond))
    six = Sampler(model, steps=6, method="ddim", guidance=3.0)
    alone = q(six.sample(seeds, cond, Plan(uniform_cache_cuts(6, 2, nb))))
    assert stored["ssim"] == pytest.approx(ssim(alone, ref).tolist(), abs=1e-4) and stored["sampler"]["steps"] == 6
    assert 0.2 < stored["compute_fraction"] < 0.6  # 6 of 10 steps, some of them cut
    dpm = json.loads((tmp_path / "o" / "quality" / "ddim" / f"dpm-deepcache-S-7-every-3-nb-{nb}.json").read_text())
    alone = q(Sampler(model, steps=7, method="dpm++", guidance=3.0).sample(seeds, cond, Plan(uniform_cache_cuts(7, 3, nb))))
    assert dpm["ssim"] == pytest.approx(ssim(alone, ref).tolist(), abs=1e-4)
    assert dpm["sampler"]["method"] == "dpm++" and 0.3 < dpm["compute_fraction"] < 0.7
    assert {p["label"] for p in json.loads((tmp_path / "o" / "pareto.json").read_text())["points"]} >= \
        {f"S=6, every 2, nb={nb}", f"S=6, every 3, nb={nb}"}
    r = _run(*argv, "--timing-only", "--samples", "2", "--repeats", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    t = json.loads((tmp_path / "o" / "timing" / "ddim" / f"ddim-deepcache-S-6-every-2-nb-{nb}.json").read_text())
    assert t["compute_fraction"] == pytest.approx(stored["compute_fraction"]) and t["time_fraction"] > 0
    t = json.loads((tmp_path / "o" / "timing" / "ddim" / f"dpm-deepcache-S-7-every-3-nb-{nb}.json").read_text())
    assert t["compute_fraction"] == pytest.approx(dpm["compute_fraction"]) and t["time_fraction"] > 0


def test_bad_arguments_are_one_line_errors(tiny_model_dir, tmp_path):
    for argv, msg in ((["--refs", "dpm"], "--refs takes"), (["--methods", "magic"], "--methods takes"),
                      (["--ddim-steps", "0"], "step counts must be >= 1"), (["--samples", "1"], "--samples must be >= 2")):
        r = _run("--model", tiny_model_dir, *argv, "--out", tmp_path / "o")
        assert r.returncode == 2 and msg in r.stderr
    r = _run_process("--model", tiny_model_dir, "--steps", "10", "--threads", "1", "--out", tmp_path / "o")  # DDIM 15 > S = 10
    assert r.returncode == 2 and "ddim at 15 steps: more than the reference's S = 10" in r.stderr
    assert not (tmp_path / "o" / "quality").exists()


def test_the_command_lines_in_the_docs_parse():
    spec = importlib.util.spec_from_file_location("shortcut_pareto", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = (ROOT / "docs" / "shortcuts.md").read_text()
    lines = [ln.split("  #")[0].strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
             for ln in b.splitlines() if ln.strip().startswith("python benchmarks/shortcut_pareto.py")]
    assert len(lines) >= 3
    for ln in lines:
        a = mod.parse(shlex.split(ln)[2:])
        assert a.samples >= 2 and a.refs


def test_the_baselines_curve_is_their_frontier_linear_between_points():
    spec = importlib.util.spec_from_file_location("pareto", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pts = [(0.1, 0.8), (0.2, 0.9), (0.15, 0.7), (0.5, 0.95), (0.4, 0.85)]  # (0.15, 0.7), (0.4, 0.85) are beaten
    front = mod.frontier(pts)
    assert front == [(0.1, 0.8), (0.2, 0.9), (0.5, 0.95)]
    assert mod.on_frontier(front, 0.15) == pytest.approx(0.85) and mod.on_frontier(front, 0.35) == pytest.approx(0.925)
    assert mod.on_frontier(front, 0.05) is None and mod.on_frontier(front, 0.9) == 0.95
    assert mod.on_frontier(front, 0.2) == pytest.approx(0.9)


def test_the_frontier_searchs_candidates_are_drawn(tiny_model_dir, tmp_path):
    """--frontier DIR: every recipe a frontier search measured becomes a point, drawn on the benchmark's
    own seeds under the reference it was searched against (the same code: its recipes, its reference)."""
    import unetscope as us
    from unetscope.images import to_uint8

    fr = tmp_path / "frontier"
    us.search_shortcut(tiny_model_dir, fr, frontier=True, reference="ddim:10", solvers="dpm++", target_mean=0.5,
                       samples=6, calibration=2, validation=2, rounds=1, repeats=1)
    rec = json.loads((fr / "frontier.json").read_text())
    out = tmp_path / "pareto"
    r = _run("--model", tiny_model_dir, "--samples", "3", "--steps", "10", "--ddim-steps", "5", "--dpm-steps", "5",
             "--refs", "ddim", "--methods", "frontier", "--frontier", fr, "--threads", "1", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads((out / "pareto.json").read_text())
    drawn = {p["label"] for p in data["points"] if p["method"] == "frontier"}
    assert drawn == {f"{c['label']} [{c['kind']}{'/' + c['how'] if c['how'] else ''}]" for c in rec["candidates"]}
    # the solver alone, as the search chose it, recomputed here against DDIM-10 on the benchmark's seeds
    solo = next(c for c in rec["candidates"] if c["kind"] == "solver")
    pt = next(p for p in data["points"] if p["label"].startswith(solo["label"] + " [solver"))
    model = us.load_model(tiny_model_dir)
    seeds, cond = [1000, 1001, 1002], [0, 1, 2]
    q = lambda tr: to_uint8(tr.images).float() / 255  # noqa: E731
    ref = q(us.Sampler(model, steps=10, method="ddim", guidance=3.0).sample(seeds, cond))
    mine = q(us.Sampler(model, steps=solo["recipe"]["steps"], method="dpm++", guidance=3.0).sample(seeds, cond))
    assert pt["ssim_mean"] == pytest.approx(float(us.ssim(mine, ref).mean()), abs=1e-4)
    r = _run("--model", tiny_model_dir, "--samples", "3", "--steps", "20", "--ddim-steps", "5", "--dpm-steps", "5",
             "--refs", "ddim", "--methods", "frontier", "--frontier", fr, "--threads", "1", "--out", tmp_path / "other")
    assert r.returncode == 2 and "searched against ddim:10" in r.stderr
