"""Hostile inputs: crafted pickles run no code, names from the database never escape the folder,
NaN models stop with a typed error naming the step and nothing is stored, JSON outputs are strict."""

import json
import pickle
import sqlite3

import numpy as np
import pytest
import torch

import unetscope as us
from unetscope.adapters.base import Context
from conftest import run_cli as run


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))  # creates the marker file if the pickle is ever executed


def test_a_crafted_training_checkpoint_runs_no_code(tmp_path, capsys):
    out = tmp_path / "train"
    out.mkdir()
    marker = tmp_path / "pwned"
    (out / "checkpoint.pt").write_bytes(pickle.dumps({"config": _Evil(marker)}))
    code, _, err = run(["train", "--arch", "tiny", "--steps", 2, "--limit-images", 8, "--out", out, "--quiet"], capsys)
    assert code == 2 and "not a readable checkpoint" in err and err.count("\n") == 1
    assert not marker.exists()


def test_a_crafted_images_file_runs_no_code(tmp_path):
    from unetscope.store import StoreError
    from unetscope.sweep import load_images

    marker = tmp_path / "pwned"
    f = tmp_path / "images" / "phases-abc" / "00000.pt"
    f.parent.mkdir(parents=True)
    f.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(StoreError, match="not a readable images file"):
        load_images(tmp_path, "phases-abc", 0)
    assert not marker.exists()


