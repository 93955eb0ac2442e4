"""The benchmark scripts run end to end on a tiny model (their numbers are measured by hand)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_batch_size_benchmark_prints_every_size_and_the_sweep_batch(tiny_model_dir):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "batch_size.py"), "--model", str(tiny_model_dir),
                        "--sizes", "2,4", "--repeats", "1", "--threads", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line.split() and line.split()[0] in ("2", "4")]
    assert [row[0] for row in rows] == ["2", "4"] and all(float(row[2]) > 0 for row in rows)
    assert min(float(row[3]) for row in rows) == 1.0  # the fastest size per image is the reference
    assert "sweep calls without --max-batch" in r.stdout
