"""``unetscope shortcut run`` and ``unetscope shortcut search``: subcommands with flags of their own
(argparse refuses the other one's, in one line that says which subcommand takes it), each with its
own ``--help``; ``unetscope shortcut ...`` with no subcommand is ``run``, as before."""

import argparse

import pytest

from conftest import run_cli
from unetscope import cli


def _sub(parser, name):
    """The subparser ``name`` of ``parser``."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _flags(parser, hidden=False):
    """The option strings ``parser`` takes (``hidden``: also those refused as the other subcommand's)."""
    return {s for a in parser._actions for s in a.option_strings
            if hidden or not isinstance(a, cli._Elsewhere)}


SHORTCUT = _sub(cli.build_parser(), "shortcut")
RUN, SEARCH = _sub(SHORTCUT, "run"), _sub(SHORTCUT, "search")


def test_help_lists_both_subcommands(capsys):
    code, out, _ = run_cli(["shortcut", "--help"], capsys)
    assert code == 0
    assert "{run,search}" in out and "\n    run " in out and "\n    search " in out


@pytest.mark.parametrize("sub, has, lacks", [
    ("run", ["--schedule SCHEDULE", "--preset", "--threshold", "--nb", "--repeats", "--steps", "--out"],
     ["--budget", "--adaptive", "--executor", "--chunk-size", "--calibration", "--write", "--rounds", "--target-mean"]),
    ("search", ["--target-mean", "--budget", "--calibration", "--validation", "--write", "--rounds", "--adaptive",
                "--executor", "--chunk-size", "--repeats", "--steps", "--out"],
     ["--schedule SCHEDULE", "--preset", "--threshold", "--nb "]),
])
def test_each_subcommand_has_its_own_help(sub, has, lacks, capsys):
    code, out, _ = run_cli(["shortcut", sub, "--help"], capsys)
    assert code == 0 and f"usage: unetscope shortcut {sub}" in out
    assert all(f in out for f in has), [f for f in has if f not in out]
    assert not [f for f in lacks if f in out]


def test_every_flag_of_one_subcommand_is_named_by_the_other():
    """A flag added to one subcommand only is either refused by the other with a reason, or shared."""
    run, search = _flags(RUN), _flags(SEARCH)
    assert run - search == set(cli.RUN_ONLY)
    assert search - run == set(cli.SEARCH_ONLY)
    assert not (set(cli.RUN_ONLY) | set(cli.SEARCH_ONLY)) & (run & search)


def _value(flag):
    return [] if flag == "--adaptive" else ["1"]


WRONG = ([("run", f, "shortcut search") for f in cli.SEARCH_ONLY] + [("search", f, "shortcut run") for f in cli.RUN_ONLY])


@pytest.mark.parametrize("sub, flag, owner", WRONG, ids=[f"{s} {f}" for s, f, _ in WRONG])
def test_a_flag_of_the_other_subcommand_is_argparses_one_line_error(sub, flag, owner, tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = run_cli(["shortcut", sub, flag, *_value(flag), "--model", "no/such/model", "--out", out], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"unetscope shortcut {sub}: error: ") and owner in lines[0], err
    assert flag in lines[0], err
    assert not out.exists()


def test_a_flag_of_search_without_a_subcommand_is_refused_as_run(tmp_path, capsys):
    code, _, err = run_cli(["shortcut", "--preset", "paper", "--budget", "0.5", "--out", tmp_path / "o"], capsys)
    assert code == 2 and err.startswith("unetscope shortcut run: error: --budget is for shortcut search"), err


@pytest.mark.parametrize("sub", ["run", "search"])
def test_an_unknown_flag_is_argparses_error(sub, tmp_path, capsys):
    code, _, err = run_cli(["shortcut", sub, "--bogus", "--out", tmp_path / "o"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unrecognized arguments: --bogus" in err, err


@pytest.mark.parametrize("argv, action", [
    (["shortcut", "--preset", "paper", "--out", "o"], "run"),
    (["shortcut", "--out", "o"], "run"),
    (["shortcut", "run", "--preset", "paper", "--out", "o"], "run"),
    (["shortcut", "search", "--out", "o"], "search"),
    (["shortcut", "--model", "search", "--out", "o"], "run"),  # a value that reads as a subcommand's name stays a value
])
def test_no_subcommand_means_run(argv, action):
    args = cli.build_parser().parse_args(cli._default_action(argv))
    assert args.command == "shortcut" and args.action == action
    assert args.func is {"run": cli._cmd_shortcut_run, "search": cli._cmd_shortcut_search}[action]
    assert cli._default_action(["shortcut", "--help"]) == ["shortcut", "--help"]
    assert cli._default_action(["sample", "--out", "o"]) == ["sample", "--out", "o"]


def test_search_flags_keep_their_defaults():
    args = cli.build_parser().parse_args(["shortcut", "search", "--out", "o"])
    assert (args.calibration, args.validation, args.rounds, args.repeats, args.quantile) == (8, None, 40, 3, 0.1)
    assert (args.executor, args.chunk_size, args.adaptive, args.write) == ("local", None, False, None)
    assert not any(k.startswith("_elsewhere") for k in vars(args))
    run = cli.build_parser().parse_args(cli._default_action(["shortcut", "--schedule", "s.json", "--out", "o"]))
    assert (run.schedule, run.preset, run.threshold, run.nb, run.repeats) == ("s.json", None, None, None, 3)
