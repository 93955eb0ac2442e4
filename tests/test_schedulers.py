"""Any diffusers scheduler as a sampler (#25): each named scheduler against diffusers' own scheduler
driving the same guided U-Net call by hand, the noise bank under every scheduler, prefix sharing with
the scheduler's state, and bad input."""

import math

import pytest
import torch

import diffusers
from unetscope import DropBlocks, Plan, ReuseEncoder, Sampler, SkipSteps, StopEarly, ZeroSkips, load_model
from unetscope.noise import NoiseBank
from unetscope.plan import AdaptiveCache
from unetscope.sampling import SamplerError
from unetscope.sampling import SCHEDULERS, SchedulerSolver
from unetscope.sweep import SweepEngine, count_evaluations

SEEDS, LABELS = [3, 4, 5], [1, 2, 7]
G = 3.0


@pytest.fixture(scope="module")
def lin_dir(tmp_path_factory):
    """The tiny model on linear betas, as Stable Diffusion's: a cosine schedule's last beta (0.999) puts the
    sigma schedulers' sigma_max at 2e4, where an untrained U-Net's outputs overflow in diffusers' own loop too."""
    from conftest import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("lin") / "model", beta_schedule="linear")


@pytest.fixture(scope="module")
def model(lin_dir):
    return load_model(lin_dir)


@torch.no_grad()
def _by_hand(model, cls_name, settings, steps):
    """diffusers' loop, written out: the scheduler on the model's betas, x_S = the bank's noise times
    init_noise_sigma, the guided call (cond and null rows, eps_u + G (eps_c - eps_u)), and a generator
    per sample seeded by the bank's key of (seed, step)."""
    sch = model.schedule
    s = getattr(diffusers, cls_name)(num_train_timesteps=sch.num_train_timesteps, trained_betas=sch.betas.numpy(),
                                     prediction_type="epsilon", **settings)
    s.set_timesteps(steps)
    x = NoiseBank(SEEDS, model.sample_shape).initial() * s.init_noise_sigma
    c = model.make_cond(LABELS, len(SEEDS))
    null = model.null_cond(len(SEEDS))
    t, gens = steps + 1, None
    for i, tau in enumerate(s.timesteps):
        if getattr(s, "state_in_first_order", True) and not (cls_name == "PNDMScheduler" and s.counter == 1):
            t -= 1  # a new step begins: its generators
            gens = NoiseBank(SEEDS, model.sample_shape).generators(t)
        xin = s.scale_model_input(x, tau)
        tt = torch.full((len(SEEDS),), float(tau))
        tt = tt if torch.is_floating_point(s.timesteps) else tt.long()
        oc = model.runner(xin, tt, c).out
        ou = model.runner(xin, tt, null).out
        eps = ou + G * (oc - ou)
        kw = {"generator": gens} if "generator" in __import__("inspect").signature(s.step).parameters else {}
        x = s.step(eps, tau, x, **kw).prev_sample
    assert t == 1
    return x


@pytest.mark.parametrize("name", list(SCHEDULERS) + ["DPMSolverSinglestepScheduler"])
def test_an_empty_plan_is_diffusers_scheduler_by_hand(model, name):
    cls_name, settings = SCHEDULERS.get(name, (name, {}))
    S = 4
    got = Sampler(model, steps=S, method=name, guidance=G, clip_x0=False).sample(SEEDS, LABELS)
    want = _by_hand(model, cls_name, settings, S)
    assert torch.isfinite(got.x0).all()
    # the untrained U-Net without clipping grows x to ~1e2..1e3: the tolerance is relative to that scale
    err = (got.x0 - want).abs().max() / want.abs().max().clamp_min(1.0)
    assert err < 1e-5, (name, err)
    calls = {"heun": 2 * S - 1, "dpm2": 2 * S - 1, "pndm": S + 1}.get(name, S)
    assert got.nfe == calls and len(got.steps_run) == calls


