"""Compiled: each unit function compiled once, whatever the steps' actions; the same images as
uncompiled; torch.compile of a hooked U-Net; ``--compile`` refused in one line where no compiler runs.

The fast tests compile with dynamo's ``eager`` backend (the guards and recompiles are dynamo's, so
the counts are the same as inductor's, in seconds); the inductor tests are slow (minutes of C++
compilation on a CPU)."""

import json

import pytest
import torch

import unetscope as us
from conftest import run_cli, tiny_cond_unet
from unetscope import compiling

# every kind of step: full, cut from the cache, zeroed skips, the encoder reused, a deeper cut
PLAN = us.Plan([us.DropBlocks(2, 5, 2, "cache"), us.ZeroSkips(3, 3, 1), us.ReuseEncoder(2, 1), us.DropBlocks(4, 1, 1)])


def _sites(K):
    return [f"E[{i}]" for i in range(K)] + ["M"] + [f"D[{j}]" for j in range(K)] + ["head"]


def test_each_unit_compiles_once_however_the_action_changes(tiny_model_dir):
    model = us.load_model(tiny_model_dir)
    compiled = us.load_model(tiny_model_dir).compile(backend="eager")
    a = us.Sampler(model, steps=6, guidance=3.0).sample([0, 1], [1, 2], PLAN)
    b = us.Sampler(compiled, steps=6, guidance=3.0).sample([0, 1], [1, 2], PLAN)
    assert torch.allclose(a.x0, b.x0, atol=1e-5)
    st = compiled.compile_stats()
    K = compiled.num_blocks
    assert st["per_unit"] == {s: 1 for s in _sites(K)} and st["compilations"] == st["units"] == 2 * K + 2
    us.Sampler(compiled, steps=6, guidance=3.0).sample([3, 4], [5, 6], us.Plan([us.DropBlocks(1, 4, 3, "zeros")]))
    assert compiled.compile_stats()["compilations"] == 2 * K + 2  # another plan, same shapes: nothing recompiles


def test_flop_counting_leaves_the_units_compiled(tiny_model_dir):
    """measure() counts FLOPs (FlopCounterMode) after timing; the units run eagerly under the mode (dynamo, once
    it meets a dispatch mode, would never run their compiled code again) and compiled after it."""
    from unetscope.shortcut import plan_flops

    runs = []

    def counting(gm, example_inputs):  # a backend that counts the compiled graphs' executions
        def run(*args):
            runs.append(1)
            return gm.forward(*args)
        return run

    plan = us.Plan([us.DropBlocks(2, 3, 2, "cache")])
    s = us.Sampler(us.load_model(tiny_model_dir).compile(backend=counting), steps=4, guidance=3.0)
    s.sample([0, 1], [1, 2], plan)
    n = len(runs)
    assert n == 4 * 10 - 2 * (2 * 2 + 1)  # four steps of the 10 units; the two cut steps leave out E[2..3], M, D[0..1]
    ref = us.Sampler(us.load_model(tiny_model_dir), steps=4, guidance=3.0)
    assert plan_flops(s, plan, 0, [1]) == plan_flops(ref, plan, 0, [1]) and len(runs) == n
    s.sample([0, 1], [1, 2], plan)
    assert len(runs) == 2 * n and s.model.compile_stats()["backend"] == "counting"


def test_a_compiled_model_pickles_uncompiled(tiny_model_dir):
    import pickle

    m = us.load_model(tiny_model_dir).compile(backend="eager")
    copy = pickle.loads(pickle.dumps(m))  # Ray ships models so: the worker compiles its own (Sampler(compile=True))
    assert m.compiled and not copy.compiled


@pytest.fixture
def no_compiler(monkeypatch):
    """A machine where inductor finds no C++ compiler (its own search raises, as it does there)."""
    from torch._inductor import cpp_builder, exc

    def missing():
        raise exc.InvalidCxxCompiler()

    compiling._probe.cache_clear()
    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    yield
    compiling._probe.cache_clear()


