"""Every diffusers scheduler under ``accelerate`` (#35: one step clock): in a hand-written loop and in
the tiny Stable Diffusion pipeline, an empty schedule is bitwise the unhooked loop, a
``DropBlocks(cache)`` schedule cuts exactly the scheduled calls (counted with forward hooks on the
bottom blocks), and the hooked loop equals unetscope's own sampler under the same scheduler and plan.

The loops here count steps on their own (a scheduler's ``state_in_first_order``, PNDM's counter), not
through ``unetscope.sampling.clock``, so that a wrong clock fails them."""

import inspect

import pytest
import torch

import diffusers
import unetscope as us
from unetscope.deploy import accelerate
from conftest import sd_pipeline
from unetscope.noise import NoiseBank

SEEDS, LABELS, G, S = [3, 4], [1, 7], 3.0, 6

# (diffusers class, settings): every scheduler of the vocabulary and the classes with a step() beside it
CASES = [
    ("DDIMScheduler", {}),
    ("DDPMScheduler", {}),
    ("DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=2)),
    ("DPMSolverMultistepScheduler", dict(algorithm_type="sde-dpmsolver++", solver_order=2)),
    ("DPMSolverSinglestepScheduler", {}),
    ("EulerDiscreteScheduler", {}),
    ("EulerAncestralDiscreteScheduler", {}),
    ("HeunDiscreteScheduler", {}),
    ("KDPM2DiscreteScheduler", {}),
    ("KDPM2AncestralDiscreteScheduler", {}),
    ("PNDMScheduler", dict(skip_prk_steps=True)),
    ("PNDMScheduler", dict(skip_prk_steps=False)),  # the Runge-Kutta warm-up: four calls a step
    ("LMSDiscreteScheduler", {}),
    ("DEISMultistepScheduler", {}),
    ("UniPCMultistepScheduler", {}),
    ("DPMSolverSDEScheduler", dict(noise_sampler_seed=0)),  # needs torchsde; its Brownian tree seeded
]
IDS = [f"{c}{'-' + '-'.join(f'{k}={v}' for k, v in s.items()) if s else ''}" for c, s in CASES]


def _needs(cls_name):
    if cls_name == "DPMSolverSDEScheduler":
        pytest.importorskip("torchsde")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from conftest import save_tiny_model

    return us.load_model(save_tiny_model(tmp_path_factory.mktemp("lin") / "m", beta_schedule="linear"))


def _begins(s) -> bool:
    """Whether the scheduler's next call begins a step (written out here, apart from the library's clock)."""
    if hasattr(s, "state_in_first_order"):
        return bool(s.state_in_first_order)
    if isinstance(s, diffusers.PNDMScheduler):
        if not s.config.skip_prk_steps and s.counter < len(s.prk_timesteps):
            return s.counter % 4 == 0
        return not (s.config.skip_prk_steps and s.counter == 1)
    return True


def _scheduler(model, cls_name, settings):
    sch = model.schedule
    s = getattr(diffusers, cls_name)(num_train_timesteps=sch.num_train_timesteps, trained_betas=sch.betas.numpy(),
                                      prediction_type="epsilon", **settings)
    s.set_timesteps(S)
    return s


class _Counter:
    """Calls of the middle block (the bottom of the U-Net), and of the U-Net, per step of the loop."""

    def __init__(self, unet):
        self.mid, self.per_step = 0, {}
        self.h = unet.mid_block.register_forward_hook(self._mid)

    def _mid(self, *a):
        self.mid += 1

    def remove(self):
        self.h.remove()


@torch.no_grad()
def _loop(model, sched, apart=False, counter=None, names=False):
    """diffusers' loop by hand on the bare U-Net: x_S = the bank's noise times init_noise_sigma; one guided
    call per scheduler call ([cond; null] batched, or the two branches apart); a generator per sample seeded
    by the bank's (seed, step) key at each step's first call."""
    unet = model.units.unet
    x = NoiseBank(SEEDS, model.sample_shape).initial() * sched.init_noise_sigma
    y = torch.tensor(LABELS)
    null = torch.full_like(y, model.null_class)
    t, gens = S + 1, None
    takes_gen = "generator" in inspect.signature(sched.step).parameters
    for i, tau in enumerate(sched.timesteps):
        if _begins(sched):
            t -= 1
            gens = NoiseBank(SEEDS, model.sample_shape).generators(t)
        if counter is not None:
            counter.per_step[t] = counter.per_step.get(t, 0) + 1
        xin = sched.scale_model_input(x, tau)
        tt = torch.full((len(SEEDS),), float(tau))
        tt = tt if torch.is_floating_point(sched.timesteps) else tt.long()
        if apart:
            order = [(null, "uncond"), (y, "cond")] if i % 2 else [(y, "cond"), (null, "uncond")]  # either order
            outs = {}
            for lab, name in order:
                if names:
                    from diffusers.hooks.hooks import CacheContext, _set_cache_context

                    _set_cache_context(unet, CacheContext(name))
                outs[name] = unet(xin, tt, class_labels=lab).sample
                if names:
                    _set_cache_context(unet, None)
            oc, ou = outs["cond"], outs["uncond"]
        else:
            oc, ou = unet(torch.cat([xin, xin]), torch.cat([tt, tt]), class_labels=torch.cat([y, null])).sample.chunk(2)
        eps = ou + G * (oc - ou)
        x = sched.step(eps, tau, x, **({"generator": gens} if takes_gen else {})).prev_sample
    assert t == 1
    return x


@pytest.mark.parametrize("cls_name,settings", CASES, ids=IDS)
def test_every_scheduler_in_a_hand_written_loop(model, cls_name, settings):
    _needs(cls_name)
    unet, K = model.units.unet, model.num_blocks
    ref_counter = _Counter(unet)
    ref = _loop(model, _scheduler(model, cls_name, settings), counter=ref_counter)
    ref_counter.remove()
    calls = ref_counter.per_step
    assert sum(calls.values()) == ref_counter.mid and sorted(calls) == list(range(1, S + 1))
    # 1. an empty schedule is the unhooked loop, bit for bit
    sched = _scheduler(model, cls_name, settings)
    with accelerate(unet, us.Plan(), scheduler=sched) as h:
        assert torch.equal(_loop(model, sched), ref)
    assert h.stats.cut_calls == 0 and h.stats.generations == 1
    # 2. a DropBlocks(cache) schedule cuts exactly the calls of its steps: steps 4 and 3 of 6
    plan = us.Plan([us.DropBlocks(K - 1, 4, 2, "cache")])
    sched = _scheduler(model, cls_name, settings)
    c = _Counter(unet)
    with accelerate(unet, plan, scheduler=sched) as h:
        hooked = _loop(model, sched)
    c.remove()
    cut = calls[4] + calls[3]
    assert c.mid == sum(calls.values()) - cut and h.stats.cut_calls == cut, (calls, c.mid, h.stats)
    # 3. the hooked loop is unetscope's own sampler under the same scheduler and plan
    ours = us.Sampler(model, steps=S, method=cls_name, guidance=G, clip_x0=False, options=settings)
    assert [ours.calls(t) for t in range(S, 0, -1)] == [calls[t] for t in range(S, 0, -1)]
    mine = ours.sample(SEEDS, LABELS, plan).x0
    scale = ref.abs().max()
    assert torch.allclose(hooked, mine, atol=1e-4 * scale, rtol=1e-4), (hooked - mine).abs().max()
    assert (hooked - ref).abs().max() > 1e-4 * scale  # the cut changed something


@pytest.mark.parametrize("cls_name", ["DDIMScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler"])
def test_guidance_branches_called_apart_keep_their_own_caches(model, cls_name):
    """Two U-Net calls per scheduler call (cond and uncond apart, in either order): each branch is the same
    step and reads its own branch's cache; named by diffusers' cache context, the order may change."""
    unet, K = model.units.unet, model.num_blocks
    plan = us.Plan([us.DropBlocks(K - 1, 4, 2, "cache")])
    mine = us.Sampler(model, steps=S, method=cls_name, guidance=G, clip_x0=False).sample(SEEDS, LABELS, plan).x0
    ref = _loop(model, _scheduler(model, cls_name, {}), apart=True)
    sched = _scheduler(model, cls_name, {})
    with accelerate(unet, us.Plan(), scheduler=sched):
        assert torch.equal(_loop(model, sched, apart=True), ref)
    sched = _scheduler(model, cls_name, {})
    with accelerate(unet, plan, scheduler=sched) as h:
        named = _loop(model, sched, apart=True, names=True)
    assert set(h.hook.state.caches) == {"cond", "uncond"}  # each branch's cache under the name the context gave it
    assert torch.allclose(named, mine, atol=1e-4 * mine.abs().max(), rtol=1e-4), (named - mine).abs().max()
    assert h.stats.cut_calls == 2 * sum(us.Sampler(model, steps=S, method=cls_name).calls(t) for t in (4, 3))


def test_the_hook_is_a_diffusers_registry_hook(model):
    """Registered in diffusers' HookRegistry: it composes with another diffusers hook, reset_stateful_hooks
    starts a new generation, and removing it leaves the U-Net as it was."""
    from diffusers.hooks import HookRegistry, ModelHook

    unet, K = model.units.unet, model.num_blocks
    seen = []

    class Spy(ModelHook):
        def pre_forward(self, module, *args, **kwargs):
            seen.append(1)
            return args, kwargs

    ref = _loop(model, _scheduler(model, "DDIMScheduler", {}))
    sched = _scheduler(model, "DDIMScheduler", {})
    h = accelerate(unet, us.Plan([us.DropBlocks(K - 1, 4, 2, "cache")]), scheduler=sched)
    reg = unet._diffusers_hook
    assert reg.get_hook("unetscope_schedule") is h.hook
    reg.register_hook(Spy(), "spy")
    cut = _loop(model, sched)
    assert len(seen) == S and h.stats.cut_calls == 2 and not torch.equal(cut, ref)
    reg.remove_hook("spy")
    reg.reset_stateful_hooks()
    assert h.hook.state.last_call is None  # a new generation
    h.remove()
    assert "forward" not in unet.__dict__ and not hasattr(unet, "_diffusers_hook") and not hasattr(unet, "_unetscope_hook")
    assert torch.equal(_loop(model, _scheduler(model, "DDIMScheduler", {})), ref)


# --- the tiny Stable Diffusion pipeline, under every scheduler ----------------------------------
@pytest.fixture(scope="module")
def pipe(sd_dir):
    return sd_pipeline(sd_dir)


def _generate(p, steps=S, **kw):
    g = torch.Generator().manual_seed(0)
    return p(["a cat", "a dog"], num_inference_steps=steps, guidance_scale=4.0, generator=g, output_type="pt",
             height=16, width=16, **kw).images


def _calls_per_step(p, fn):
    """U-Net calls per step of one generation, counted with the pipeline's scheduler as the loop runs."""
    per, t = {}, [None]
    sched = p.scheduler

    def pre(mod, args):
        if t[0] is None:
            t[0] = sched.num_inference_steps + 1
        if _begins(sched):
            t[0] -= 1
        per[t[0]] = per.get(t[0], 0) + 1

    h = p.unet.register_forward_pre_hook(pre)
    try:
        fn()
    finally:
        h.remove()
    return per


@pytest.mark.parametrize("cls_name,settings", CASES, ids=IDS)
def test_every_scheduler_in_the_pipeline(pipe, cls_name, settings):
    _needs(cls_name)
    old = pipe.scheduler
    pipe.scheduler = getattr(diffusers, cls_name).from_config(old.config, **settings)
    try:
        calls = _calls_per_step(pipe, lambda: _generate(pipe))
        ref = _generate(pipe)
        with accelerate(pipe, us.Plan()) as h:
            assert torch.equal(_generate(pipe), ref)
        assert h.stats.cut_calls == 0 and h.stats.generations == 1
        K = h.hook.K
        mid = [0]
        hk = pipe.unet.mid_block.register_forward_hook(lambda *a: mid.__setitem__(0, mid[0] + 1))
        try:
            with accelerate(pipe, us.Plan([us.DropBlocks(K - 1, 4, 2, "cache")])) as h:
                cut = _generate(pipe)
        finally:
            hk.remove()
        assert mid[0] == sum(calls.values()) - calls[4] - calls[3] and h.stats.cut_calls == calls[4] + calls[3], (calls, mid)
        assert torch.isfinite(cut).all() and not torch.equal(cut, ref)
    finally:
        pipe.scheduler = old


@pytest.mark.parametrize("cls_name", ["DDIMScheduler", "DPMSolverMultistepScheduler", "HeunDiscreteScheduler"])
def test_img2img_partial_schedules_land_on_their_steps(pipe, cls_name):
    """img2img starts part-way (strength 0.5 of 6 steps: steps 3..1 run): step t is still the t-th from the
    end of the scheduler's full walk, so a cut at step 2 cuts the calls of step 2 and nothing else."""
    from diffusers import StableDiffusionImg2ImgPipeline

    p = StableDiffusionImg2ImgPipeline(**pipe.components)
    p.scheduler = getattr(diffusers, cls_name).from_config(pipe.scheduler.config)
    p.set_progress_bar_config(disable=True)
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))

    def gen():
        return _generate(p, image=image, strength=0.5)

    ref = gen()
    with accelerate(p, us.Plan()) as h:
        assert torch.equal(gen(), ref)
    per = h.stats.calls
    two = 2 if cls_name.startswith("Heun") else 1
    with accelerate(p, us.Plan([us.DropBlocks(1, 2, 1)])) as h:
        cut = gen()
    assert h.stats.calls == per and h.stats.cut_calls == two and not torch.equal(cut, ref)
    with accelerate(p, us.Plan([us.DropBlocks(1, 5, 1)])) as h:  # a step img2img never reaches: nothing cut
        assert torch.equal(gen(), ref)
    assert h.stats.cut_calls == 0