def test_every_scheduler_starts_from_the_banks_x_S(model):
    x_S = NoiseBank(SEEDS, model.sample_shape).initial()
    for name in ("ddpm", "ddim", "dpm++", "euler-a", "heun", "unipc"):
        s = Sampler(model, steps=3, method=name, guidance=G)
        first = next(s.sample_progressive(SEEDS, LABELS))
        scale = s.solver.new_scheduler().init_noise_sigma if isinstance(s.solver, SchedulerSolver) else 1.0
        assert torch.equal(first["x_t"], x_S * scale), name


def test_stochastic_noise_is_the_banks_per_sample(model):
    """euler-a's noise is drawn per sample from the bank's (seed, step) key: a seed alone equals the same
    seed in a batch, and two seeds differ."""
    s = Sampler(model, steps=5, method="euler-a", guidance=G)
    batch = s.sample(SEEDS, LABELS).x0
    alone = s.sample([SEEDS[1]], [LABELS[1]]).x0
    assert torch.allclose(batch[1:2], alone, atol=1e-4)  # batch-size rounding only (a deterministic scheduler differs as much)
    other = s.sample([SEEDS[1] + 100], [LABELS[1]]).x0
    assert (other - alone).abs().max() > 1e-2
    # and the noise is the bank's eps_t: the first row drawn for step t with the bank's generator
    g = NoiseBank([SEEDS[0]], model.sample_shape).generators(5)[0]
    assert torch.equal(torch.randn((1, *model.sample_shape), generator=g)[0], NoiseBank([SEEDS[0]], model.sample_shape).step(5)[0])


@pytest.mark.parametrize("name", ["dpm++", "euler-a", "heun"])
def test_prefix_shared_sweeps_equal_each_variant_alone(model, name):
    S, K = 6, model.num_blocks
    s = Sampler(model, steps=S, method=name, guidance=G)
    plans = [Plan([DropBlocks(2, 4, 2)]), Plan([DropBlocks(1, 3, 2, "cache")]), Plan([ZeroSkips(1, 5, 3)]),
             Plan([DropBlocks(2, 4, 2), DropBlocks(1, 2, 1)]), Plan([ReuseEncoder(4, 2)]),
             Plan([AdaptiveCache(K - 1, 0.2, start=5)])]
    res = SweepEngine(s, max_batch=len(SEEDS)).run_chunk(SEEDS, LABELS, plans)
    base = s.sample(SEEDS, LABELS)
    assert torch.equal(res.baseline_x0, base.x0)
    for p, got in zip(plans, res.finals):
        alone = s.sample(SEEDS, LABELS, p).x0
        assert torch.equal(got, alone), (name, p, (got - alone).abs().max())
    minimum, naive = count_evaluations(plans, S, s.calls)
    assert res.evaluations == minimum < naive
    stacked = SweepEngine(s, max_batch=64).run_chunk(SEEDS, LABELS, plans)  # plans stacked in one call: rounding only
    for a, b in zip(stacked.finals, res.finals):
        assert torch.allclose(a, b, atol=1e-4)


def test_heun_calls_twice_per_step_and_a_cache_is_refreshed_by_computing_calls_only(model):
    """Both calls of a Heun step take its action; the cache a DropBlocks(cache) reads is the output of the
    last call that computed the part (step 4's second call), never overwritten by a call that read it."""
    S, K = 4, model.num_blocks
    s = Sampler(model, steps=S, method="heun", guidance=G)
    assert [s.calls(t) for t in range(S, 0, -1)] == [2, 2, 2, 1]
    rows = []
    h = model.module.mid_block.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    try:
        traj = s.sample(SEEDS, LABELS, Plan([DropBlocks(K - 1, 3, 2, "cache")]))
    finally:
        h.remove()
    assert traj.nfe == 7 and len(rows) == 3  # the middle block ran on step 4's two calls and step 1's one
    caps = []
    orig = s.step

    def spy(*a, **k):  # the deep output each step hands on: step 3's and step 2's must be step 4's
        out = orig(*a, **k)
        caps.append((out.t, out.captured.get(f"D[{K - 2}]")))
        return out

    s.step = spy
    s.sample(SEEDS, LABELS, Plan([DropBlocks(K - 1, 3, 2, "cache")]))
    got = dict(caps)
    assert got[4] is not None and got[3] is None and got[2] is None  # nothing captured where the part did not run


