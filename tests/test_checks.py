"""The one module of user-facing checks (``unetscope.checks``): hostile values (bools, floats, NaN,
NumPy integers, huge values, strings) refused in one line that names the field, what is allowed and
what was given; the values it takes returned normalised; and the sampler's own refusals, through
the public ``Sampler``, worded exactly as the checks word them (so a sampler can call the checks)."""

import ast
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import unetscope as us
from unetscope import checks
from unetscope.checks import (as_int, as_number, check_batch_size, check_bool, check_device, check_dtype, check_eta,
                              check_grid, check_guidance, check_int, check_number, check_scheduler_options, check_seeds,
                              check_shortcut_choice, check_split, check_steps, check_threads, check_variance,
                              parse_scheduler_option)


class Bad(ValueError):
    """The error a caller hands the checks."""


def refused(fn, *args, **kwargs) -> str:
    """The one-line message ``fn`` refuses with (raised as the error class it was given)."""
    with pytest.raises(Bad) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and msg, msg
    return msg


HOSTILE_INTS = [True, False, np.bool_(True), 2.0, 2.5, float("nan"), float("inf"), "3", None, [3], torch.tensor(3.0),
                torch.tensor([1, 2]), torch.tensor(True), 3 + 0j]


@pytest.mark.parametrize("v", HOSTILE_INTS, ids=repr)
def test_as_int_takes_no_bool_float_string_or_array(v):
    assert as_int(v) is None


@pytest.mark.parametrize("v", [5, np.int64(5), np.int8(5), np.uint64(5), torch.tensor(5), torch.tensor(5, dtype=torch.int16)])
def test_as_int_takes_research_code_integers(v):
    out = as_int(v)
    assert out == 5 and type(out) is int


def test_as_number():
    for v in (0.5, np.float32(0.5), np.float64(0.5), torch.tensor(0.5), torch.tensor(0.5, dtype=torch.float16)):
        assert as_number(v) == 0.5 and type(as_number(v)) is float
    assert as_number(2) == 2.0 and as_number(np.int64(2)) == 2.0
    assert as_number(10**400) == math.inf and as_number(-(10**400)) == -math.inf  # beyond any bound, not an OverflowError
    assert math.isnan(as_number(float("nan")))  # the bounds refuse it
    for v in (True, np.bool_(False), "0.5", None, [0.5], torch.tensor([0.5]), torch.tensor(True), 1j):
        assert as_number(v) is None, v


@pytest.mark.parametrize("v", HOSTILE_INTS + [-1, 0, 10**30, np.int64(-5)], ids=repr)
def test_check_int_refuses_in_one_line_naming_the_field(v):
    msg = refused(check_int, v, Bad, "rounds", 1, 100)
    assert msg == f"rounds must be in 1..100, got {v!r}"


def test_check_int_wording_and_normalising():
    assert refused(check_int, 0, Bad, "rounds", 1) == "rounds must be an integer >= 1, got 0"
    assert refused(check_int, 0, Bad, "--rounds", 1) == "--rounds must be at least 1, got 0"  # a flag: already an int
    assert refused(check_int, 10**9, Bad, "--samples", 1, 1_000_000) == "--samples must be in 1..1,000,000, got 1000000000"
    assert refused(check_int, 5, Bad, "n", high=4) == "n must be an integer <= 4, got 5"
    assert refused(check_int, 1.5, Bad, "n") == "n must be an integer, got 1.5"
    assert refused(check_int, None, Bad, "n", 1) == "n must be an integer >= 1, got None"  # None only where it means something
    assert (refused(check_int, 0, Bad, "chunk_size", 1, none="one chunk per worker")
            == "chunk_size must be an integer >= 1 (or None: one chunk per worker), got 0")
    assert refused(check_int, 0, Bad, "--chunk-size", 1, none="one chunk per worker") == "--chunk-size must be at least 1, got 0"
    assert refused(check_int, 9, Bad, "nb", 1, 4, note="the model's blocks K") == "nb must be in 1..4 (the model's blocks K), got 9"
    assert check_int(None, Bad, "chunk_size", 1, none="one chunk per worker") is None
    out = check_int(np.int64(7), Bad, "n", 1, 10)
    assert out == 7 and type(out) is int
    assert check_int(2**80, Bad, "n", 1) == 2**80


