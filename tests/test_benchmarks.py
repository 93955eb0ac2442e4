"""The benchmark scripts run end to end on a tiny model (their numbers are measured by hand)."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_script

ROOT = Path(__file__).resolve().parents[1]


def test_batch_size_benchmark_prints_every_size_and_the_sweep_batch(tiny_model_dir):
    code, out, err = run_script(ROOT / "benchmarks" / "batch_size.py", ["--model", tiny_model_dir, "--sizes", "2,4",
                                                                         "--repeats", "1", "--threads", "1"])
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0] in ("2", "4")]
    assert [row[0] for row in rows] == ["2", "4"] and all(float(row[2]) > 0 for row in rows)
    assert min(float(row[3]) for row in rows) == 1.0  # the fastest size per image is the reference
    assert "sweep calls without --max-batch" in out


@pytest.mark.slow  # a minute of compiling and timing; CI runs it
def test_gpu_check_prints_one_table_on_the_cpu(tiny_model_dir, tmp_path):
    """benchmarks/gpu_check.py on --device cpu, tiny sizes (the compiled rows with dynamo's eager backend)."""
    import unetscope as us
    from unetscope.shortcut import save_schedule

    sched = save_schedule(us.Plan([us.DropBlocks(2, 3, 2, "cache")]), tmp_path / "s.json", meta=dict(sampler=dict(steps=4)))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--model",
                        str(tiny_model_dir), "--steps", "4", "--samples", "2", "--batch", "2", "--repeats", "1",
                        "--dtypes", "bfloat16", "--schedule", str(sched), "--backend", "eager", "--threads", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _table(r.stdout)
    parity = [row for row in rows if row["limit"].startswith(("<=", ">=", "bitwise"))]
    assert len(parity) == 3 + 5 + 1 and all(row["verdict"] == "ok" for row in parity)  # float32, bfloat16, compiled
    assert {row["dtype"] for row in parity} == {"float32", "bfloat16"}
    assert any(row["dtype"] == "bfloat16" and row["value"] == "bitwise equal" for row in rows)
    saves = [(row["check"], row["compiled"]) for row in rows if row["check"].startswith("time saving")]
    assert sorted(saves) == sorted((f"time saving, {n} (ddpm)", c) for n in ("paper preset", "searched schedule")
                                   for c in ("no", "yes"))
    assert next(row for row in rows if row["check"].startswith("compilations"))["value"] == "10 for 10"  # K = 4: one each
    mem = [row["value"] for row in rows if row["check"].startswith("memory")]
    assert len(mem) == 2 and mem[1].startswith("cache holds 0.25 MiB") and "not measured on cpu" in mem[1]


def _table(out):
    """gpu_check's table as dicts, cut at the columns its dashes mark."""
    lines = out.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("check "))
    spans, pos = [], 0
    for dashes in lines[i + 1].split("  "):
        spans.append((pos, pos + len(dashes)))
        pos += len(dashes) + 2
    names = [lines[i][a:b].strip() for a, b in spans]
    return [{n: line[a:b].strip() for n, (a, b) in zip(names, spans)} for line in lines[i + 2:] if line.strip()]


def test_gpu_check_names_the_devices_there_are(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cuda:3"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "'cuda:3' is not available on this machine; it has cpu" in r.stderr


def test_adaptive_samples_reports_the_spread_and_the_correlation(tiny_model_dir, tmp_path, capsys):
    import importlib.util
    import json

    import unetscope as us
    from unetscope.shortcut import save_schedule

    static = save_schedule(us.Plan([us.DropBlocks(2, 5, 3, "cache")]), tmp_path / "static.json")
    spec = importlib.util.spec_from_file_location("adaptive_samples", ROOT / "benchmarks" / "adaptive_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "per_sample.json"
    assert mod.main(["--model", str(tiny_model_dir), "--steps", "8", "--samples", "6", "--static", str(static), "--adaptive",
                     '{"type": "AdaptiveCache", "nb": 2, "threshold": 0.2}', "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "adaptive per-sample compute: mean" in text and "Spearman(adaptive compute, static SSIM)" in text
    rec = json.loads(out.read_text())
    assert len(rec["compute"]) == 6 and all(0 < c <= 1 for c in rec["compute"])
    assert rec["static_compute"] < 1 and len(rec["ssim_static"]) == 6


def test_feature_memory_counts_sd15s_unit_outputs():
    code, out, err = run_script(ROOT / "benchmarks" / "feature_memory.py")
    assert code == 0, err
    assert "K = 12; unit outputs of one row: 17,039,360 numbers" in out and "136 MB in float16" in out


def test_durations_table_sums_per_file_and_lists_the_slowest(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("durations_table", ROOT / "benchmarks" / "durations_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    xml = tmp_path / "r.xml"
    xml.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" '
                   'tests="4" time="12.5"><testcase classname="tests.test_a" name="test_x" time="3.0"/>'
                   '<testcase classname="tests.test_a" name="test_y" time="1.5"/>'
                   '<testcase classname="tests.test_b" name="test_z[p]" time="7.25"/>'
                   '<testcase classname="tests.test_b" name="test_w" time="0"/></testsuite></testsuites>')
    assert mod.main([str(xml), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 tests (1 skipped, 1 failed, 0 errors); wall time 12 s, sum of test times 12 s" in out
    slow = [ln for ln in out.splitlines() if ln.startswith("| ") and "::" in ln]
    assert slow == ["| 7.2 | `tests/test_b.py::test_z[p]` |", "| 3.0 | `tests/test_a.py::test_x` |"]
    assert "| `tests/test_b.py` | 2 | 7.2 |" in out and "| `tests/test_a.py` | 2 | 4.5 |" in out
    assert "| **sum** | **4** | **12** |" in out
    (tmp_path / "bad.xml").write_text("<not xml")
    with pytest.raises(SystemExit, match="not a readable JUnit XML file"):
        mod.main([str(tmp_path / "bad.xml")])