def test_a_research_unet_with_fractional_timesteps(tmp_path):
    """A guided-diffusion-shaped U-Net under euler (fractional timesteps) and dpm++ with an intervention."""
    from unetscope.models import load_model as lm

    m = lm("examples/mnist_unet.py:make_model")
    for name in ("euler", "dpm++"):
        s = Sampler(m, steps=3, method=name, guidance=1.0)
        a = s.sample([0, 1]).x0
        b = s.sample([0, 1], None, Plan([DropBlocks(1, 2, 1)])).x0
        assert torch.isfinite(a).all() and (a - b).abs().max() > 0


def test_scheduler_options_pass_through_and_bad_ones_are_one_line(model):
    s = Sampler(model, steps=5, method="dpm++", guidance=G, options={"solver_order": 3, "use_karras_sigmas": True})
    sch = s.solver.new_scheduler()
    assert sch.config.solver_order == 3 and sch.config.use_karras_sigmas
    assert s.describe()["options"] == {"solver_order": 3, "use_karras_sigmas": True}
    assert (s.sample(SEEDS, LABELS).x0 - Sampler(model, steps=5, method="dpm++", guidance=G).sample(SEEDS, LABELS).x0).abs().max() > 1e-4
    for kw, msg in ((dict(method="magic"), "unknown scheduler 'magic'"),
                    (dict(method="dpm++", options={"solver_ordr": 3}), "takes no option 'solver_ordr'"),
                    (dict(method="dpm++", options={"solver_order": math.nan}), "not a finite number"),
                    (dict(method="dpm++", options={"prediction_type": "v_prediction"}), "set by unetscope"),
                    (dict(method="dpm++", options={"algorithm_type": "nonsense"}), "refuses"),
                    (dict(method="dpm++", eta=0.5), "eta is DDIM's"),
                    (dict(method="ddim", options={"solver_order": 2}), "unetscope's own")):
        with pytest.raises(SamplerError, match=msg.replace("(", r"\(").replace("+", r"\+")) as e:
            Sampler(model, steps=5, guidance=G, **kw)
        assert "\n" not in str(e.value)
    for plan in (Plan([SkipSteps(4, 1)]), Plan([StopEarly(2)])):
        with pytest.raises(SamplerError, match="walk is the scheduler's; take fewer steps"):
            Sampler(model, steps=5, method="unipc", guidance=G).sample(SEEDS, LABELS, plan)


def test_options_that_repeat_timesteps_are_refused_in_one_line(tiny_model_dir):
    """Karras sigmas on a cosine schedule put the first steps on timestep 999 again and again, which
    diffusers' own step cannot walk (it looks the step up by timestep): one line, not an IndexError."""
    m = load_model(tiny_model_dir)
    with pytest.raises(SamplerError, match="repeated timesteps") as e:
        Sampler(m, steps=10, method="dpm++", options={"solver_order": 3, "use_karras_sigmas": True})
    assert "\n" not in str(e.value)
    assert Sampler(m, steps=10, method="heun").calls(10) == 2  # Heun repeats a timestep by design


