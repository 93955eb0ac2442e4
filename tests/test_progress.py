"""Progress of every run the driver makes (#35), alike in a terminal and in a log file: plain lines in
a log, and a shortcut run that names each pass it is in (its quality pass, each timed run, the FLOP count)."""

import io

from conftest import run_cli
from unetscope.progress import LineProgress, progress_bar


def test_a_log_file_gets_lines_at_tenths_no_closer_than_the_interval():
    now = [0.0]
    f = io.StringIO()
    bar = LineProgress(100, "timed run 2 of 3: shortcut", "step", file=f, clock=lambda: now[0])
    for _ in range(100):
        now[0] += 0.5  # 50 s in all: a line at most every 5 s, at most one per tenth
        bar.update(1)
    bar.set_postfix_str("4/4 samples")
    bar.close()
    lines = f.getvalue().splitlines()
    assert lines[0] == "timed run 2 of 3: shortcut: 0/100 steps (0%), 0 s"
    assert lines[-1] == "timed run 2 of 3: shortcut: 100/100 steps (100%), 4/4 samples, 50 s"
    assert 5 <= len(lines) <= 12 and all("\r" not in x for x in lines)
    f = io.StringIO()
    fast = LineProgress(100, "x", "step", file=f, clock=lambda: 0.0)  # quick work: the first and last lines only
    fast.update(100)
    fast.close()
    assert len(f.getvalue().splitlines()) == 2


def test_a_terminal_gets_a_bar_and_a_pipe_gets_lines():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert not isinstance(progress_bar(3, "x", file=Tty()), LineProgress)
    assert isinstance(progress_bar(3, "x", file=io.StringIO()), LineProgress)


def test_a_shortcut_run_names_every_pass_it_runs(tiny_model_dir, tmp_path, capsys):
    code, out, err = run_cli(["shortcut", "--model", str(tiny_model_dir), "--preset", "paper", "--samples", "2",
                              "--steps", "10", "--repeats", "2", "--threads", "1", "--out", str(tmp_path / "s")], capsys)
    assert code == 0, err
    for name in ("quality pass (warm-up): baseline", "quality pass (warm-up): shortcut", "timed run 1 of 2: baseline",
                 "timed run 2 of 2: shortcut", "counting FLOPs: shortcut"):
        assert f"{name}: sampling (ddpm, " in err, (name, err)
    assert "10/10 steps (100%), 2/2 samples" in err
    code, out, quiet = run_cli(["shortcut", "--model", str(tiny_model_dir), "--preset", "paper", "--samples", "2",
                                "--steps", "10", "--repeats", "1", "--threads", "1", "--quiet", "--out", str(tmp_path / "q")],
                               capsys)
    assert code == 0 and "sampling (" not in quiet