@pytest.mark.parametrize("v", [float("nan"), float("inf"), -float("inf"), True, "0.5", None, 1j, 10**400, [0.5]], ids=repr)
def test_check_number_refuses_non_finite_bool_and_strings(v):
    assert refused(check_number, v, Bad, "eta", 0, 1) == f"eta must be a number in [0, 1], got {v!r}"
    assert refused(check_number, v, Bad, "guidance", 0) == f"guidance must be a finite number >= 0, got {v!r}"


def test_check_number_bounds_and_normalising():
    assert refused(check_number, 0, Bad, "search budget", 0, 1, open_low=True) == "search budget must be a number in (0, 1], got 0"
    assert refused(check_number, 1, Bad, "q", 0, 1, open_low=True, open_high=True) == "q must be a number in (0, 1), got 1"
    assert refused(check_number, 0, Bad, "lr", 0, open_low=True) == "lr must be a finite number > 0, got 0"
    assert refused(check_number, 2, Bad, "x", high=1) == "x must be a finite number <= 1, got 2"
    assert refused(check_number, "a", Bad, "x") == "x must be a finite number, got 'a'"
    for v in (np.float32(0.25), torch.tensor(0.25), 0.25):
        out = check_number(v, Bad, "eta", 0, 1)
        assert out == 0.25 and type(out) is float
    assert check_number(1, Bad, "q", 0, 1) == 1.0 and check_number(None, Bad, "t", 0, none="no target") is None


def test_check_bool():
    assert check_bool(True, Bad, "compile") is True
    for v in (1, "yes", np.bool_(True), None):
        assert refused(check_bool, v, Bad, "compile") == f"compile must be True or False, got {v!r}"


@pytest.mark.parametrize("seeds, message", [
    (5, "seeds must be a sequence of integers, got int"),
    ([], "give at least one seed"),
    ([0, 0.5], "seeds must be integers, got 0.5"),
    ([True], "seeds must be integers, got True"),
    (["1"], "seeds must be integers, got '1'"),
    ("12", "seeds must be integers, got '1'"),
    ([float("nan")], "seeds must be integers, got nan"),
    ([1, -1], "seeds must be in 0..2^63-1, got -1"),
    ([2**63], "seeds must be in 0..2^63-1, got 9223372036854775808"),
    ([np.uint64(2**63)], "seeds must be in 0..2^63-1, got 9223372036854775808"),
])
def test_check_seeds(seeds, message):
    assert refused(check_seeds, seeds, Bad) == message
    whole = refused(check_seeds, seeds, Bad, whole=True)  # the API's setup: the list as given
    assert whole.startswith("seeds must be a non-empty list of integers in 0..2^63-1, got ")


def test_check_seeds_normalises_and_names_the_flag():
    out = check_seeds(np.arange(3), Bad)
    assert out == [0, 1, 2] and all(type(s) is int for s in out)
    assert check_seeds((s for s in [2**63 - 1]), Bad) == [2**63 - 1]  # a generator, read once
    assert refused(check_seeds, [2**64], Bad, name="--seeds") == "--seeds must be in 0..2^63-1, got 18446744073709551616"
    long = refused(check_seeds, list(range(100)) + [-1], Bad, whole=True)
    assert len(long) < 200 and "..." in long  # one short line, however many seeds were given


def test_check_steps():
    for v in (0, -1, 1001, 2.0, True, "10", None, float("nan"), 10**100):
        assert refused(check_steps, v, 1000, Bad) == f"steps must be an integer in 1..1000 (the model's training timesteps), got {v!r}"
    assert refused(check_steps, 0, None, Bad, name="--steps") == "--steps must be an integer in 1..T (the model's training timesteps), got 0"
    assert check_steps(np.int64(10), 1000, Bad) == 10 and check_steps(10**6, None, Bad) == 10**6


