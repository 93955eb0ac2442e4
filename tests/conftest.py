import json
import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one pytest worker per core: each runs one thread, and so do the processes a test starts, or two
    # workers with default threads oversubscribe the cores. Set before numpy and torch load: OpenBLAS
    # reads it once, and its threads spin after each call (numpy's SVDs and matrix products in a worker
    # with two OpenBLAS threads took a second core from the other worker: 110-130% CPU per worker)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny models: threads only add overhead (and CI has 2 cores)
# Ray starts its workers at nice 15 (its worker_niceness): beside the other pytest worker on two busy
# cores they got a few percent of a core, and the Ray tests took 5-15x their time (test_ray.py under two
# busy processes: 308 s at nice 15, 60 s at nice 0). Every Ray instance a test starts, in this process
# or a child, reads this.
os.environ.setdefault("RAY_worker_niceness", "0")

def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def seeds_stored(db) -> int:
    """Distinct seeds with rows in a results database (0 while it does not exist or is being written)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
            return c.execute("SELECT COUNT(DISTINCT seed) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def kill_when_stored(pid_of, db, at_least: int, timeout: float = 120, until=lambda: False) -> int:
    """SIGKILL the process ``pid_of()`` names (None: not yet) once ``db`` holds ``at_least`` seeds;
    gives up after ``timeout`` s or when ``until()``. Returns the seeds stored at the kill (0: none)."""
    import os
    import signal
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and not until():
        time.sleep(0.05)
        n = seeds_stored(db)
        if n >= at_least:
            pid = pid_of()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                return n
    return 0


def tiny_unet(attention=True, layers=1, classes=None, out_channels=1, resnet_updown=False, seed=0):
    """A tiny diffusers UNet2DModel (16x16 inputs are too small for SSIM; 32x32 is used)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    kw = {}
    if resnet_updown:
        down = ("ResnetDownsampleBlock2D", "DownBlock2D")
        up = ("UpBlock2D", "ResnetUpsampleBlock2D")
    else:
        down = ("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D")
        up = ("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D")
    return UNet2DModel(sample_size=32, in_channels=1, out_channels=out_channels, layers_per_block=layers,
                       block_out_channels=(8, 16), down_block_types=down, up_block_types=up, norm_num_groups=4,
                       attention_head_dim=4, num_class_embeds=classes, **kw).eval()


def tiny_cond_unet(layers=1, seed=0, class_embed=False):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=layers, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=12, attention_head_dim=4, norm_num_groups=4,
        num_class_embeds=5 if class_embed else None).eval()


def save_tiny_model(folder, *, classes=11, null_class=10, beta_schedule="squaredcos_cap_v2", T=1000, seed=0,
                    variance_type="fixed_small", prediction_type="epsilon"):
    from diffusers import DDPMScheduler

    unet = tiny_unet(classes=classes, seed=seed, out_channels=2 if variance_type == "learned_range" else 1)
    unet.save_pretrained(folder)
    DDPMScheduler(num_train_timesteps=T, beta_schedule=beta_schedule, variance_type=variance_type,
                  prediction_type=prediction_type).save_config(folder)
    if classes:
        (folder / "unetscope.json").write_text(json.dumps({"null_class": null_class, "num_classes": classes - 1}))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _tokenizer(folder):
    from transformers import CLIPTokenizer

    chars = "abcdefghijklmnopqrstuvwxyz"
    vocab = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8)
    tok.save_pretrained(folder)
    return len(vocab)


@pytest.fixture(scope="session")
def sd_dir(tmp_path_factory):
    return save_tiny_sd(tmp_path_factory.mktemp("sd") / "pipe")


def save_tiny_sd(root):
    """A tiny Stable-Diffusion pipeline folder (random weights; 8x8 latents for 16x16 images) at ``root``."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    n_vocab = _tokenizer(root / "tokenizer")
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(vocab_size=n_vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=8, bos_token_id=n_vocab - 2,
                                 eos_token_id=n_vocab - 1, pad_token_id=n_vocab - 1)).save_pretrained(root / "text_encoder")
    AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 8), latent_channels=4, norm_num_groups=4,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  sample_size=16).save_pretrained(root / "vae")
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                         cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4).save_pretrained(root / "unet")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({  # loadable by StableDiffusionPipeline.from_pretrained too
        "_class_name": "StableDiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDPMScheduler"],
        "safety_checker": [None, None], "feature_extractor": [None, None], "image_encoder": [None, None],
        "requires_safety_checker": False}))
    return root




def sd_pipeline(sd_dir):
    """The tiny Stable Diffusion pipeline of ``sd_dir`` (DDIM, no safety checker, no progress bar)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    p = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(sd_dir / "vae"), text_encoder=CLIPTextModel.from_pretrained(sd_dir / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(sd_dir / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(sd_dir / "unet"),
        scheduler=DDIMScheduler.from_pretrained(sd_dir / "scheduler"), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    p.set_progress_bar_config(disable=True)
    return p


def run_script(path, argv=(), cwd=None):
    """``python PATH ARGV`` in this process (run as ``__main__``, from ``cwd``): (exit code, stdout, stderr).
    What a process of its own would add is its interpreter start and imports (6 s with torch and
    diffusers); the tests that check a real process (exit codes, the entry point, a kill) keep one."""
    import contextlib
    import io
    import runpy
    import sys

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, list(sys.path), os.getcwd(), torch.get_num_threads()
    sys.argv = [str(path), *map(str, argv)]
    sys.path.insert(0, str(os.path.dirname(os.path.abspath(path))))  # as python puts the script's folder first
    code = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
    finally:
        sys.argv, sys.path[:] = saved[0], saved[1]
        os.chdir(saved[2])
        torch.set_num_threads(saved[3])  # a script's --threads must not leak into the next test
    return code, out.getvalue(), err.getvalue()


def run_cli(argv, capsys):
    """``unetscope ARGV`` in this process: (exit code, stdout, stderr); argparse's own exits included."""
    from unetscope.cli import main

    threads = torch.get_num_threads()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    finally:
        torch.set_num_threads(threads)  # a command's --threads must not leak into the worker's next tests
    out, err = capsys.readouterr()
    return code, out, err
