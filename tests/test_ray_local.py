"""``--executor ray`` with no address, in a fresh process: the command starts its own local Ray
instance and closes it. A module of its own (not test_ray.py, whose tests share one instance in one
pytest worker), so that under ``--dist loadscope`` it runs beside those tests, not after them."""

import os
import subprocess
import sys

import pytest

SMALL = ["--steps", "10", "--samples", "4", "--chunk-size", "1", "--t-step", "3", "--threads", "1", "--quiet"]


BAD_ADAPTER = '''
from unetscope import load_model


def make_model():
    """The tiny model, with a prepare() that fails on the last steps' timesteps (only a worker samples)."""
    m = load_model({folder!r})
    prepare = m.units.prepare

    def bad(x, timesteps, cond):
        if int(timesteps.min()) < 100:
            raise ValueError("bad adapter: no embedding below timestep 100")
        return prepare(x, timesteps, cond)

    m.units.prepare = bad
    return m
'''


@pytest.mark.slow
def test_a_model_failing_in_a_worker_is_one_line(tiny_model_dir, tmp_path):
    """The whole default path in a fresh process: a local Ray instance started, the worker's error
    raised in the driver as one line, the instance closed."""
    f = tmp_path / "bad_adapter.py"
    f.write_text(BAD_ADAPTER.format(folder=str(tiny_model_dir)))
    r = subprocess.run([sys.executable, "-m", "unetscope.cli", "sweep", "phases", "--model", f"{f}:make_model", "--out",
                        str(tmp_path / "o"), *SMALL, "--executor", "ray", "--cpus-per-task", "2"],
                       capture_output=True, text=True, env={**os.environ, "RAY_ADDRESS": ""})
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if "should be kept in float32" not in ln]  # diffusers' own, locally too
    assert len(lines) == 1 and "bad adapter: no embedding below timestep 100" in lines[0], r.stderr
    assert lines[0].startswith("unetscope sweep: error:") and "Traceback" not in r.stderr