def test_check_eta_and_variance_per_sampler():
    assert check_eta(np.float64(0.5), "ddim", Bad) == 0.5 and check_eta(0, "ddpm", Bad) == 0.0 and check_eta(0.0, "euler", Bad) == 0.0
    assert refused(check_eta, float("nan"), "ddim", Bad) == "eta must be a number in [0, 1], got nan"
    assert refused(check_eta, True, "ddim", Bad) == "eta must be a number in [0, 1], got True"
    assert refused(check_eta, 0.5, "ddpm", Bad) == "eta 0.5 has no effect with method 'ddpm': eta is DDIM's (use method='ddim')"
    assert (refused(check_eta, 0.5, "ddpm", Bad, name="--eta", method_name="--sampler")
            == "--eta 0.5 has no effect with --sampler ddpm: eta is DDIM's (use --sampler ddim)")
    assert refused(check_eta, "x", "dpm++", Bad).startswith("eta 'x' has no effect with scheduler 'dpm++'")
    assert refused(check_eta, float("nan"), "dpm++", Bad).startswith("eta nan has no effect")
    assert check_variance(None, "ddpm", Bad, model_variance="fixed_small") == "fixed_small"
    assert check_variance("fixed_large", "ddim", Bad) == "fixed_large"  # DDIM reads past it (Python); the CLI is strict
    assert (refused(check_variance, "fixed_large", "ddim", Bad, name="--variance", method_name="--scheduler", strict=True)
            == "--variance fixed_large has no effect with --scheduler ddim: it is DDPM's (use --scheduler ddpm)")
    assert refused(check_variance, "fixed_small", "euler", Bad).startswith("variance 'fixed_small' has no effect with scheduler 'euler'")
    assert refused(check_variance, "big", "ddpm", Bad) == "variance must be fixed_small, fixed_large or learned_range, got 'big'"
    assert refused(check_variance, 1, "ddpm", Bad, model_variance="fixed_small").endswith("got 1")
    assert "2C channels" in refused(check_variance, "learned_range", "ddpm", Bad, model_variance="fixed_small")


def test_small_checks():
    assert refused(check_guidance, -1, Bad) == "guidance must be a finite number >= 0, got -1"
    assert refused(check_guidance, float("inf"), Bad, name="--guidance") == "--guidance must be a finite number >= 0, got inf"
    assert check_batch_size(None, Bad) is None and check_batch_size(np.int16(2), Bad) == 2
    for v in (0, 2.5, True, "2"):
        assert refused(check_batch_size, v, Bad) == f"batch_size must be an integer >= 1 (or None: one batch), got {v!r}"
    assert check_threads(np.int32(2), Bad) == 2 and check_threads(0, Bad) == 0
    for v in (-1, True, 1.5, None, "2"):
        assert refused(check_threads, v, Bad, name="--threads") == f"--threads must be 0 (torch's default) or a positive count, got {v!r}"
    assert refused(check_threads, -1, Bad, zero="one per CPU of a slot").startswith("threads must be 0 (one per CPU of a slot)")


def test_check_dtype_and_device():
    assert check_dtype("bfloat16", Bad) is torch.bfloat16 and check_dtype(torch.float16, Bad) is torch.float16
    assert check_dtype(None, Bad) is None
    for v in ("float64", "Float32", 5, np.float32):
        assert refused(check_dtype, v, Bad) == f"dtype must be one of float32, float16, bfloat16 (or a torch.dtype), got {v!r}"
    assert check_device(None, Bad) == torch.device("cpu") and check_device(torch.device("cpu"), Bad) == torch.device("cpu")
    here = ", ".join(checks.available_devices())
    assert refused(check_device, "gpu0", Bad) == f"device 'gpu0' is not a device name; this machine has {here}"
    assert refused(check_device, 5, Bad, name="--device").startswith("--device 5 is not a device name")
    assert refused(check_device, "cuda:99", Bad) == f"device 'cuda:99' is not available on this machine; it has {here}"


