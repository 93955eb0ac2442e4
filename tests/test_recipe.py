"""Recipes (#36): a schedule file that names the sampler it runs on and the reference it was measured
against. It round-trips through its file; ``shortcut run --schedule RECIPE`` (and
``us.measure_shortcut``) runs it on its own sampler against its reference, and refuses flags that say
otherwise before a model loads; ``us.accelerate(pipe, recipe)`` puts the recipe's scheduler into the
pipeline for the handle's life, at the recipe's steps, and gives the pipeline's own scheduler back."""

import json
import warnings

import pytest
import torch

import unetscope as us
from conftest import run_cli, sd_pipeline
from unetscope import DropBlocks, Plan, Recipe, Sampler
from unetscope.deploy import DeployError, accelerate
from unetscope.plan_file import read_schedule

SEEDS = [0, 1]
REFERENCE = dict(scheduler="ddim", steps=10, options={})
CUT = Plan([DropBlocks(2, 3, 2, "cache")])  # steps 3 and 2 of 4 read the bottom blocks of step 4


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return us.load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def pipe(sd_dir):
    return sd_pipeline(sd_dir)


def _file(tmp_path, recipe, name="recipe.json"):
    return us.write_recipe(tmp_path / name, recipe)


# --- the file ------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_recipe_round_trips_through_its_file(tmp_path, suffix):
    recipe = Recipe("dpm++", 12, CUT, options={"solver_order": 3, "use_karras_sigmas": True},
                    reference=dict(scheduler="ddim", steps=100, options={}))
    path = us.write_recipe(tmp_path / f"r{suffix}", recipe, meta={"note": "by hand"})
    assert us.read_recipe(path) == recipe
    found = read_schedule(path)
    assert found.recipe == recipe and found.plan == CUT and found.steps == 12 and found.meta["note"] == "by hand"
    assert recipe.sampler_settings() == dict(method="dpm++", steps=12, scheduler_options={"solver_order": 3,
                                                                                          "use_karras_sigmas": True}, eta=0.0)
    ddim = Recipe("ddim", 20, Plan(), eta=0.5)  # the solver alone, DDIM's eta, no reference
    assert us.read_recipe(us.write_recipe(tmp_path / f"d{suffix}", ddim)) == ddim


# --- measure against another sampler --------------------------------------------------------------
def test_measure_against_another_sampler(model, tiny_model_dir):
    """The solver alone (an empty plan) against a reference sampler: each side's images are its own
    sampler's, the baseline's FLOPs and evaluations are the reference's, and the prediction is told."""
    from unetscope.shortcut import ShortcutError, measure, plan_flops

    dpm = Sampler(model, steps=4, method="dpm++", guidance=3.0)
    ref = Sampler(model, steps=10, method="ddim", guidance=3.0)
    res = measure(dpm, Plan(), SEEDS, [1, 2], repeats=1, baseline=ref)
    assert torch.equal(res["images_baseline"], ref.sample(SEEDS, [1, 2]).images)
    assert torch.equal(res["images_shortcut"], dpm.sample(SEEDS, [1, 2]).images)
    assert (res["nfe_baseline"], res["nfe_shortcut"]) == (10, 4)
    assert res["flops_baseline"] == plan_flops(ref, Plan(), 0, [1]) and res["flops_shortcut"] == plan_flops(dpm, Plan(), 0, [1])
    assert res["compute_saving"] == pytest.approx(0.6)  # 4 full evaluations of 10
    assert 0 < res["time_saving_predicted"] < 1
    assert (res["sampler"]["method"], res["baseline_sampler"]["method"]) == ("dpm++", "ddim")
    assert res["baseline_sampler"]["steps"] == 10 and 0 < res["ssim_mean"] < 1
    with pytest.raises(ShortcutError, match="holds no interventions"):
        measure(dpm, Plan(), SEEDS, [1, 2], repeats=1, baseline=dpm)  # its own solver: nothing to compare
    other = Sampler(us.load_model(tiny_model_dir), steps=10, method="ddim", guidance=3.0)  # equal weights, another object
    with pytest.raises(ShortcutError, match="same model object"):
        measure(dpm, CUT, SEEDS, [1, 2], repeats=1, baseline=other)


def test_measure_against_itself_is_todays_run(model):
    from unetscope.shortcut import measure

    s = Sampler(model, steps=4, method="dpm++", guidance=3.0)
    a = measure(s, CUT, SEEDS, [1, 2], repeats=1)
    b = measure(s, CUT, SEEDS, [1, 2], repeats=1, baseline=s)
    for k in ("images_baseline", "images_shortcut"):
        assert torch.equal(a[k], b[k])
    assert (a["flops_baseline"], a["flops_shortcut"], a["ssim"]) == (b["flops_baseline"], b["flops_shortcut"], b["ssim"])
    assert a["sampler"] == a["baseline_sampler"] == s.describe()


