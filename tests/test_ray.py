"""``--executor ray`` on a local Ray instance with 2 CPUs: the same rows as the in-process engine
(bitwise on the CPU), a killed worker or a killed driver changes nothing, and a cluster that is not
there or a model that fails in a worker is one line and exit 2."""

import logging
import os
import socket
import sqlite3
import subprocess
import sys
import time

import pytest
import ray

from conftest import kill_when_stored, run_cli

SMALL = ["--steps", "10", "--samples", "4", "--chunk-size", "1", "--t-step", "3", "--threads", "1", "--quiet"]


@pytest.fixture(scope="session")  # under xdist a module fixture can be torn down and made again
def cluster():
    """One local Ray instance for the run (one pytest worker holds the Ray tests), set up as the
    executor sets up its own: quiet, workers' output in Ray's logs."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _rows(out):
    with sqlite3.connect(out / "results.sqlite") as c:
        return sorted(c.execute("SELECT run, seed, variant_id, variant, cond, ssim, psnr FROM results"))


def _spent(out):
    """evaluations_spent summed over the folder's runs (each chunk adds its own once, when written)."""
    from unetscope.store import ResultStore

    with ResultStore(out / "results.sqlite") as st:
        return sum(st.stats(r["run"]).get("evaluations_spent", 0) for r in st.runs())


def _images(out):
    return {p.relative_to(out): p.read_bytes() for p in sorted((out / "images").rglob("*.pt"))}


@pytest.fixture(scope="session")  # under xdist a module fixture can be torn down and made again
def local_runs(tiny_model_dir, tmp_path_factory):
    """The in-process engine's folders for phases and block-utility (the reference rows)."""
    from unetscope.cli import main

    root = tmp_path_factory.mktemp("local")
    for exp in ("phases", "block-utility"):
        assert main([str(a) for a in ["sweep", exp, "--model", tiny_model_dir, "--out", root / exp, *SMALL]]) == 0
    return root


def test_ray_rows_equal_the_local_engine(cluster, local_runs, tiny_model_dir, tmp_path, capsys):
    """phases from the command line (workers load the model's reference): the rows, images and
    evaluations of the in-process engine. (A model object shipped through the object store: the
    killed-worker test below.)"""
    code, out, err = run_cli(["sweep", "phases", "--model", tiny_model_dir, "--out", tmp_path / "phases", *SMALL,
                              "--executor", "ray"], capsys)
    assert code == 0, err
    workers = [line for line in err.splitlines() if "workers, image-evaluations/s" in line]
    assert workers and "2 workers" in workers[0], err  # four chunks on two slots
    assert _rows(tmp_path / "phases") == _rows(local_runs / "phases")
    assert _images(tmp_path / "phases") == _images(local_runs / "phases")
    assert _spent(tmp_path / "phases") == _spent(local_runs / "phases")


DYING_ADAPTER = '''
import os
import signal

from unetscope import load_model


def make_model():
    """The tiny model; the first U-Net evaluation in any process but the test's SIGKILLs that process
    (once: the marker file records the victim's pid)."""
    m = load_model({folder!r})
    prepare = m.units.prepare

    def dying(x, timesteps, cond):
        if os.getpid() != {driver}:
            try:
                fd = os.open({marker!r}, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return prepare(x, timesteps, cond)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        return prepare(x, timesteps, cond)

    m.units.prepare = dying
    return m
'''


def test_a_killed_worker_changes_no_row(cluster, local_runs, tiny_model_dir, tmp_path):
    """block-utility from the API with a model object (shipped once through the object store) whose
    first evaluation in a worker kills that worker (by the model itself: no race with a watcher): the
    worker is restarted and its item run again, and the rows, images and evaluations are the
    in-process engine's."""
    import importlib.util

    import unetscope as us
    from unetscope.executor import RayExecutor

    marker = tmp_path / "victim.pid"
    f = tmp_path / "dying_adapter.py"
    f.write_text(DYING_ADAPTER.format(folder=str(tiny_model_dir), driver=os.getpid(), marker=str(marker)))
    spec = importlib.util.spec_from_file_location("dying_adapter", f)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "block-utility"
    res = us.experiment("block-utility", mod.make_model(), out, executor=RayExecutor(threads=1), params={"t_step": 3},
                        steps=10, samples=4, chunk_size=1, progress=False)
    victim = int(marker.read_text())  # a worker died
    pids = {int(k.rsplit("/", 1)[1]) for k in res["stats"]["workers"]}
    assert victim not in pids and pids and res["stats"]["chunks_run"] == 4, (victim, res["stats"])
    local = local_runs / "block-utility"
    assert _rows(out) == _rows(local)
    assert _images(out) == _images(local) and _spent(out) == _spent(local)