def test_scheduler_options():
    import diffusers

    cls = diffusers.DPMSolverMultistepScheduler
    assert check_scheduler_options({"solver_order": 3}, cls, Bad) == {"solver_order": 3}
    assert check_scheduler_options(None, cls, Bad) == {} and check_scheduler_options({}, None, Bad, method="ddim") == {}
    assert "takes no option 'solver_ordr'" in refused(check_scheduler_options, {"solver_ordr": 3}, cls, Bad)
    assert "set by unetscope" in refused(check_scheduler_options, {"prediction_type": "sample"}, cls, Bad)
    assert "not a finite number" in refused(check_scheduler_options, {"solver_order": math.nan}, cls, Bad)
    assert "must be a number, true/false" in refused(check_scheduler_options, {"solver_order": {1: 2}}, cls, Bad)
    assert "must be a dict" in refused(check_scheduler_options, ["solver_order"], cls, Bad)
    assert (refused(check_scheduler_options, {"a": 1}, None, Bad, method="ddim")
            == "scheduler options are a diffusers scheduler's; method 'ddim' is unetscope's own (got {'a': 1})")
    assert parse_scheduler_option("solver_order=3", Bad) == ("solver_order", 3)
    assert parse_scheduler_option("use_karras_sigmas=TRUE", Bad) == ("use_karras_sigmas", True)
    assert parse_scheduler_option("algorithm_type=dpmsolver++", Bad) == ("algorithm_type", "dpmsolver++")
    for text in ("novalue", "=3", 3, None):
        assert "KEY=VALUE" in refused(parse_scheduler_option, text, Bad)
    for text in ("x=nan", "x=-inf", "x=Infinity"):
        assert "is not a finite number" in refused(parse_scheduler_option, text, Bad)


def test_sweep_and_search_sizes():
    assert check_grid(Bad) == (None, None, None, None)
    assert check_grid(Bad, t_step=np.int64(2), chunk_size=16, images=0, max_batch=8) == (2, 16, 0, 8)
    assert refused(check_grid, Bad, images=-1) == "images must be an integer >= 0 (samples whose images are kept), got -1"
    assert refused(check_grid, Bad, t_step=True) == "t_step must be an integer >= 1, got True"
    assert check_split(48, 8, None, Bad) == (8, 16) and check_split(10, 2, None, Bad) == (2, 4) and check_split(4, 2, 0, Bad) == (2, 0)
    for cal in (0, 4, 2.0, True, "2", None):
        assert refused(check_split, 4, cal, None, Bad).startswith("calibration must be in 1..3 (the rest of the samples")
    for val in (2, -1, 1.0, False):
        assert refused(check_split, 4, 2, val, Bad).startswith("validation must be in 0..1 (4 samples, 2 calibrate")
    assert refused(check_split, 4, 4, None, Bad, names=("--calibration", "--validation")).startswith("--calibration must be in 1..3")


def test_shortcut_choice():
    presets = ("paper", "paper-cache", "change")
    assert check_shortcut_choice(None, "paper", presets, Bad) is None
    assert check_shortcut_choice("s.json", None, presets, Bad) is None
    assert check_shortcut_choice(None, "change", presets, Bad, threshold=np.float32(0.5)) == 0.5
    assert refused(check_shortcut_choice, None, None, presets, Bad) == "give one of schedule (a file) or preset (paper, paper-cache, change)"
    assert (refused(check_shortcut_choice, "s.json", "paper", presets, Bad, flags=True)
            == "give one of --schedule FILE or --preset NAME (paper, paper-cache, change)")
    assert refused(check_shortcut_choice, None, "Paper", presets, Bad, flags=True) == "--preset must be one of paper, paper-cache, change; got 'Paper'"
    assert refused(check_shortcut_choice, None, "change", presets, Bad).startswith("the change preset needs threshold")
    assert refused(check_shortcut_choice, None, "paper", presets, Bad, nb=2) == "threshold and nb are the change preset's: give them with preset='change'"
    for t in (-1, float("nan"), float("inf"), "0.5", True):
        assert refused(check_shortcut_choice, None, "change", presets, Bad, threshold=t, flags=True).startswith(
            "--threshold must be a finite number >= 0")