def test_a_run_name_from_the_database_never_escapes_the_folder(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "runs" / "r"
    code, _, err = run(["sweep", "phases", "--model", tiny_model_dir, "--steps", 6, "--samples", 2, "--t-step", 3,
                        "--out", out, "--quiet"], capsys)
    assert code == 0, err
    with sqlite3.connect(out / "results.sqlite") as db:
        for table in ("runs", "results", "stats"):
            db.execute(f"UPDATE {table} SET run = '../../x'")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, _, err = run(["report", out], capsys)
    assert code == 2 and "not a safe folder name" in err and err.count("\n") == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written anywhere


class NaNUnits:
    """K = 1; the decoder outputs NaN below training timestep 300 (a model that blows up late)."""

    num_blocks = 1

    def __init__(self):
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def prepare(self, x, timesteps, cond):
        return Context(extra={"t": timesteps})

    def encoder(self, i, h, ctx):
        return self.conv(h)

    def middle(self, h, ctx):
        return h

    def decoder(self, j, h, skip, ctx):
        bad = (ctx.extra["t"] < 300).view(-1, 1, 1, 1)
        return torch.where(bad, torch.full_like(h, float("nan")), h + skip)

    def head(self, h, ctx):
        return h


def test_a_nan_model_stops_at_the_step_naming_the_unit_and_stores_nothing(tmp_path):
    model = us.wrap(NaNUnits(), sample_shape=(1, 16, 16))
    s = us.Sampler(model, steps=10)
    with pytest.raises(us.SamplerError, match=r"NaN or inf at step t=3 .*unit D\[0\]"):
        s.sample([0, 1])
    with pytest.raises(us.SamplerError, match="at step t=3"):
        us.experiment("phases", model, tmp_path / "e", steps=10, samples=2, t_step=3, progress=False)
    with sqlite3.connect(tmp_path / "e" / "results.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0


@pytest.mark.parametrize("kw, message", [
    (dict(beta_end=float("nan")), "beta_end must be a number in \\(0, 1\\)"),
    (dict(beta_start=0.0), "beta_start must be a number in \\(0, 1\\)"),
    (dict(beta_end=1.5), "beta_end must be a number in \\(0, 1\\)"),
    (dict(num_train_timesteps=10.5), "num_train_timesteps must be an integer"),
])
def test_wrap_refuses_schedules_outside_0_1(kw, message):
    with pytest.raises(us.ModelError, match=message):
        us.wrap(NaNUnits(), sample_shape=(1, 16, 16), **kw)


def test_json_outputs_are_strict(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "i"
    # stopping at step 1 returns the output itself: identical images, PSNR inf
    code, _, err = run(["intervene", "--model", tiny_model_dir, "--steps", 4, "--samples", 2, "--stop-early", 1,
                        "--out", out, "--quiet"], capsys)
    assert code == 0, err

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    m = json.loads((out / "metrics.json").read_text(), parse_constant=refuse)
    assert m["samples"][0]["psnr"] is None and m["samples"][0]["ssim"] == pytest.approx(1.0)


CLI_BAD = [
    (["sample", "--eta", 0.5], "has no effect with --sampler ddpm"),
    (["sample", "--seeds", "9223372036854775808"], "--seeds must be in 0..2^63-1"),
    (["sample", "--seeds", "0-99999999"], "holds more than 1,000,000 seeds"),
    (["sample", "--samples", 10**9], "--samples must be in 1..1,000,000"),
    (["sample", "--threads", -1], "--threads must be 0"),
    (["intervene", "--stop-early", 3, "--start", 5], "--start/--n have no effect with only --stop-early"),
    (["intervene", "--zero-skips", 1, "--start", 5, "--fill", "cache"], "--fill cache has no effect without --drop-blocks"),
    (["sweep", "phases", "--images", -1], "images must be an integer >= 0"),
    (["sweep", "phases", "--param", "k=nan"], "k (the band's width in standard deviations) must be a finite number > 0"),
    (["sweep", "phases", "--param", "smooth=-3"], "smooth must be an integer >= 1"),
    (["sweep", "block-utility", "--param", "threshold=nan"], "threshold must be in (0, 1]"),
    (["reproduce", "--quick", "--t-step", 0], "t_step must be an integer >= 1"),
    (["shortcut", "--preset", "paper", "--repeats", 0], "--repeats must be at least 1"),
    (["shortcut", "--preset", "paper", "--repeats", -2], "--repeats must be at least 1"),
    (["shortcut", "--schedule", "SCHEDULE_EMPTY"], "holds no interventions"),
    (["shortcut", "search", "--write", "no/such/folder/s.json"], "its folder does not exist"),
    (["sample", "--prompts", "LATIN1"], "cannot be read as UTF-8 text"),
    (["intervene", "--plan", "LATIN1"], "cannot be read as UTF-8 text"),
    (["intervene", "--plan", '{"interventions": [{"type": "StopEarly", "at": 2}], "intervention": []}'],
     "a plan has no key 'intervention'; it takes interventions"),
    (["shortcut", "--schedule", "SCHEDULE_MISSPELT"], "a plan has no key 'intervention'"),
]


@pytest.mark.parametrize("argv, message", CLI_BAD, ids=[" ".join(map(str, a)) for a, _ in CLI_BAD])
def test_refused_command_lines(argv, message, tiny_model_dir, tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "empty.json").write_text('{"interventions": []}')
    (tmp_path / "misspelt.json").write_text('{"interventions": [{"type": "StopEarly", "at": 2}], "intervention": []}')
    places = {"LATIN1": tmp_path / "latin1.txt", "SCHEDULE_EMPTY": tmp_path / "empty.json",
              "SCHEDULE_MISSPELT": tmp_path / "misspelt.json"}
    argv = [places.get(a, a) for a in argv]
    out = tmp_path / "out"
    code, _, err = run(argv + ["--model", tiny_model_dir, "--steps", 4, "--out", out, "--quiet"], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert not out.exists() or not any(out.iterdir())  # nothing written


def _api_model():
    return us.wrap(NaNUnits(), sample_shape=(1, 16, 16))


class FineUnits(NaNUnits):
    def decoder(self, j, h, skip, ctx):
        return h + skip


def _class_model():
    return us.wrap(NaNUnits(), sample_shape=(1, 16, 16), conditioning="class", num_classes=3)


def test_research_code_integers_are_integers():
    """NumPy and 0-d torch integers are taken wherever an int is, and stored as the ints they hold."""
    for at in (np.int64(5), np.int32(5), torch.tensor(5)):
        s = us.StopEarly(at)
        assert s == us.StopEarly(5) and type(s.at) is int and json.dumps(s.to_dict())
    plan = us.Plan(us.DropBlocks(np.int64(1), np.int64(3), n=torch.tensor(2)))  # one intervention: a plan of one
    assert plan == us.Plan([us.DropBlocks(1, 3, 2)])
    s = us.Sampler(us.wrap(FineUnits(), sample_shape=(1, 16, 16)), steps=np.int64(4), batch_size=np.int16(2))
    assert s.steps == 4 and type(s.steps) is int and s.batch_size == 2
    tr = s.sample(np.arange(2), keep="x_t")  # a string is one name
    assert {4, 3, 2, 1} <= set(tr.x_t) and not tr.x_est0
    assert torch.equal(tr.x0, s.sample([0, 1]).x0)


API_BAD = [
    (lambda: us.Sampler(_api_model(), steps=4).sample([0.5]), us.SamplerError, "seeds must be integers"),
    (lambda: us.Sampler(_api_model(), steps=4).sample([2**64]), us.SamplerError, "seeds must be in 0..2"),
    (lambda: us.Sampler(_api_model(), steps=4, batch_size=2.5), us.SamplerError, "batch_size must be an integer"),
    (lambda: us.Sampler(_api_model(), steps=4, eta=float("nan"), method="ddim"), us.SamplerError, "eta must be"),
    (lambda: us.wrap(NaNUnits(), sample_shape=(1, -4, 16)), us.ModelError, "sample_shape must be three positive"),
    (lambda: us.wrap(NaNUnits(), sample_shape=(1, 16, 16), conditioning="audio"), us.ModelError, "conditioning must be"),
    (lambda: us.wrap(NaNUnits(), sample_shape=(1, 16, 16), conditioning="class", num_classes=3, null_class=99),
     us.ModelError, "null_class must be a class index"),
    (lambda: us.load_model("default", dtype="float64"), us.ModelError, "dtype must be one of"),
    (lambda: us.wrap(NaNUnits(), sample_shape=(1, 16, 16), conditioning="class", num_classes=3).make_cond([0.5, 1.2], 2),
     us.ModelError, "class labels must be integers"),
    (lambda: us.setup(_api_model(), samples=0), us.SettingsError, "samples must be an integer >= 1"),
    (lambda: us.setup(_api_model(), seeds=[1, -1]), us.SettingsError, "seeds must be a non-empty list"),
    (lambda: us.experiment("phases", _api_model(), "/nonexistent/never", t_step=0), us.SettingsError, "t_step must be"),
    (lambda: us.measure_shortcut(_api_model(), "/nonexistent/never"), us.SettingsError, "give one of schedule"),
    (lambda: us.load_model("default", device="cuda:7"), us.ModelError, "device 'cuda:7' is not available"),
    (lambda: us.load_model("default", device="mps"), us.ModelError, "device 'mps' is not available"),
    (lambda: us.load_model("default", device="gpu0"), us.ModelError, "device 'gpu0' is not a device name"),
    (lambda: us.Sampler(_class_model(), steps=4).sample([0], cond="abc"), us.ModelError, "class labels must be integers in 0..2"),
    (lambda: us.Sampler(_class_model(), steps=4).sample([0], cond=[[1], [2, 3]]), us.ModelError, "class labels must be integers"),
    (lambda: us.Plan("DropBlocks"), us.PlanError, "a Plan takes an intervention or a list of them"),
    (lambda: us.Plan(5), us.PlanError, "a Plan takes an intervention or a list of them"),
    (lambda: us.StopEarly(np.float64(5.0)), us.PlanError, "StopEarly.at must be an integer"),
    (lambda: us.StopEarly(np.bool_(True)), us.PlanError, "StopEarly.at must be an integer"),
    (lambda: us.DropBlocks(torch.tensor(2.0), 5), us.PlanError, "DropBlocks.nb must be an integer"),
    (lambda: us.Sampler(_api_model(), steps=4).sample([0], keep="x_T"), us.SamplerError, "keep may hold x_t, x_est0; got 'x_T'"),
] + ([] if torch.cuda.is_available() else [
    (lambda: us.load_model("default", device="cuda"), us.ModelError, "device 'cuda' is not available on this machine; it has cpu")])


@pytest.mark.parametrize("call, error, message", API_BAD, ids=[m for _, _, m in API_BAD])
def test_refused_api_calls_raise_typed_errors(call, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        call()


def test_default_model_loads_with_a_dtype_name():
    m = us.load_model("default", dtype="bfloat16")
    assert m.dtype == torch.bfloat16


def _broken_folders(root, base):
    import shutil

    def variant(name, fn):
        d = root / name
        shutil.copytree(base, d)
        fn(d)
        return d

    st = "diffusion_pytorch_model.safetensors"
    return {
        "truncated safetensors": (variant("truncated", lambda d: (d / st).write_bytes((d / st).read_bytes()[:500])),
                                  "cannot load the U-Net"),
        "no weights file": (variant("noweights", lambda d: (d / st).unlink()), "holds no .safetensors weights"),
        "pickled .bin only": (variant("binonly", lambda d: (torch.save({}, d / "diffusion_pytorch_model.bin"), (d / st).unlink())),
                              "which unetscope does not read"),
        "config.json a list": (variant("configlist", lambda d: (d / "config.json").write_text("[1, 2]")),
                               "must hold a JSON object, not a list"),
        "config.json wrong types": (variant("configtypes", lambda d: (d / "config.json").write_text(json.dumps(
            {**json.loads((d / "config.json").read_text()), "block_out_channels": "abc"}))), "cannot load the U-Net"),
        "config.json not UTF-8": (variant("configbytes", lambda d: (d / "config.json").write_bytes(b"\xff\xfe{")), "cannot read"),
        "scheduler config a list": (variant("schedlist", lambda d: (d / "scheduler_config.json").write_text("[]")),
                                    "must hold a JSON object"),
        "scheduler T a string": (variant("schedT", lambda d: _edit_json(d / "scheduler_config.json", num_train_timesteps="1000")),
                                 "num_train_timesteps must be an integer >= 1, got '1000'"),
        "unused beta NaN": (variant("schedNaN", lambda d: _edit_json(d / "scheduler_config.json", beta_start=float("nan"))),
                            "beta_start must be a number in (0, 1), got nan"),
        "null_class out of range": (variant("nullclass", lambda d: (d / "unetscope.json").write_text('{"null_class": 99}')),
                                    "null_class must be a class index in 0..10"),
        "weights unreadable": (variant("unreadable", lambda d: ((d / st).unlink(), (d / st).mkdir())), "cannot load the U-Net"),
    }


def _edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.fixture(scope="module")
def broken(tmp_path_factory, tiny_model_dir):
    return _broken_folders(tmp_path_factory.mktemp("broken"), tiny_model_dir)


BROKEN = ["truncated safetensors", "no weights file", "pickled .bin only", "config.json a list", "config.json wrong types",
          "config.json not UTF-8", "scheduler config a list", "scheduler T a string", "unused beta NaN",
          "null_class out of range", "weights unreadable"]


@pytest.mark.parametrize("case", BROKEN)
@pytest.mark.parametrize("command", ["sample", "models", "sweep"])
def test_broken_model_folders_are_one_line(case, command, broken, tmp_path, capsys):
    folder, message = broken[case]
    out = tmp_path / "o"
    argv = {"sample": ["sample", "--model", folder, "--steps", 2, "--samples", 1, "--out", out, "--quiet"],
            "models": ["models", folder],
            "sweep": ["sweep", "phases", "--model", folder, "--steps", 4, "--samples", 1, "--out", out, "--quiet"]}[command]
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_out_under_a_file_or_read_only(tiny_model_dir, tmp_path, capsys):
    import os

    f = tmp_path / "a_file"
    f.write_text("x")
    code, _, err = run(["sample", "--model", tiny_model_dir, "--steps", 2, "--samples", 1, "--out", f / "sub", "--quiet"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    code, _, err = run(["train", "--arch", "tiny", "--steps", 1, "--out", f, "--quiet"], capsys)
    assert code == 2 and "not a folder" in err and len(err.strip().splitlines()) == 1, err
    if os.geteuid() != 0:  # root writes anywhere: the read-only case needs an ordinary user
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        code, _, err = run(["sweep", "phases", "--model", tiny_model_dir, "--steps", 4, "--samples", 1, "--out", ro / "x",
                            "--quiet"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_a_damaged_database_is_one_line(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "d"
    assert run(["sweep", "phases", "--model", tiny_model_dir, "--steps", 4, "--samples", 1, "--t-step", 2, "--out", out,
                "--quiet"], capsys)[0] == 0
    db = out / "results.sqlite"
    data = bytearray(db.read_bytes())
    data[4096:8192] = b"\x13" * 4096  # a page overwritten with garbage
    db.write_bytes(bytes(data))
    code, _, err = run(["report", out], capsys)
    assert code == 2 and "damaged or not a results database" in err and len(err.strip().splitlines()) == 1, err


def test_two_processes_on_one_folder(tiny_model_dir, tmp_path, capsys):
    """The rule: one writer per run folder. A second process is refused at once with a message while
    another holds the folder, and the folder's database ends equal to an uninterrupted run's."""
    import subprocess
    import sys

    def cmd(out):
        # one thread in every process: the same rounding, so the rows of the shared and the lone runs are equal
        return [sys.executable, "-m", "unetscope.cli", "sweep", "block-utility", "--model", str(tiny_model_dir), "--steps",
                "8", "--samples", "4", "--chunk-size", "1", "--out", str(out), "--quiet", "--threads", "1"]

    shared = tmp_path / "shared"
    shared.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom unetscope.store import folder_lock\n"
                               f"with folder_lock({str(shared)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run(cmd(shared)[3:], capsys)  # this process is the second one
        assert code == 2 and "in use by another unetscope process (pid" in err, err
        assert len(err.strip().splitlines()) == 1 and not (shared / "results.sqlite").exists()
    finally:
        holder.kill()
        holder.wait()
    # two sweeps started together (a child process and this one): whichever comes second is refused or
    # finds the work done
    first = subprocess.Popen(cmd(shared), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    code, _, err = run(cmd(shared)[3:], capsys)
    codes, errs = [first.wait(timeout=300), code], [first.stderr.read(), err]
    assert 0 in codes, errs
    assert all(c == 0 or "in use by another unetscope process" in e for c, e in zip(codes, errs)), errs
    # once both have exited (the lock is free): completing whatever a refusal left, and the reference, run here
    assert run(cmd(shared)[3:], capsys)[0] == 0
    assert run(cmd(tmp_path / "alone")[3:], capsys)[0] == 0

    def rows(out):
        with sqlite3.connect(out / "results.sqlite") as db:
            return sorted(db.execute("SELECT run, seed, variant_id, ssim, psnr FROM results"))
    assert rows(shared) == rows(tmp_path / "alone")


def test_killed_shortcut_and_report_leave_consistent_files(tiny_model_dir, tmp_path, capsys):
    """A shortcut killed at any point leaves either nothing in the database or its rows with their
    summary; a report killed mid-write leaves the previous report.html whole. (The processes killed are
    processes of their own; the runs that complete run here.)"""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "unetscope.cli", "shortcut", "--model", str(tiny_model_dir), "--preset", "paper",
           "--steps", "10", "--samples", "3", "--repeats", "2", "--out", str(out), "--quiet"]
    for delay in (1.0, 2.5, 4.0):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        if (out / "results.sqlite").exists():
            with sqlite3.connect(out / "results.sqlite") as db:
                runs = [r for (r,) in db.execute("SELECT DISTINCT run FROM results")]
            assert all((out / "findings" / f"{r}.json").exists() for r in runs)
    code, _, err = run(cmd[3:], capsys)  # the command run again completes
    assert code == 0, err
    assert run(["report", out], capsys)[0] == 0
    whole = (out / "report.html").read_text()
    p = subprocess.Popen([sys.executable, "-m", "unetscope.cli", "report", str(out)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert (out / "report.html").read_text() == whole  # the old one, whole, or the new one (identical), never a part


def test_resume_with_other_batching_says_so(tiny_model_dir, tmp_path):
    lines = []
    kw = dict(steps=6, samples=2, t_step=3, progress=False, log=lines.append)
    us.experiment("phases", str(tiny_model_dir), tmp_path / "b", chunk_size=2, **kw)
    assert not any("resumes with" in m for m in lines)
    us.experiment("phases", str(tiny_model_dir), tmp_path / "b", chunk_size=1, **kw)
    assert any("resumes with chunk_size=1" in m and "chunk_size=2" in m for m in lines), lines


MORE_BAD = [
    (["sample", "--steps", "abc"], "invalid int value: 'abc'"),
    (["sample", "--batch-size", 0], "batch_size must be an integer >= 1"),
    (["sample", "--dtype", "float64"], "invalid choice: 'float64'"),
    (["sample", "--variance", "learned_range"], "needs a model that outputs 2C channels"),
    (["sample", "--guidance", "nan"], "guidance must be a finite number"),
    (["sample", "--guidance", "inf"], "guidance must be a finite number"),
    (["sample", "--class", "1,2", "--samples", 3], "--class gives 2 labels for 3 samples"),
    (["sample", "--class", -1], "class labels must be in 0..9"),
    (["sample", "--seeds", "5-3"], "--seeds must be integers"),
    (["sample", "--seeds", "0-1", "--samples", 3], "disagrees with --seeds"),
    (["sample", "--prompt", "a cat"], "--prompt/--prompts need a text-conditioned model"),
    (["sample", "--prompts", "no/such/prompts.txt"], "does not exist"),
    (["sample", "--device", "nonsense"], "device 'nonsense' is not a device name; this machine has cpu"),
    (["intervene", "--skip-steps", 0, "--start", 3], "SkipSteps.n must be in"),
    (["intervene", "--skip-steps", 1, "--start", 1], "SkipSteps.start must be in"),
    (["intervene", "--drop-blocks", 0, "--start", 3], "DropBlocks.nb must be in"),
    (["intervene", "--zero-skips", 5, "--start", 3], "ZeroSkips.ns must be in 1..4"),
    (["intervene", "--drop-blocks", 1, "--start", 3, "--n", 0], "DropBlocks.n must be in"),
    (["intervene", "--reuse-encoder", "--start", 3, "--n", 4], "ReuseEncoder.n must be in"),
    (["intervene", "--stop-early", 0], "StopEarly.at must be"),
    (["intervene", "--stop-early", 99], "StopEarly.at must be in 1..4"),
    (["intervene", "--plan", '[{"type": "StopEarly"}]'], "StopEarly needs at"),
    (["intervene", "--plan", "5"], "must be JSON or a JSON file"),
    (["intervene", "--plan", "[5]"], 'each intervention is an object with a "type"'),
    (["intervene", "--plan", '{"interventions": 3}'], "a plan is"),
    (["intervene", "--plan", "no/such/plan.json"], "must be JSON or a JSON file"),
    (["intervene", "--plan", '[{"type": "StopEarly", "at": 2}]', "--drop-blocks", 1], "give either --plan or the short flags"),
    (["intervene", "--plan", '[{"type": "ReuseEncoder", "start": 4}]'], "no earlier step computes E[0]"),
    (["sweep", "nope"], "invalid choice: 'nope'"),
    (["sweep", "phases", "--param", "justtext"], "--param takes name=value"),
    (["sweep", "phases", "--param", "n_values=[0]"], "n_values must be a non-empty list"),
    (["sweep", "phases", "--max-batch", 0], "max_batch must be an integer >= 1"),
    (["sweep", "phases", "--chunk-size", -1], "chunk_size must be an integer >= 1"),
    (["sweep", "phases", "--t-step", -1], "t_step must be an integer >= 1"),
    (["sweep", "block-utility", "--param", "nbs=[]"], "nbs must be a non-empty list"),
    (["sweep", "skip-vs-block", "--param", "ns=0"], "ns must be an integer >= 1"),
    (["shortcut", "--preset", "nope"], "--preset must be one of"),
    (["shortcut", "--preset", "paper", "--schedule", "x.json"], "give one of --schedule FILE or --preset NAME"),
    (["shortcut"], "give one of --schedule FILE or --preset NAME"),
    (["shortcut", "--schedule", "no/such/schedule.json"], "does not exist"),
    (["shortcut", "--schedule", "BADYAML"], "is not valid YAML"),
    (["shortcut", "search", "--calibration", 0], "--calibration must be in"),
    (["shortcut", "search", "--samples", 4, "--calibration", 4], "--calibration must be in 1..3"),
    (["shortcut", "search", "--rounds", 0], "--rounds must be at least 1"),
    (["shortcut", "search", "--target-ssim", 1.5], "search target_mean must be a number in (0, 1]"),
    (["shortcut", "search", "--target-quantile", 0], "search target_quantile must be a number in (0, 1]"),
    (["shortcut", "search", "--target-quantile", 0.8, "--quantile", 1], "search quantile must be a number in (0, 1)"),
    (["shortcut", "search", "--budget", 0], "search budget must be a number in (0, 1]"),
    (["shortcut", "search", "--budget", "nan"], "search budget must be a number in (0, 1]"),
    (["shortcut", "search", "--budget", 0.5, "--target-mean", 0.8], "or a compute budget, not both"),
    (["shortcut", "search", "--samples", 4, "--calibration", 2, "--validation", 2], "validation must be in 0..1"),
    (["shortcut", "search", "--validation", -1], "validation must be in 0..39"),
    (["shortcut", "search", "--preset", "paper"], "shortcut search writes a schedule"),
]


@pytest.mark.parametrize("argv, message", MORE_BAD, ids=[" ".join(map(str, a)) for a, _ in MORE_BAD])
def test_more_refused_command_lines(argv, message, tiny_model_dir, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("interventions: [unclosed\n")
    argv = [tmp_path / "bad.yaml" if a == "BADYAML" else a for a in argv]
    out = tmp_path / "out"
    code, _, err = run(argv + ["--model", tiny_model_dir, "--steps", 4, "--out", out, "--quiet"], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert not out.exists() or not any(out.iterdir())


OTHER_BAD = [
    (["report", "NOWHERE"], "holds no results.sqlite"),
    (["train", "--arch", "nope", "--out", "OUT"], "arch must be one of"),
    (["train", "--steps", 0, "--out", "OUT"], "steps must be at least 1"),
    (["train", "--batch-size", 0, "--out", "OUT"], "batch_size must be at least 1"),
    (["train", "--limit-images", 0, "--out", "OUT"], "limit_images must be at least 1"),
    (["train", "--limit-images", -5, "--out", "OUT"], "limit_images must be at least 1"),
    (["train", "--threads", -1, "--out", "OUT"], "--threads must be 0"),
    (["models", "/no/such/model"], "is not 'default', a local folder"),
    (["models", "no/such/file.py:make"], "does not exist"),
    (["report", "NOWHERE", "--threads", -2], "--threads must be 0"),
]


@pytest.mark.parametrize("argv, message", OTHER_BAD, ids=[" ".join(map(str, a)) for a, _ in OTHER_BAD])
def test_other_refused_command_lines(argv, message, tmp_path, capsys):
    argv = [tmp_path / "nowhere" if a == "NOWHERE" else tmp_path / "out" if a == "OUT" else a for a in argv]
    code, _, err = run(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "nowhere").exists()


def test_reproduce_with_too_few_steps_says_what_it_skipped(tiny_model_dir, tmp_path, capsys):
    """Derived grids that come out empty are reported as not run (with why), and the report is written."""
    out = tmp_path / "r"
    code, text, err = run(["reproduce", "--model", tiny_model_dir, "--quick", "--steps", 2, "--samples", 1, "--out", out,
                           "--quiet"], capsys)
    assert code == 0, err
    assert "relax: Not run: cut-relax-cut needs two cuts" in text
    assert "Not run" in (out / "report.html").read_text()


@pytest.mark.parametrize("lr", ["nan", "-1", "inf", "0"])
def test_train_refuses_a_bad_learning_rate_before_making_its_folder(lr, tmp_path, capsys):
    out = tmp_path / "train"
    code, _, err = run(["train", "--arch", "tiny", "--steps", 1, "--lr", lr, "--out", out, "--quiet"], capsys)
    assert code == 2 and "lr must be a finite number > 0" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
