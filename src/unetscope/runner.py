"""One U-Net evaluation under a step's action: the runner that intervenes on the units of
``unetscope.adapters.base.UNetUnits``.

The runner applies one step's ``StepAction``: ``zero_skips=ns`` zeroes skips 1..ns from the top
where consumed; ``drop_blocks=nb`` never calls ``E[K-nb..]``, ``M`` or ``D[..nb-1]`` and hands
``D[nb]`` a fill instead; ``reuse_encoder`` never calls ``E[..]`` or ``M`` and reads their cached
outputs; ``adaptive=nb`` (``AdaptiveCache``) runs the shallow units for every row and the bottom nb
blocks only for the rows whose accumulated change says so, as a sub-batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial

import torch

from .adapters.base import AdapterError, UNetUnits
from .plan import ADAPTIVE_STATE, NO_ACTION, StepAction, site

__all__ = ["NonFiniteError", "UNetRunner", "RunOutput"]


class NonFiniteError(AdapterError):
    """A unit whose output holds NaN or inf."""


_K_HINT = ("is num_blocks (K) the number of skips the module's forward pushes, with every module that pushes "
           "none folded into a neighbouring unit and each upsample at the end of the unit before the concat? "
           "(docs/adapters.md)")


@dataclass
class RunOutput:
    out: torch.Tensor
    captured: dict[str, torch.Tensor]  # site ("E[i]", "M", "D[j]") -> that unit's output, as asked by ``capture``
    units_run: float  # encoder, middle and decoder units computed (per row; under AdaptiveCache the rows' mean)
    deep: torch.Tensor | None = None  # AdaptiveCache: per row, whether its bottom blocks ran (bool)


class UNetRunner:
    """Runs one U-Net evaluation unit by unit under one step's ``StepAction``.

    ``fill`` maps the sites the action reads instead of computing (``StepAction.needs``) to their
    cached outputs; ``capture`` names the sites whose outputs to return, for later fills."""

    def __init__(self, units: UNetUnits):
        K = getattr(units, "num_blocks", None)
        if isinstance(K, bool) or not isinstance(K, int) or K < 1:
            raise AdapterError(f"{type(units).__name__}.num_blocks must be a positive int (K), got {K!r}")
        self.units = units
        self.num_blocks = K
        self._out_shapes: dict[tuple, list[torch.Size]] = {}  # input shape -> per-sample D[j] shapes
        self.compiled = None  # a UnitCompiler once ``compile`` ran

    def compile(self, backend=None, device="cpu") -> "UNetRunner":
        """Compile each unit function once (``torch.compile``; ``unetscope.compiling``), after checking
        that ``backend`` (None: ``compiling.default_backend()``, inductor unless set) compiles on ``device``;
        idempotent. The action of a step stays Python: changing it never recompiles."""
        from .compiling import UnitCompiler, check_compiler, default_backend

        backend = default_backend() if backend is None else backend
        if self.compiled is None or self.compiled.backend != backend:
            check_compiler(device, backend)
            self.compiled = UnitCompiler(self.units, self.num_blocks, backend)
        return self

    def compile_stats(self) -> dict | None:
        """Graphs compiled, in all and per unit (None: not compiled)."""
        return None if self.compiled is None else self.compiled.stats()

    def __getstate__(self):  # compiled functions do not pickle (Ray ships models): a copy is uncompiled
        state = dict(self.__dict__)
        state["compiled"] = None
        return state

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, timesteps: torch.Tensor, cond: dict | None = None, action: StepAction | None = None,
                 *, fill: Mapping[str, torch.Tensor] | None = None, capture=(), check_finite: bool = False,
                 group: int = 1, **action_fields) -> RunOutput:
        """One evaluation under ``action`` (``runner(x, t, cond, drop_blocks=2)`` is short for
        ``runner(x, t, cond, StepAction(drop_blocks=2))``). Under ``AdaptiveCache`` each ``group``
        of consecutive rows (a sample's guided and unguided rows) decides together."""
        K, u = self.num_blocks, self.units
        cond = cond or {}
        try:
            a = replace(action or NO_ACTION, **action_fields)
        except TypeError as e:
            raise AdapterError(f"unknown step action field: {e}") from None
        nb, ns = a.drop_blocks, a.zero_skips
        if not 0 <= nb <= K or not 0 <= ns <= K:
            raise AdapterError(f"drop_blocks and zero_skips must be in 0..{K}, got {nb} and {ns}")
        fill = dict(fill or {})
        for s in a.needs(K):
            if s not in fill:
                raise AdapterError(f"{a.describe()} reads the cached output of {s}: pass it in fill={{{s!r}: tensor}}")
        capture = set(capture)
        captured: dict[str, torch.Tensor] = {}
        key = tuple(x.shape[1:])
        if a.adaptive:
            if nb or ns or a.reuse_encoder:
                raise AdapterError(f"{a.describe()}: AdaptiveCache takes no other U-Net intervention on its steps")
            if not 1 <= a.adaptive <= K:
                raise AdapterError(f"AdaptiveCache's nb must be in 1..{K}, got {a.adaptive}")
            if isinstance(group, bool) or not isinstance(group, int) or group < 1 or x.shape[0] % group:
                raise AdapterError(f"group must divide the batch's {x.shape[0]} rows, got {group!r}")
            if a.decides:
                return self._adaptive(x, timesteps, cond, a, fill, capture, group, check_finite)
            capture |= {site("E", K - a.adaptive - 1)} if a.adaptive < K else set()
            capture.add(site("D", a.adaptive - 1))
        if (nb or a.reuse_encoder) and key not in self._out_shapes:
            self._probe(x[:1], timesteps[:1], {k: v[:1] for k, v in cond.items()})
        unit = partial(self._unit, check=check_finite)  # check: each unit's output (a diagnosis after a NaN)
        ctx = unit("prepare", None, u.prepare, x, timesteps, cond)
        skips = ctx.skips
        h = x
        for i in range(K - nb):  # E[0..K-nb-1]: run, or their cached outputs read (ReuseEncoder)
            s = site("E", i)
            h = self._filled(fill, s, x.shape[0], self._out_shapes[key][K + i]) if a.reuse_encoder \
                else unit("E", i, u.encoder, i, h, ctx)
            skips.append(h)
            if s in capture and not a.reuse_encoder:
                captured[s] = h
        shapes = [h.shape[1:] for h in skips]
        skips.extend([None] * nb)  # always K long: skips[i] is E[i]'s output, None where not computed (a
        # compiled unit that reads ctx.skips guards on its length, and would recompile for every nb)
        if nb == 0 and not a.reuse_encoder:
            h = unit("M", None, u.middle, h, ctx)
            if "M" in capture:
                captured["M"] = h
        elif nb == 0:
            h = self._filled(fill, "M", x.shape[0], self._out_shapes[key][2 * K])
        elif a.fill == "cache":
            h = self._filled(fill, site("D", nb - 1), x.shape[0], self._out_shapes[key][nb - 1])
        else:
            h = torch.zeros((x.shape[0], *self._out_shapes[key][nb - 1]), dtype=x.dtype, device=x.device)
        mid_shape = h.shape[1:]
        dec_shapes = []
        for j in range(nb, K):  # D[nb..K-1]
            skip = skips[K - 1 - j]
            if h.shape[2:] != skip.shape[2:]:
                raise AdapterError(
                    f"{type(u).__name__} (num_blocks K={K}): D[{j}] receives h of shape {tuple(h.shape)} and the skip of "
                    f"E[{K - 1 - j}] of shape {tuple(skip.shape)}, but their spatial sizes must match; {_K_HINT}")
            if K - 1 - j < ns:  # skip (K-j) from the top, zeroed where consumed
                skip = torch.zeros_like(skip)
            h = unit("D", j, u.decoder, j, h, skip, ctx)
            if site("D", j) in capture:
                captured[site("D", j)] = h
            dec_shapes.append(h.shape[1:])
        if nb == 0 and not a.reuse_encoder:  # per-sample shapes: D[0..K-1], E[0..K-1], M
            self._out_shapes[key] = dec_shapes + shapes + [mid_shape]
        out = unit("head", None, u.head, h, ctx)
        if a.adaptive:  # AdaptiveCache's first step: every row computed; the state starts here
            nba = a.adaptive
            captured.update(_start_state(x if nba == K else captured[site("E", K - nba - 1)], x.shape[0]))
        return RunOutput(out, captured, len(a.computes(K)))

    def _adaptive(self, x, timesteps, cond, a: StepAction, fill, capture, group: int, check: bool) -> RunOutput:
        """An ``AdaptiveCache`` step past its first: the shallow units on every row, the indicator
        per sample, the bottom ``nb`` blocks on the sub-batch of rows that recompute, then the rest."""
        K, u, nb = self.num_blocks, self.units, a.adaptive
        unit = partial(self._unit, check=check)
        rows = x.shape[0]
        key = tuple(x.shape[1:])
        if key not in self._out_shapes:
            self._probe(x[:1], timesteps[:1], {k: v[:1] for k, v in cond.items()})
        cached = self._filled(fill, site("D", nb - 1), rows, self._out_shapes[key][nb - 1])
        prev, acc, reused = (fill[k] for k in ADAPTIVE_STATE)
        captured: dict[str, torch.Tensor] = {}
        ctx = unit("prepare", None, u.prepare, x, timesteps, cond)
        skips, h = ctx.skips, x
        for i in range(K - nb):  # E[0..K-nb-1], every row
            h = unit("E", i, u.encoder, i, h, ctx)
            skips.append(h)
            if site("E", i) in capture:
                captured[site("E", i)] = h
        src = h  # the indicator's source: E[K-nb-1]'s output, or the input x_t for nb = K
        if tuple(prev.shape) != tuple(src.shape):
            raise AdapterError(f"AdaptiveCache's state for {rows} rows must have shape {tuple(src.shape)}, got {tuple(prev.shape)}")
        # per sample: the L1 change of its rows over the L1 size of the previous output, accumulated
        diff = (src.float() - prev.float()).abs().flatten(1).sum(1).view(-1, group).sum(1)
        size = prev.float().abs().flatten(1).sum(1).view(-1, group).sum(1)
        acc_s = acc.view(-1, group)[:, 0] + diff / size.clamp_min(torch.finfo(torch.float32).tiny)
        reused_s = reused.view(-1, group)[:, 0]
        reuse = acc_s < a.threshold
        if a.max_reuse:
            reuse &= reused_s < a.max_reuse
        deep = (~reuse).repeat_interleave(group)  # per row
        idx = deep.nonzero().flatten()
        if len(idx) == rows:  # every row recomputes: the whole batch, as an unintervened evaluation
            sub_ctx, sub_skips, hd = ctx, skips, h
        elif len(idx):
            sub_ctx = unit("prepare", None, u.prepare, x[idx], timesteps[idx], {k: v[idx] for k, v in cond.items()})
            sub_skips, hd = sub_ctx.skips, h[idx]
            sub_skips.extend(s[idx] for s in skips)
        if len(idx):
            for i in range(K - nb, K):  # the deep part: E[K-nb..K-1], M, D[0..nb-1], on the sub-batch
                hd = unit("E", i, u.encoder, i, hd, sub_ctx)
                sub_skips.append(hd)
            hd = unit("M", None, u.middle, hd, sub_ctx)
            for j in range(nb):
                hd = unit("D", j, u.decoder, j, hd, sub_skips[K - 1 - j], sub_ctx)
            if len(idx) == rows:
                h = hd
            else:
                h = cached.clone()
                h[idx] = hd.to(h.dtype)
        else:
            h = cached
        captured[site("D", nb - 1)] = h
        skips.extend([None] * (K - len(skips)))  # K long, as in a full evaluation (see above)
        for j in range(nb, K):  # D[nb..K-1], every row
            h = unit("D", j, u.decoder, j, h, skips[K - 1 - j], ctx)
            if site("D", j) in capture:
                captured[site("D", j)] = h
        out = unit("head", None, u.head, h, ctx)
        zero = torch.zeros_like(acc_s)
        captured.update({"adaptive.prev": src, "adaptive.acc": torch.where(reuse, acc_s, zero).repeat_interleave(group),
                         "adaptive.reused": torch.where(reuse, reused_s + 1, zero).repeat_interleave(group)})
        shallow = len(a.computes(K))
        return RunOutput(out, captured, shallow + a.deep_units() * len(idx) / rows, deep)

    def _filled(self, fill: dict, s: str, n: int, want) -> torch.Tensor:
        """A cached output read in place of computing unit ``s``, checked against its shape."""
        f = fill[s]
        if tuple(f.shape) != (n, *want):
            raise AdapterError(f"fill for {s} must have shape {(n, *want)}, got {tuple(f.shape)}")
        return f

    def _unit(self, kind, index, fn, *args, check: bool = False):
        """Call one unit; a failure names the unit (a user's protocol that does not fit), and with
        ``check`` a NaN or inf in its output does too."""
        if self.compiled is not None and kind != "prepare":
            fn = self.compiled.get(kind, index) or fn
        try:
            out = fn(*args)
        except AdapterError:
            raise
        except Exception as e:
            name = kind if index is None else f"{kind}[{index}]"
            msg = str(e).splitlines()[0] if str(e) else ""
            hint = f"; {_K_HINT}" if kind in ("E", "M", "D") and (isinstance(e, (IndexError, KeyError)) or any(
                w in msg for w in ("size", "shape", "channels"))) else ""
            raise AdapterError(f"{type(self.units).__name__} unit {name} (K={self.num_blocks}) failed: "
                               f"{type(e).__name__}: {msg}{hint}") from e
        if check and torch.is_tensor(out) and not torch.isfinite(out).all():
            name = kind if index is None else f"{kind}[{index}]"
            raise NonFiniteError(f"unit {name} of {type(self.units).__name__} outputs NaN or inf")
        return out

    def _probe(self, x, timesteps, cond) -> None:
        self(x, timesteps, cond)  # a full evaluation of one sample records every unit's output shape

    def decoder_shapes(self, x: torch.Tensor, timesteps: torch.Tensor, cond: dict | None = None) -> list[torch.Size]:
        """Per-sample output shapes of ``D[0..K-1]`` for inputs shaped like ``x``."""
        key = tuple(x.shape[1:])
        if key not in self._out_shapes:
            self._probe(x[:1], timesteps[:1], {k: v[:1] for k, v in (cond or {}).items()})
        return list(self._out_shapes[key][:self.num_blocks])


def _start_state(src: torch.Tensor, rows: int) -> dict[str, torch.Tensor]:
    """AdaptiveCache's state after a step at which every row computed."""
    zero = torch.zeros(rows, dtype=torch.float32, device=src.device)
    return {"adaptive.prev": src, "adaptive.acc": zero, "adaptive.reused": zero.clone()}