# --- the sampler's own refusals are the checks' (the public Sampler, worded exactly alike) ---------------
@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model_dir):
    from conftest import save_tiny_model

    uncond = save_tiny_model(tmp_path_factory.mktemp("uncond") / "m", classes=None)
    return us.load_model(tiny_model_dir), us.load_model(uncond)


def _sampler_says(model, **kw) -> str:
    with pytest.raises(us.SamplerError) as e:
        us.Sampler(model, **{"steps": 4, **kw})
    return str(e.value)


def test_the_sampler_words_its_refusals_as_the_checks_do(models):
    cond, uncond = models
    E = us.SamplerError
    T = cond.schedule.num_train_timesteps

    def checks_say(fn, *a, **k):
        with pytest.raises(E) as e:
            fn(*a, **k)
        return str(e.value)

    for steps in (0, T + 1, 2.5, True, "4", np.float64(4)):
        assert _sampler_says(cond, steps=steps) == checks_say(check_steps, steps, T, E)
    for eta in (float("nan"), -0.1, 1.5, True, "0.5"):
        assert _sampler_says(cond, method="ddim", eta=eta) == checks_say(check_eta, eta, "ddim", E)
    assert _sampler_says(cond, method="ddpm", eta=0.5) == checks_say(check_eta, 0.5, "ddpm", E)
    for eta in (0.5, float("nan"), "x"):
        assert _sampler_says(cond, method="dpm++", eta=eta) == checks_say(check_eta, eta, "dpm++", E)
    for g in (-1, float("nan"), float("inf"), True, "3"):
        assert _sampler_says(cond, guidance=g) == checks_say(check_guidance, g, E)
    assert _sampler_says(uncond, guidance=2) == checks_say(check_guidance, 2, E, model=uncond)
    for v in ("big", "learned_range"):
        assert _sampler_says(cond, variance=v) == checks_say(check_variance, v, "ddpm", E, model_variance=cond.variance_type)
    assert _sampler_says(cond, method="euler", variance="fixed_small") == checks_say(check_variance, "fixed_small", "euler", E)
    for b in (0, 2.5, True):
        assert _sampler_says(cond, batch_size=b) == checks_say(check_batch_size, b, E)
    assert _sampler_says(cond, compile=1) == checks_say(check_bool, 1, E, "compile")
    assert _sampler_says(cond, method="ddim", options={"a": 1}) == checks_say(check_scheduler_options, {"a": 1}, None, E, method="ddim")
    import diffusers

    for opts in ({"solver_ordr": 3}, {"prediction_type": "sample"}, {"solver_order": math.nan}):
        assert (_sampler_says(cond, method="dpm++", options=opts)
                == checks_say(check_scheduler_options, opts, diffusers.DPMSolverMultistepScheduler, E))
    s = us.Sampler(cond, steps=4)
    for seeds in (5, [], [0.5], [True], [-1], [2**64], ["0"]):
        with pytest.raises(E) as e:
            s.sample(seeds)
        assert str(e.value) == checks_say(check_seeds, seeds, E)


# --- the bottom layer -------------------------------------------------------------------------
def test_checks_is_the_bottom_layer_and_light():
    tree = ast.parse(Path(checks.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not [n for n in top if isinstance(n, ast.ImportFrom) and n.level > 0], "checks imports no module of the package"
    assert not [n for n in top if isinstance(n, ast.Import) and any(a.name.split(".")[0] == "torch" for a in n.names)]
    code = "import sys, unetscope.checks as c; c.check_int(3, ValueError, 'n', 1); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_every_public_check_is_documented_and_exported():
    for name in checks.__all__:
        obj = getattr(checks, name)
        assert not callable(obj) or obj.__doc__, name
