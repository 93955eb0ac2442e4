"""The GPU check (issue 26), for the first machine with a GPU: one table of
- parity of the runner (against the U-Net's own forward, and against float32) and of ``accelerate``
  (an empty schedule against the unhooked loop, bit for bit; the searched schedule in a diffusers DDIM
  loop against unetscope's DDIM sampler), in float32 and in each of --dtypes;
- the timed savings of the paper preset and of a searched schedule, uncompiled and compiled (the
  timing protocol, the device synchronised), and what compiling does to the baseline's time;
- the memory the caches take: the bytes a schedule's cache holds, and on CUDA the peak allocated
  (``torch.cuda.max_memory_allocated``) of the baseline and of each schedule.

    python benchmarks/gpu_check.py [--device cuda] [--model default] [--dtypes float16,bfloat16]
        [--steps 100] [--samples 16] [--batch 64] [--repeats 5] [--compile both|on|off] [--threads N]
        [--schedule examples/schedules/default_searched.json]

It runs on ``--device cpu`` too (the tests run it on a tiny model with tiny sizes). The limits of
the parity rows are first guesses at float error (a same-dtype comparison should be near 0; float16
and bfloat16 against float32 at the dtypes' precision): the first GPU run calibrates them. Exit
status 1 when a row fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import ddim_loop, model_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# max |diff| limits: the runner against the forward in one dtype; a dtype's forward against float32's;
# x_0 of the accelerated loop against unetscope's sampler; the compiled runner against the forward
SAME = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
CROSS = {"float32": 0.0, "float16": 5e-2, "bfloat16": 2.5e-1}
LOOP = {"float32": 1e-3, "float16": 5e-2, "bfloat16": 2e-1}
COMPILED = {"float32": 1e-3, "float16": 5e-2, "bfloat16": 2e-1}
SSIM_MIN = 0.9  # samples in a dtype against float32's


class Table:
    def __init__(self):
        self.rows = []

    def add(self, check, dtype, compiled, value, limit="", ok=None):
        verdict = "-" if ok is None else ("ok" if ok is True else "warn" if ok == "warn" else "FAIL")
        self.rows.append((check, dtype, compiled, value, limit, verdict))
        print(f"  {check} [{dtype}{', compiled' if compiled == 'yes' else ''}]: {value} {verdict}", file=sys.stderr,
              flush=True)

    def print(self, header):
        cols = ("check", "dtype", "compiled", "value", "limit", "verdict")
        w = [max(len(str(r[i])) for r in [cols, *self.rows]) for i in range(len(cols))]
        print(header)
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(cols)))
        print("  ".join("-" * w[i] for i in range(len(cols))))
        for r in self.rows:
            print("  ".join(str(v).ljust(w[i]) for i, v in enumerate(r)))
        return sum(r[-1] == "FAIL" for r in self.rows)


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="default")
    p.add_argument("--dtypes", default="float16,bfloat16", help="besides float32 (comma-separated)")
    p.add_argument("--timing-dtype", default=None, help="the dtype of the timed rows (default: float16 on CUDA, else float32)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm", help="the timed rows' sampler")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--samples", type=int, default=16, help="samples of the sampled rows (timing, memory, parity)")
    p.add_argument("--batch", type=int, default=64, help="batch of the one-evaluation parity rows")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--schedule", default=str(ROOT / "examples" / "schedules" / "default_searched.json"),
                   help="the searched schedule (rescaled to --steps as the presets are)")
    p.add_argument("--compile", choices=("both", "on", "off"), default="both", help="timed rows uncompiled, compiled, or both")
    p.add_argument("--backend", default="inductor", help="torch.compile backend of the compiled rows")
    p.add_argument("--threads", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    import unetscope as us
    from unetscope.deploy import rescale_plan
    from unetscope.checks import check_device
    from unetscope.models import ModelError
    from unetscope.shortcut import PRESETS, load_schedule, measure

    a = _args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        device = check_device(a.device, ModelError)
    except ModelError as e:
        raise SystemExit(f"gpu_check: {e}") from None
    dtypes = ["float32"] + [d for d in a.dtypes.split(",") if d and d != "float32"]
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise SystemExit(f"gpu_check: --dtypes takes {', '.join(DTYPES)}; got {bad[0]!r}")
    td = a.timing_dtype or ("float16" if device.type == "cuda" else "float32")
    S, seeds = a.steps, list(range(a.samples))
    table = Table()
    ref = us.load_model(a.model, device=device)
    K = ref.num_blocks
    labels = [s % ref.num_classes_real for s in seeds] if ref.conditioning == "class" else None
    searched = load_schedule(a.schedule)
    meta_steps = _schedule_steps(a.schedule)
    if meta_steps and meta_steps != S:
        searched = rescale_plan(searched, meta_steps, S)
    searched.check(S, K)
    paper = PRESETS["paper"](S, K)
    print(f"gpu_check: {a.model} (K={K}) on {device} ({_device_name(device)}), S={S}, {a.samples} samples, batch "
          f"{a.batch}, torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr, flush=True)

    # --- parity -------------------------------------------------------------------------------------
    x, t, cond = model_inputs(ref, a.batch)
    with torch.no_grad():
        fwd32 = ref.units.full_forward(x, t, cond).float()
    ddim32 = us.Sampler(ref, steps=S, method="ddim", guidance=a.guidance).sample(seeds, labels).x0
    models = {}
    for dn in dtypes:
        m = ref if dn == "float32" else us.load_model(a.model, device=device, dtype=DTYPES[dn])
        models[dn] = m
        xin = x.to(m.dtype)
        with torch.no_grad():
            fwd = m.units.full_forward(xin, t, cond).float()
            run = m.runner(xin, t, cond).out.float()
        d = _maxdiff(run, fwd)
        table.add("runner vs the U-Net's forward, max |diff|", dn, "no", f"{d:.2e}", f"<= {SAME[dn]:g}", d <= SAME[dn])
        if dn != "float32":
            d = _maxdiff(fwd, fwd32)
            table.add("U-Net forward vs float32's, max |diff|", dn, "no", f"{d:.2e}", f"<= {CROSS[dn]:g}", d <= CROSS[dn])
            ss = float(us.ssim(_img(us.Sampler(m, steps=S, method="ddim", guidance=a.guidance).sample(seeds, labels).x0),
                               _img(ddim32)).mean())
            table.add("DDIM samples vs float32's, mean SSIM", dn, "no", f"{ss:.4f}", f">= {SSIM_MIN}", ss >= SSIM_MIN)
        if ref.conditioning == "class" and hasattr(m.units, "unet"):
            plain = ddim_loop(m, S, seeds, labels, a.guidance)
            with us.accelerate(m.units.unet, us.Plan(), steps=S):
                hooked = ddim_loop(m, S, seeds, labels, a.guidance)
            table.add("accelerate, empty schedule vs the unhooked loop", dn, "no",
                      "bitwise equal" if torch.equal(hooked, plain) else f"max |diff| {_maxdiff(hooked, plain):.2e}",
                      "bitwise", torch.equal(hooked, plain))
            with us.accelerate(m.units.unet, searched, steps=S) as h:
                hooked = ddim_loop(m, S, seeds, labels, a.guidance)
            ours = us.Sampler(m, steps=S, method="ddim", guidance=a.guidance).sample(seeds, labels, searched).x0
            d = _maxdiff(hooked.cpu(), ours)
            table.add(f"accelerate(searched) loop vs unetscope's DDIM, max |diff| ({h.stats.cut_calls}/{h.stats.calls} "
                      "calls cut)", dn, "no", f"{d:.2e}", f"<= {LOOP[dn]:g}", d <= LOOP[dn])

    # --- timed savings, uncompiled and compiled --------------------------------------------------------
    compiled_sides = {"both": [False, True], "on": [True], "off": [False]}[a.compile]
    base_seconds = {}
    for comp in compiled_sides:
        m = us.load_model(a.model, device=device, dtype=DTYPES[td])
        tag = "yes" if comp else "no"
        if comp:
            m.compile(backend=a.backend)
        sampler = us.Sampler(m, steps=S, method=a.sampler, guidance=a.guidance)
        for name, plan in (("paper preset", paper), ("searched schedule", searched)):
            res = measure(sampler, plan, seeds, labels, repeats=a.repeats)
            tm = res["timing"]
            spread = max(tm["baseline"]["spread"], tm["shortcut"]["spread"])
            base_seconds.setdefault(comp, tm["baseline"]["median"])
            table.add(f"time saving, {name} ({a.sampler})", td, tag,
                      f"{res['time_saving']:.1%} (compute {res['compute_saving']:.1%}, predicted "
                      f"{res['time_saving_predicted']:.1%}, SSIM {res['ssim_mean']:.3f}, spread {spread:.0%})",
                      "no warning", "warn" if res["warnings"] else True)
        if comp:
            st = m.compile_stats()  # the timed runs' batch shape (and FLOP counting, which runs uncompiled)
            table.add("compilations (graphs) of the unit functions while timing", td, tag,
                      f"{st['compilations']} for {st['units']}", "one each", "warn" if st["compilations"] != st["units"] else True)
            xin = x.to(m.dtype)  # another batch shape: compiled anew
            with torch.no_grad():
                d = _maxdiff(m.runner(xin, t, cond).out.float(), m.units.full_forward(xin, t, cond).float())
            table.add("compiled runner vs the U-Net's forward, max |diff|", td, tag, f"{d:.2e}", f"<= {COMPILED[td]:g}",
                      d <= COMPILED[td])
    if len(base_seconds) == 2:
        table.add("baseline sample, uncompiled / compiled seconds (measured apart)", td, "both",
                  f"{base_seconds[False] / base_seconds[True]:.2f}x ({base_seconds[False]:.3f} s / {base_seconds[True]:.3f} s)")

    # --- the caches' memory -----------------------------------------------------------------------------
    m = models.get(td) or us.load_model(a.model, device=device, dtype=DTYPES[td])
    sampler = us.Sampler(m, steps=S, method=a.sampler, guidance=a.guidance)
    peak_base = _peak(device, lambda: sampler.sample(seeds, labels))
    for name, plan in (("paper preset", paper), ("searched schedule", searched)):
        held = _cache_bytes(sampler, plan, seeds, labels)
        value = f"cache holds {held / 2**20:.2f} MiB"
        if peak_base is not None:
            peak = _peak(device, lambda: sampler.sample(seeds, labels, plan))
            value += f"; peak {peak / 2**20:.1f} MiB vs baseline {peak_base / 2**20:.1f} MiB"
        else:
            value += f"; peak allocated: not measured on {device.type} (CUDA only)"
        table.add(f"memory, {name}", td, "no", value)

    fails = table.print(f"\ngpu_check on {device} ({_device_name(device)}): {a.model}, K={K}, S={S}, {a.samples} samples")
    return 1 if fails else 0


def _maxdiff(a, b) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max())


def _img(x0):
    return ((x0.float().cpu().clamp(-1, 1) + 1) / 2)


def _device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def _schedule_steps(path) -> int | None:
    import json

    try:
        meta = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # a YAML schedule: no record of its S
    s = (meta.get("sampler") or {}).get("steps") if isinstance(meta, dict) else None
    return s if isinstance(s, int) else None


def _peak(device, fn) -> int | None:
    """Peak bytes allocated on a CUDA device while ``fn`` runs, above what was allocated before (None elsewhere)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


@torch.no_grad()
def _cache_bytes(sampler, plan, seeds, labels) -> int:
    """The most bytes the schedule's cache (the activations a later step reads) holds at once."""
    most = 0
    for d in sampler.sample_progressive(seeds, labels, plan):
        most = max(most, sum(v.numel() * v.element_size() for v in d["cache"].values()))
    return most


if __name__ == "__main__":
    sys.exit(main())