DETERMINISTIC = ["DDIMScheduler", "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "EulerDiscreteScheduler",
                 "HeunDiscreteScheduler", "KDPM2DiscreteScheduler", "PNDMScheduler", "LMSDiscreteScheduler",
                 "DEISMultistepScheduler", "UniPCMultistepScheduler"]


@pytest.mark.parametrize("cls_name", DETERMINISTIC)
def test_the_hooked_pipeline_is_unetscopes_sampler(pipe, sd_dir, cls_name):
    """The Stable Diffusion pipeline under a schedule makes the latents unetscope's sampler makes under the
    same scheduler, plan and noise (a stochastic scheduler draws the pipeline's own noise: those are compared
    in the hand-written loop above)."""
    m = us.load_model(sd_dir)
    plan = us.Plan([us.DropBlocks(m.num_blocks - 1, 4, 2, "cache")])
    prompts = ["a cat", "a dog"]
    ours = us.Sampler(m, steps=S, method=cls_name, guidance=4.0)
    mine = ours.sample([0, 1], prompts, plan).x0
    old = pipe.scheduler
    pipe.scheduler = ours.solver.new_scheduler()  # the scheduler unetscope's sampler drives (the model's betas)
    size = m.sample_shape[-1] * pipe.vae_scale_factor
    try:
        with accelerate(pipe, plan) as h:
            lat = pipe(prompts, num_inference_steps=S, guidance_scale=4.0, output_type="latent", height=size, width=size,
                       latents=NoiseBank([0, 1], m.sample_shape).initial()).images  # times init_noise_sigma, as ours
    finally:
        pipe.scheduler = old
    assert h.stats.cut_calls == ours.calls(4) + ours.calls(3) and not torch.equal(mine, ours.sample([0, 1], prompts).x0)
    assert torch.allclose(lat, mine, atol=1e-4 * mine.abs().max(), rtol=1e-4), (lat - mine).abs().max()