def test_compile_without_a_compiler_is_one_line_and_writes_nothing(no_compiler, tiny_model_dir, tmp_path, capsys):
    problem = compiling.compiler_problem("cpu")
    assert "no working C++ compiler" in problem
    out = tmp_path / "o"
    code, _, err = run_cli(["sample", "--model", tiny_model_dir, "--compile", "--steps", 2, "--samples", 1, "--out", out,
                            "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1 and "C++ compiler" in err and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(compiling.CompileError, match="C.. compiler"):
        us.setup(tiny_model_dir, compile=True, samples=1)
    with pytest.raises(compiling.CompileError):
        us.Sampler(us.load_model(tiny_model_dir), compile=True)
    with pytest.raises(us.DeployError, match="C.. compiler"):
        us.accelerate(tiny_cond_unet(), us.Plan(), steps=4, compile=True)


def test_the_backend_variable_names_the_backend_and_an_unknown_one_is_one_line(monkeypatch, tiny_model_dir, tmp_path, capsys):
    """$UNETSCOPE_COMPILE_BACKEND: what --compile and compile=True compile with (inductor when unset)."""
    monkeypatch.delenv("UNETSCOPE_COMPILE_BACKEND", raising=False)
    assert compiling.default_backend() == "inductor"
    monkeypatch.setenv("UNETSCOPE_COMPILE_BACKEND", "aot_eager")
    assert compiling.default_backend() == "aot_eager"
    m = us.load_model(tiny_model_dir, compile=True)
    assert m.compile_stats()["backend"] == "aot_eager"
    monkeypatch.setenv("UNETSCOPE_COMPILE_BACKEND", "no-such-backend")
    out = tmp_path / "o"
    code, _, err = run_cli(["sample", "--model", tiny_model_dir, "--compile", "--steps", 2, "--samples", 1, "--out", out,
                            "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1 and "'no-such-backend' is not a torch.compile backend" in err
    assert "inductor" in err and "Traceback" not in err and not out.exists()
    with pytest.raises(compiling.CompileError, match="not a torch.compile backend"):
        us.Sampler(us.load_model(tiny_model_dir), compile=True)


def test_compile_where_dynamo_is_unsupported_is_refused(monkeypatch):
    import torch._dynamo

    compiling._probe.cache_clear()
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    try:
        with pytest.raises(compiling.CompileError, match="not supported on this Python"):
            compiling.check_compiler("cpu")
    finally:
        compiling._probe.cache_clear()


# --- accelerate ------------------------------------------------------------------------------------
def _loop(unet, seed=0, steps=5):
    """A raw diffusers-style loop on the tiny cross-attention U-Net."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 16, 16, generator=g)
    ehs = torch.randn(2, 5, 12, generator=g)
    for t in sched.timesteps:
        with torch.no_grad():
            eps = unet(x, t, encoder_hidden_states=ehs).sample
        x = sched.step(eps, t, x).prev_sample
    return x


def test_accelerate_compiled_and_a_torch_compiled_hooked_unet():
    """On a cross-attention U-Net, whose D[j] sizes its upsample by ctx.skips[K-2-j]: the list is K long
    whatever nb, so no guard on its length fails as the cut deepens and shallows."""
    unet = tiny_cond_unet()
    plan = us.Plan([us.DropBlocks(1, 4, 1, "cache"), us.DropBlocks(3, 3, 1, "cache"), us.ZeroSkips(2, 2, 1),
                    us.ReuseEncoder(1, 1)])
    with us.accelerate(unet, plan, steps=5) as h:
        ref = _loop(unet)
    with us.accelerate(unet, plan, steps=5, compile="eager") as h:  # every call through the compiled units
        fast = _loop(unet)
        _loop(unet, seed=1)
    assert torch.allclose(fast, ref, atol=1e-5) and h.stats.cut_calls == 8
    assert h.compile_stats()["per_unit"] == {s: 1 for s in _sites(h.hook.K)}
    # torch.compile of the hooked U-Net: the hook is a graph break, the schedule still runs
    with us.accelerate(unet, plan, steps=5) as h:
        wrapped = torch.compile(unet, backend="eager")
        out = _loop(wrapped)
    assert torch.allclose(out, ref, atol=1e-5) and h.stats.cut_calls == 4
    # a U-Net compiled before accelerate: hooked under its wrapper, and restored
    with us.accelerate(wrapped, plan, steps=5) as h:
        out = _loop(wrapped)
    assert torch.allclose(out, ref, atol=1e-5) and h.stats.cut_calls == 4
    assert "forward" not in unet.__dict__ and torch.allclose(_loop(wrapped), _loop(unet), atol=1e-5)
    assert not torch.allclose(_loop(unet), ref, atol=1e-4)  # unhooked: the schedule changed the images


# --- inductor, through the command line (slow: C++ compilation) ----------------------------------------
@pytest.mark.slow
def test_cli_compile_gives_the_same_images_with_one_compilation_per_unit(tiny_model_dir, tmp_path, capsys):
    plan = json.dumps(PLAN.to_dict())
    # one sample (two rows with guidance): the shapes the docs' --compile command compiles (tests/test_docs.py runs
    # it on one sample) and the API twins' below, so inductor's on-disk cache compiles each graph once per run
    args = ["intervene", "--model", tiny_model_dir, "--steps", 6, "--samples", 1, "--plan", plan, "--quiet"]
    code, _, err = run_cli(args + ["--out", tmp_path / "eager"], capsys)
    assert code == 0, err
    code, out, err = run_cli(args + ["--out", tmp_path / "compiled", "--compile"], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "compiled" / "metrics.json").read_text())
    ref = json.loads((tmp_path / "eager" / "metrics.json").read_text())
    K = us.load_model(tiny_model_dir).num_blocks
    assert m["compile"]["per_unit"] == {s: 1 for s in _sites(K)} and ref["compile"] is None
    assert f"{2 * K + 2} compilations for {2 * K + 2} unit functions (one each)" in out
    for a, b in zip(m["samples"], ref["samples"]):
        assert a["ssim"] == pytest.approx(b["ssim"], abs=1e-4)
    from PIL import Image
    import numpy as np

    for s in (0,):
        a = np.asarray(Image.open(tmp_path / "compiled" / f"compare_{s:05d}.png"), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "eager" / f"compare_{s:05d}.png"), dtype=np.int16)
        assert np.abs(a - b).max() <= 1  # 8-bit images: float differences round to at most one level


@pytest.mark.slow
def test_the_api_twins_take_compile(tiny_model_dir, tmp_path):
    """compile=True through an API twin (setup's keywords): the timed shortcut's summary counts one compilation per
    unit (the FLOP count runs eagerly; the timing's batch is the sampling's), and its SSIM is the uncompiled one's."""
    plain = us.measure_shortcut(tiny_model_dir, tmp_path / "plain", preset="paper", steps=4, samples=1, repeats=1)
    fast = us.measure_shortcut(tiny_model_dir, tmp_path / "fast", preset="paper", steps=4, samples=1, repeats=1,
                               compile=True)
    K = us.load_model(tiny_model_dir).num_blocks
    assert fast["compile"]["per_unit"] == {s: 1 for s in _sites(K)} and plain["compile"] is None
    assert fast["ssim_mean"] == pytest.approx(plain["ssim_mean"], abs=1e-4)
    assert fast["compute_saving"] == plain["compute_saving"]
    assert json.loads((tmp_path / "fast" / "summary.json").read_text())["compile"]["compilations"] == 2 * K + 2