BAD = [
    (["sample", "--scheduler", "magic"], "unknown scheduler 'magic'"),
    (["sample", "--scheduler", "dpm++", "--scheduler-opt", "solver_ordr=3"], "takes no option 'solver_ordr'"),
    (["sample", "--scheduler", "dpm++", "--scheduler-opt", "solver_order=nan"], "not a finite number"),
    (["sample", "--scheduler", "dpm++", "--scheduler-opt", "novalue"], "KEY=VALUE"),
    (["sample", "--scheduler", "ddim", "--scheduler-opt", "solver_order=2"], "unetscope's own"),
    (["sample", "--scheduler", "dpm++", "--eta", "0.5"], "--eta 0.5 has no effect with --scheduler dpm++"),
    (["sample", "--scheduler", "dpm++", "--sampler", "ddim"], "disagree"),
    (["intervene", "--scheduler", "dpm++", "--skip-steps", "2", "--start", "4"], "take fewer steps"),
    (["intervene", "--scheduler", "unipc", "--stop-early", "2"], "take fewer steps"),
    (["shortcut", "--scheduler", "heun", "--preset", "paper", "--steps", "40"], "take fewer steps"),  # it stops early
]


@pytest.mark.parametrize("argv, msg", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_scheduler_input_is_one_line_and_exit_2_with_nothing_written(lin_dir, tmp_path, capsys, argv, msg):
    from conftest import run_cli

    out = tmp_path / "out"
    code, _, err = run_cli([argv[0], "--model", lin_dir, "--steps", "6", "--samples", "2", "--out", out, "--quiet", *argv[1:]],
                           capsys)
    assert code == 2 and msg in err and err.count("\n") == 1, err
    assert not out.exists() or not any(out.rglob("*.*")), sorted(out.rglob("*"))


def test_the_command_line_records_the_scheduler_and_its_options(lin_dir, tmp_path, capsys):
    import json

    from conftest import run_cli

    code, out, err = run_cli(["sample", "--model", lin_dir, "--scheduler", "dpm++", "--scheduler-opt", "solver_order=3",
                              "--steps", "5", "--samples", "2", "--out", tmp_path / "s", "--quiet"], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "s" / "samples.json").read_text())["sampler"]
    assert meta["method"] == "dpm++" and meta["scheduler"] == "DPMSolverMultistepScheduler" and meta["options"] == {"solver_order": 3}
    code, out, err = run_cli(["sweep", "block-utility", "--model", lin_dir, "--scheduler", "euler-a", "--steps", "4",
                              "--samples", "2", "--out", tmp_path / "w", "--quiet"], capsys)
    assert code == 0, err
    figs = json.loads(next((tmp_path / "w" / "findings").glob("block-utility*.json")).read_text())
    data = json.loads((tmp_path / "w" / figs["figures"][0]["file"]).with_suffix(".json").read_text())
    assert "euler-a (EulerAncestralDiscreteScheduler), S=4" in data["title"]


def test_the_search_on_dpm_meets_its_target_on_held_out_seeds_and_is_deterministic():
    """The search on DPM-Solver++ (the research-style model, S = 8): the walk's moves left out, the
    target met on seeds it never saw, the same schedule twice."""
    from pathlib import Path

    import unetscope as us
    from unetscope.shortcut import heldout_ssim, search

    ref = f"{Path(__file__).resolve().parents[1] / 'examples' / 'mnist_unet.py'}:make_model"
    s = Sampler(us.load_model(ref), steps=8, method="dpm++")
    cfg = dict(target_mean=0.9, max_rounds=2, per_round=4)
    a = search(s, list(range(6)), None, validation_seeds=list(range(6, 12)), **cfg)
    b = search(s, list(range(6)), None, validation_seeds=list(range(6, 12)), **cfg)
    assert a["plan"] and a["plan"] == b["plan"] and a["history"] == b["history"]
    assert not any(isinstance(i, (SkipSteps, StopEarly)) for i in a["plan"])
    assert a["predicted_compute"] < 1 and a["validation_holds"]
    held = heldout_ssim(s, a["plan"], list(range(100, 112)))
    assert held.mean() >= 0.9, held