def test_a_wrong_scheduler_is_one_line_and_a_two_call_loop_without_it_says_to_give_it(model, pipe):
    from unetscope.deploy import DeployError

    unet = model.units.unet
    for bad, msg in ((42, "scheduler must be a diffusers scheduler"),
                     (_scheduler(model, "DDIMScheduler", {}), None)):
        if msg is None:  # a pipeline's scheduler is its own
            with pytest.raises(DeployError, match="a pipeline's scheduler is its own") as e:
                accelerate(pipe, us.Plan(), scheduler=bad)
        else:
            with pytest.raises(DeployError, match=msg) as e:
                accelerate(unet, us.Plan(), scheduler=bad)
        assert "\n" not in str(e.value)
    assert "forward" not in unet.__dict__ and "forward" not in pipe.unet.__dict__
    # KDPM2's interleaved timesteps are 2S - 1 distinct ones: a bare U-Net's count runs past S and says what to give
    sched = _scheduler(model, "KDPM2DiscreteScheduler", {})
    with accelerate(unet, us.Plan([us.DropBlocks(1, 4, 2, "cache")]), steps=S):
        with pytest.raises(DeployError, match="more distinct timesteps than S.*scheduler= the loop's scheduler"):
            _loop(model, sched)


def test_without_a_hook_registry_the_forward_is_wrapped_and_restored(model, monkeypatch):
    """A diffusers without ``diffusers.hooks`` (older than 0.33): the handle wraps ``forward`` itself, with
    the same clock and the same results, and removing it restores the U-Net."""
    import unetscope.deploy as deploy

    monkeypatch.setattr(deploy, "HookRegistry", None)
    unet, K = model.units.unet, model.num_blocks
    ref = _loop(model, _scheduler(model, "HeunDiscreteScheduler", {}))
    plan = us.Plan([us.DropBlocks(K - 1, 4, 2, "cache")])
    cuts = {}
    for registry in (False, True):
        if registry:
            monkeypatch.undo()
        sched = _scheduler(model, "HeunDiscreteScheduler", {})
        with accelerate(unet, us.Plan(), scheduler=sched):
            assert torch.equal(_loop(model, sched), ref)
        sched = _scheduler(model, "HeunDiscreteScheduler", {})
        with accelerate(unet, plan, scheduler=sched) as h:
            assert ("forward" in unet.__dict__) and (hasattr(unet, "_diffusers_hook") == registry)
            cut = _loop(model, sched)
        assert h.stats.cut_calls == 4 and "forward" not in unet.__dict__ and not hasattr(unet, "_diffusers_hook")
        cuts[registry] = cut
    assert torch.equal(cuts[False], cuts[True])  # the same clock and caches either way
