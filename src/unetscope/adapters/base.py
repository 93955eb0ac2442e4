"""The unit protocol every U-Net is seen through, and the one runner that intervenes on it.

A U-Net is ``K`` encoder units ``E[0..K-1]`` (top to bottom), a middle unit ``M`` and ``K`` decoder
units ``D[0..K-1]`` (bottom to top). Each encoder unit pushes one skip; ``D[j]`` consumes the skip
pushed by ``E[K-1-j]`` (LIFO, like ``hs.pop()`` in guided-diffusion). The runner applies one step's
``StepAction``: ``zero_skips=ns`` zeroes skips 1..ns from the top where consumed; ``drop_blocks=nb``
never calls ``E[K-nb..]``, ``M`` or ``D[..nb-1]`` and hands ``D[nb]`` a fill instead;
``reuse_encoder`` never calls ``E[..]`` or ``M`` and reads their cached outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol, runtime_checkable

import torch

from ..plan import NO_ACTION, StepAction, site

__all__ = ["AdapterError", "NonFiniteError", "UNetUnits", "Context", "UNetRunner", "RunOutput"]


class AdapterError(ValueError):
    """A U-Net that cannot be seen as units, or units that do not fit together."""


class NonFiniteError(AdapterError):
    """A unit whose output holds NaN or inf."""


_K_HINT = ("is num_blocks (K) the number of skips the module's forward pushes, with every module that pushes "
           "none folded into a neighbouring unit and each upsample at the end of the unit before the concat? "
           "(docs/adapters.md)")


@dataclass
class Context:
    """What ``prepare`` computes once per evaluation (embeddings, conditioning), shared by all
    units; ``skips`` is filled by the runner (``skips[i]`` is ``E[i]``'s output; once the encoder has
    run it is K long, ``None`` for the units ``DropBlocks`` did not compute)."""

    emb: Any = None
    extra: dict = field(default_factory=dict)
    skips: list = field(default_factory=list)


@runtime_checkable
class UNetUnits(Protocol):
    """Implement this for your own U-Net (see ``docs/adapters.md`` and ``examples/``)."""

    num_blocks: int  # K

    def prepare(self, x: torch.Tensor, timesteps: torch.Tensor, cond: dict) -> Context:
        """Time/class/text embeddings for this evaluation."""

    def encoder(self, i: int, h: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Run ``E[i]``; ``E[0]`` reads the model input ``x``. Its output is skip ``i + 1`` from the top."""

    def middle(self, h: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Run ``M`` on ``E[K-1]``'s output."""

    def decoder(self, j: int, h: torch.Tensor, skip: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Run ``D[j]`` on the previous output and the skip pushed by ``E[K-1-j]``."""

    def head(self, h: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Map ``D[K-1]``'s output to the model output (epsilon, v, or 2C channels)."""


@dataclass
class RunOutput:
    out: torch.Tensor
    captured: dict[str, torch.Tensor]  # site ("E[i]", "M", "D[j]") -> that unit's output, as asked by ``capture``
    units_run: int  # encoder, middle and decoder units computed


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

    def compile(self, backend: str = "inductor", device="cpu") -> "UNetRunner":
        """Compile each unit function once (``torch.compile``; ``unetscope.compiling``), after checking
        that ``backend`` compiles on ``device``; idempotent. The action of a step stays Python: changing
        it never recompiles."""
        from ..compiling import UnitCompiler, check_compiler

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
                 **action_fields) -> RunOutput:
        """One evaluation under ``action`` (``runner(x, t, cond, drop_blocks=2)`` is short for
        ``runner(x, t, cond, StepAction(drop_blocks=2))``)."""
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
        return RunOutput(out, captured, len(a.computes(K)))

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