# --- shortcut run --schedule RECIPE --------------------------------------------------------------
def test_shortcut_run_runs_a_recipe_on_its_sampler_against_its_reference(model, tiny_model_dir, tmp_path, monkeypatch,
                                                                         capsys):
    import unetscope.shortcut.run as run_mod

    recipe = Recipe("dpm++", 4, CUT, reference=REFERENCE)
    seen = {}

    def spy(sampler, plan, seeds, cond, **kw):
        res = orig(sampler, plan, seeds, cond, **kw)
        seen.update(res=res, sampler=sampler, plan=plan, cond=cond)
        return res

    orig = run_mod.measure
    monkeypatch.setattr(run_mod, "measure", spy)
    out = tmp_path / "o"
    code, stdout, err = run_cli(["shortcut", "run", "--model", tiny_model_dir, "--schedule", _file(tmp_path, recipe),
                                 "--samples", "2", "--repeats", "1", "--out", out, "--quiet"], capsys)
    assert code == 0, err
    summ = json.loads((out / "summary.json").read_text())
    assert (summ["sampler"]["method"], summ["sampler"]["steps"]) == ("dpm++", 4)
    assert (summ["baseline_sampler"]["method"], summ["baseline_sampler"]["steps"]) == ("ddim", 10)
    assert summ["nfe_shortcut"] == 4 and summ["nfe_baseline"] == 10 and summ["schedule"] == CUT.to_dict()
    first = stdout.splitlines()[0]
    assert first.startswith("recipe dpm++ at 4 steps with Plan([DropBlocks(") and first.endswith("against ddim at 10 steps")
    # the shortcut is the recipe's sampler's own run with the plan, the baseline the reference's, bit for bit
    m, cond = seen["sampler"].model, seen["cond"]
    want = Sampler(m, method=recipe.scheduler, steps=recipe.steps, guidance=3.0).sample(SEEDS, cond, recipe.plan).images
    assert torch.equal(seen["res"]["images_shortcut"], want)
    assert torch.equal(seen["res"]["images_baseline"], Sampler(m, method="ddim", steps=10, guidance=3.0).sample(SEEDS, cond).images)