@pytest.mark.slow
def test_a_killed_driver_resumes_from_the_database(cluster, local_runs, tiny_model_dir, tmp_path):
    out = tmp_path / "killed-driver"
    cmd = [sys.executable, "-m", "unetscope.cli", "sweep", "block-utility", "--model", str(tiny_model_dir), "--out", str(out),
           *SMALL, "--executor", "ray", "--ray-address", cluster, "--workers", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    n = kill_when_stored(lambda: p.pid, out / "results.sqlite", 1, timeout=150, until=lambda: p.poll() is not None)
    p.wait()
    assert 1 <= n < 4, "the driver was not killed partway"
    stored = _spent(out)
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert _rows(out) == _rows(local_runs / "block-utility")
    # nothing stored was computed again: the resumed call spent exactly what the missing chunks cost
    assert _spent(out) == _spent(local_runs / "block-utility")
    assert f"evaluations spent {_spent(out)} (this call {_spent(out) - stored})" in r.stdout, r.stdout


def test_a_closed_ray_address_is_one_line(cluster, tiny_model_dir, tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    code, _, err = run_cli(["sweep", "phases", "--model", tiny_model_dir, "--out", tmp_path / "o", *SMALL,
                            "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"no Ray cluster at 127.0.0.1:{port}" in err, err
    assert time.time() - t0 < 30 and not (tmp_path / "o").exists()


def test_executor_flags_are_checked_before_anything_is_written(cluster, tiny_model_dir, tmp_path, capsys):
    for argv, msg in [(["--ray-address", "auto"], "--ray-address: only with --executor ray"),
                      (["--executor", "ray", "--cpus-per-task", "-1"], "cpus_per_task must be a number >= 0"),
                      (["--executor", "ray", "--cpus-per-task", "0"], "a worker needs a CPU or a GPU"),
                      (["--executor", "ray", "--gpus-per-task", "1.5"], "gpus_per_task above 1 must be a whole number"),
                      (["--executor", "ray", "--gpus-per-task", "0.5"], "give --device cuda"),
                      (["--executor", "ray", "--workers", "0"], "workers must be an integer >= 1")]:
        code, _, err = run_cli(["sweep", "phases", "--model", tiny_model_dir, "--out", tmp_path / "o", *SMALL, *argv], capsys)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert not (tmp_path / "o").exists()


SEARCH = ["--steps", "6", "--samples", "8", "--calibration", "2", "--validation", "2", "--budget", "0.7",
          "--rounds", "1", "--repeats", "1", "--threads", "1", "--quiet"]


def _local_search(tiny_model_dir, out):
    import unetscope as us

    local = us.search_shortcut(tiny_model_dir, out, budget=0.7, steps=6, samples=8, calibration=2, validation=2, rounds=1,
                               repeats=1)
    assert list(local["search"]["workers"]) == [f"{socket.gethostname()}/{os.getpid()}"]
    return local


def _same(a, b):
    """The same record (plans, computes, rounds exactly); SSIMs equal up to float32 rounding (seeds
    scored in one batch here, in one chunk per worker there: a convolution over another batch size
    rounds differently)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), (a, b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), (a, b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-6), (a, b)
    else:
        assert a == b, (a, b)


@pytest.mark.slow
def test_search_on_ray_finds_the_local_schedule(cluster, tiny_model_dir, tmp_path):
    """The search on Ray through the API with an executor object: every candidate scored on two
    workers (the seeds shared out in two chunks); the same schedule, history and uniform rival as the
    in-process search, and the same schedule file and held-out scores. (The command line builds
    the same executor and calls the same function: test_search_cli_hands_the_ray_executor_over.)"""
    import json

    import unetscope as us
    from unetscope.executor import RayExecutor

    local = _local_search(tiny_model_dir, tmp_path / "local")
    res = us.search_shortcut(tiny_model_dir, tmp_path / "ray", budget=0.7, steps=6, samples=8, calibration=2,
                             validation=2, rounds=1, repeats=1, executor=RayExecutor(threads=1))
    workers = res["search"]["workers"]
    assert len(workers) == 2 and f"{socket.gethostname()}/{os.getpid()}" not in workers, workers
    assert res["search"]["plan"] == local["search"]["plan"]
    _same(res["search"]["history"], local["search"]["history"])
    _same(res["uniform_rival"], local["uniform_rival"])
    # the same image-evaluations, shared out: each worker scored half the seeds of every batch
    n = sum(w["image_evaluations"] for w in workers.values())
    assert n == sum(w["image_evaluations"] for w in local["search"]["workers"].values())
    assert all(w["chunks"] == next(iter(workers.values()))["chunks"] for w in workers.values())
    saved = {k: json.loads((tmp_path / k / "schedule.json").read_text()) for k in ("local", "ray")}
    assert saved["ray"]["interventions"] == saved["local"]["interventions"] and saved["ray"]["interventions"], saved
    _same({k: v for k, v in saved["ray"].items() if k != "model"}, {k: v for k, v in saved["local"].items() if k != "model"})
    held = {k: json.loads((tmp_path / k / "summary.json").read_text()) for k in ("local", "ray")}
    _same([r["ssim"] for r in held["ray"]["per_sample"]], [r["ssim"] for r in held["local"]["per_sample"]])


def test_search_cli_hands_the_ray_executor_over(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """``shortcut search --executor ray`` gives the API a RayExecutor that loads the model by its
    reference, with the command's threads, slots and workers (the search itself: the test above)."""
    import unetscope.api as api
    from unetscope.executor import RayExecutor

    seen = {}

    def fake_search(model, out, **kw):
        seen.update(kw)
        raise api.SettingsError("stopped here")  # one line, nothing run

    monkeypatch.setattr(api, "search_shortcut", fake_search)
    code, _, err = run_cli(["shortcut", "search", "--model", tiny_model_dir, "--out", tmp_path / "ray", *SEARCH,
                            "--executor", "ray", "--cpus-per-task", "2", "--workers", "1", "--chunk-size", "3"], capsys)
    assert code == 2 and "stopped here" in err, err
    ex = seen["executor"]
    assert isinstance(ex, RayExecutor) and seen["chunk_size"] == 3
    assert (ex.model, ex.threads, ex.cpus_per_task, ex.workers) == (str(tiny_model_dir), 1, 2, 1), vars(ex)


def test_search_chunk_size_and_run_flags(cluster, tiny_model_dir, tmp_path, capsys):
    """--chunk-size is the search's own; a shortcut run (timed here) refuses the executor flags."""
    for argv, msg in [(["shortcut", "--preset", "paper", "--executor", "ray"], "--executor ray and --chunk-size are for shortcut search"),
                      (["shortcut", "--preset", "paper", "--chunk-size", "2"], "--executor ray and --chunk-size are for shortcut search"),
                      (["shortcut", "search", "--chunk-size", "0"], "--chunk-size must be at least 1"),
                      (["shortcut", "search", "--workers", "2"], "--workers: only with --executor ray")]:
        code, _, err = run_cli([*argv, "--model", tiny_model_dir, "--out", tmp_path / "o", "--steps", "10", "--quiet"], capsys)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_reproduce_on_ray_writes_the_local_rows(cluster, tiny_model_dir, tmp_path, capsys):
    """Every experiment of ``reproduce`` through the executor: the same database and report as in process."""
    small = ["--model", tiny_model_dir, "--samples", "2", "--steps", "10", "--t-step", "5", "--chunk-size", "1",
             "--threads", "1", "--quiet"]
    for name, extra in (("local", []), ("ray", ["--executor", "ray"])):
        code, _, err = run_cli(["reproduce", *small, "--out", tmp_path / name, *extra], capsys)
        assert code == 0, err
    rows = _rows(tmp_path / "ray")
    assert rows == _rows(tmp_path / "local")
    assert len({r[0] for r in rows}) >= 6  # the runs of every experiment
    assert _spent(tmp_path / "ray") == _spent(tmp_path / "local")
    assert (tmp_path / "ray" / "report.html").stat().st_size > 0
