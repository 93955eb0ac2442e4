"""The ``unetscope`` command line."""

from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit code 2."""


def _cmd_train(args) -> None:
    import torch

    from .train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = TrainConfig(arch=args.arch, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, checkpoint_every=args.checkpoint_every, limit_images=args.limit_images)
    except ValueError as e:
        raise UsageError(str(e)) from None
    res = train(cfg, args.out, resume=not args.restart, progress=not args.quiet)
    print(f"trained to step {res['step']} in {res['seconds']:.0f} s; last loss {res['loss']:.4f}; output in {args.out}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unetscope", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the bundled MNIST model (resumable)")
    t.add_argument("--out", required=True, help="run folder: checkpoint.pt, and model/ when finished")
    t.add_argument("--arch", default="default")
    t.add_argument("--steps", type=int, default=8000)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=4e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=250)
    t.add_argument("--limit-images", type=int, default=None)
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_cmd_train)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UsageError as e:
        print(f"unetscope {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