@pytest.mark.parametrize("flags, named", [
    (["--steps", "7"], "--steps 7"),
    (["--scheduler", "ddim"], "--scheduler ddim"),
    (["--sampler", "ddim"], "--sampler ddim"),
    (["--scheduler-opt", "solver_order=3"], "--scheduler-opt solver_order=3"),
    (["--eta", "0.5"], "--eta 0.5"),
])
def test_flags_that_disagree_with_the_recipe_exit_2_before_the_model_loads(flags, named, tmp_path, capsys):
    path = _file(tmp_path, Recipe("dpm++", 4, CUT, reference=REFERENCE))
    out = tmp_path / "o"
    code, _, err = run_cli(["shortcut", "run", "--model", "no/such/model", "--schedule", path, *flags, "--out", out],
                           capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert named in lines[0] and f"disagrees with the recipe {path} (dpm++ at 4 steps)" in lines[0], err
    assert not out.exists()


def test_agreeing_flags_pass_and_a_recipe_with_nothing_to_compare_is_refused(tmp_path, capsys):
    path = _file(tmp_path, Recipe("dpm++", 4, CUT, reference=REFERENCE))
    code, _, err = run_cli(["shortcut", "run", "--model", "no/such/model", "--schedule", path, "--steps", "4",
                            "--scheduler", "dpm++", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "recipe" not in err and "no/such/model" in err, err  # past the recipe: the model is what fails
    alone = _file(tmp_path, Recipe("dpm++", 4), "alone.json")
    code, _, err = run_cli(["shortcut", "run", "--model", "no/such/model", "--schedule", alone, "--out", tmp_path / "o"],
                           capsys)
    assert code == 2 and "nothing to compare" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_measure_shortcut_takes_a_recipe_file(model, tmp_path):
    """The API twin: an empty-plan recipe (the solver alone) against its reference."""
    from unetscope.api import SettingsError

    path = _file(tmp_path, Recipe("dpm++", 4, reference=REFERENCE))
    with pytest.raises(SettingsError, match="steps=7 disagrees with the recipe"):
        us.measure_shortcut(model, tmp_path / "no", schedule=path, seeds=SEEDS, steps=7)
    assert not (tmp_path / "no").exists()
    summ = us.measure_shortcut(model, tmp_path / "o", schedule=path, seeds=SEEDS, repeats=1)
    assert summ["sampler"]["method"] == "dpm++" and summ["baseline_sampler"]["method"] == "ddim"
    assert summ["name"] == "recipe dpm++ at 4 steps alone against ddim at 10 steps"
    cond = [s % model.num_classes_real for s in SEEDS]
    assert torch.equal(summ["images_shortcut"], Sampler(model, steps=4, method="dpm++", guidance=3.0).sample(SEEDS, cond).images)
    assert summ["compute_saving"] == pytest.approx(0.6)


# --- accelerate(pipe, recipe) --------------------------------------------------------------------
def _generate(pipe, steps):
    g = torch.Generator().manual_seed(0)
    return pipe(["a cat", "a dog"], num_inference_steps=steps, guidance_scale=4.0, generator=g, output_type="pt",
                height=16, width=16).images


def _untouched(pipe, own, config):
    assert pipe.scheduler is own and dict(own.config) == config and "set_timesteps" not in vars(own)
    assert "forward" not in pipe.unet.__dict__ and not hasattr(pipe.unet, "_unetscope_hook")


def test_accelerate_runs_the_recipe_in_the_pipeline_and_gives_its_scheduler_back(pipe, tmp_path):
    from diffusers import DPMSolverMultistepScheduler

    own, config, pipe_config = pipe.scheduler, dict(pipe.scheduler.config), dict(pipe.config)
    before = _generate(pipe, 6)
    recipe = Recipe("dpm++", 4, CUT, reference=REFERENCE)
    calls = []
    counter = pipe.unet.conv_in.register_forward_hook(lambda *a: calls.append(1))
    try:
        with accelerate(pipe, _file(tmp_path, recipe)) as h:  # a recipe file
            assert h.recipe == recipe and type(pipe.scheduler) is DPMSolverMultistepScheduler
            with pytest.warns(UserWarning, match="the recipe runs 4 steps; num_inference_steps=10 is not taken"):
                _generate(pipe, 10)
            assert len(calls) == 4 and h.stats.calls == 4 and h.stats.cut_calls == 2
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)  # warned once: a second other count passes quietly
                _generate(pipe, 7)
            assert len(calls) == 8 and h.stats.generations == 2
    finally:
        counter.remove()
    _untouched(pipe, own, config)
    assert dict(pipe.config) == pipe_config  # the pipeline's record of its scheduler class too
    assert torch.equal(_generate(pipe, 6), before)


def test_an_empty_dpm_recipe_is_the_pipeline_with_that_scheduler_set_by_hand(pipe):
    from diffusers import DPMSolverMultistepScheduler

    own = pipe.scheduler
    with accelerate(pipe, Recipe("dpm++", 5)) as h:
        hooked = _generate(pipe, 5)
    assert h.stats.cut_calls == 0 and pipe.scheduler is own
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(own.config, algorithm_type="dpmsolver++", solver_order=2)
    try:
        by_hand = _generate(pipe, 5)
    finally:
        pipe.scheduler = own
    assert torch.equal(hooked, by_hand)


@pytest.mark.parametrize("recipe, kw, msg", [
    (Recipe("ddim", 4), {}, "unetscope's own respaced ddim; a pipeline takes a diffusers scheduler \\(e.g. DDIMScheduler\\)"),
    (Recipe("LCMScheduler", 4), {}, "LCMScheduler cannot stand in for the pipeline's DDIMScheduler"),
    (Recipe("dpm++", 4, options={"algorithm_type": "bogus"}), {}, "cannot be built from the pipeline's scheduler config"),
    (Recipe("dpm++", 4, options={"no_such_option": 1}), {}, "takes no option 'no_such_option'"),
    (Recipe("dpm++", 4), {"steps": 5}, "steps=5 disagrees with the recipe \\(dpm\\+\\+ at 4 steps alone\\)"),
])
def test_what_the_pipeline_cannot_take_is_refused_and_changes_nothing(pipe, recipe, kw, msg):
    own, config = pipe.scheduler, dict(pipe.scheduler.config)
    with pytest.raises(DeployError, match=msg) as e:
        accelerate(pipe, recipe, **kw)
    assert len(str(e.value).splitlines()) == 1
    _untouched(pipe, own, config)


def test_a_bare_unet_takes_the_recipes_steps_and_its_scheduler_class(pipe):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    unet, recipe = pipe.unet, Recipe("dpm++", 4, CUT)
    with accelerate(unet, recipe) as h:
        assert h.hook.steps == 4 and h.recipe == recipe
    dpm = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    with accelerate(unet, recipe, scheduler=dpm) as h:
        assert h.hook.scheduler is dpm and "set_timesteps" not in vars(dpm)  # a loop's scheduler is the user's
    with pytest.raises(DeployError, match="scheduler= is a DDIMScheduler; the recipe runs on dpm\\+\\+"):
        accelerate(unet, recipe, scheduler=DDIMScheduler.from_config(pipe.scheduler.config))
    with accelerate(unet, Plan(), steps=4) as h:
        assert h.recipe is None  # a plain schedule
    assert "forward" not in unet.__dict__
