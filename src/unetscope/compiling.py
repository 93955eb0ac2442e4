"""A U-Net compiled unit by unit (``torch.compile``), so that a change of action between steps never
recompiles.

The runner decides in Python which units a step computes (``DropBlocks``, ``ReuseEncoder``, ...);
each unit function (``E[i]``, ``M``, ``D[j]``, ``head``) is compiled on its own, with a code object of
its own (dynamo keeps its compiled code and its recompile limit per code object: units sharing one
would share both). A unit's inputs keep their shapes whatever the step does (a fill has the shape
of the output it stands for; ``ctx.skips`` is always K long), and are made contiguous before the
call (a zero fill and a computed output differ in strides, which dynamo guards on), so each unit
compiles once per input shape. ``UnitCompiler.compilations`` counts the graphs each unit's backend
compiled: one per unit when nothing recompiles and no graph breaks.
"""

from __future__ import annotations

import functools
import os
import types
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from .errors import UnetscopeError

__all__ = ["CompileError", "compiler_problem", "check_compiler", "default_backend", "UnitCompiler", "UNIT_KINDS"]

UNIT_KINDS = ("E", "M", "D", "head")


class CompileError(UnetscopeError, ValueError):
    """``compile`` asked for where torch.compile cannot run (no dynamo, no C++ compiler, no Triton)."""


BACKEND_VARIABLE = "UNETSCOPE_COMPILE_BACKEND"


def default_backend() -> str:
    """The ``torch.compile`` backend of ``--compile`` and ``compile=True``: inductor, or the one named by
    ``$UNETSCOPE_COMPILE_BACKEND`` (any name ``torch._dynamo.list_backends()`` knows: ``aot_eager`` to
    tell a dynamo or AOT problem from an inductor one, ``eager`` for dynamo's tracing alone). An
    unknown name is a ``CompileError`` of one line naming the ones there are."""
    name = os.environ.get(BACKEND_VARIABLE, "").strip() or "inductor"
    if name != "inductor":
        import torch._dynamo

        known = sorted(set(torch._dynamo.list_backends(exclude_tags=())) | {"eager", "aot_eager"})
        if name not in known:
            raise CompileError(f"{BACKEND_VARIABLE}={name!r} is not a torch.compile backend; there are: {', '.join(known)}")
    return name


def _static_problem(device: torch.device, backend: str) -> str | None:
    """What rules torch.compile out here without compiling anything (None: nothing found)."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "torch._dynamo (torch.compile) is not supported on this Python or platform"
    if backend != "inductor":
        return None
    if device.type == "cpu":
        try:
            from torch._inductor import cpp_builder

            cpp_builder.get_cpp_compiler()  # inductor's own search (config.cpp.cxx, then g++ / clang++)
        except (ImportError, AttributeError):
            return None  # another torch: the probe decides
        except Exception as e:  # noqa: BLE001 - InvalidCxxCompiler, or a compiler that does not run
            return f"inductor finds no working C++ compiler for the CPU ({type(e).__name__}); install g++ or clang++"
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "inductor needs Triton to compile for CUDA, and it is not installed (pip install triton)"
    return None


@functools.lru_cache(maxsize=None)
def _probe(device_type: str, index: int | None, backend: str) -> str | None:
    """Compile and run a two-op function on the device: the check that nothing else can stand in for."""
    device = torch.device(device_type, index) if index is not None else torch.device(device_type)
    problem = _static_problem(device, backend)
    if problem:
        return problem
    try:
        fn = torch.compile(lambda x: torch.sin(x) * 2 + 1, backend=backend)
        x = torch.linspace(0, 1, 8, device=device)
        if not torch.allclose(fn(x), torch.sin(x) * 2 + 1, atol=1e-5):
            return f"a function compiled by {backend} on {device} gives a wrong result"
    except Exception as e:  # noqa: BLE001 - any failure to compile means: not here
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        return f"torch.compile ({backend}) fails on {device}: {type(e).__name__}{': ' + msg if msg else ''}"
    return None


def compiler_problem(device="cpu", backend=None) -> str | None:
    """Why torch.compile with ``backend`` (None: ``default_backend()``) cannot run on ``device`` here, or
    None when it can (checked once per device and backend: dynamo's support, inductor's C++ compiler or
    Triton, then a tiny function compiled and run). A backend given as a function (your own) is checked
    for dynamo only."""
    d = torch.device(device)
    if backend is None:
        try:
            backend = default_backend()
        except CompileError as e:
            return str(e)
    if not isinstance(backend, str):
        return _static_problem(d, "custom")
    return _probe(d.type, d.index, backend)


def check_compiler(device="cpu", backend=None) -> None:
    """Raise ``CompileError`` (one line) when ``compiler_problem`` finds one."""
    problem = compiler_problem(device, backend)
    if problem:
        raise CompileError(f"compile: {problem}; run without compiling")


def _own_code(fn: Callable, name: str) -> Callable:
    """``fn`` with a code object of its own (dynamo's cache and recompile limit are per code object)."""
    code = fn.__code__.replace(co_name=name, co_qualname=name) if hasattr(fn.__code__, "co_qualname") \
        else fn.__code__.replace(co_name=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


def _contiguous(t):
    return t.contiguous() if torch.is_tensor(t) else t


class UnitCompiler:
    """The compiled unit functions of one ``UNetUnits``, with the protocol's signatures, and the
    number of graphs each one compiled."""

    def __init__(self, units, num_blocks: int, backend=None):
        self.backend = default_backend() if backend is None else backend  # a name, or a backend function of your own
        self.compilations: dict[str, int] = {}
        self.functions: dict[tuple, Callable] = {}
        K = num_blocks
        for i in range(K):
            self._add("E", i, lambda i=i: (lambda h, ctx: units.encoder(i, h, ctx)))
        self._add("M", None, lambda: (lambda h, ctx: units.middle(h, ctx)))
        for j in range(K):
            self._add("D", j, lambda j=j: (lambda h, skip, ctx: units.decoder(j, h, skip, ctx)))
        self._add("head", None, lambda: (lambda h, ctx: units.head(h, ctx)))

    def _add(self, kind: str, index: int | None, make: Callable) -> None:
        from torch._dynamo import lookup_backend

        site = kind if index is None else f"{kind}[{index}]"
        inner = lookup_backend(self.backend)
        self.compilations[site] = 0

        def backend(gm, example_inputs):  # called once per graph dynamo hands over: a compilation
            self.compilations[site] += 1
            return inner(gm, example_inputs)

        eager = make()
        compiled = torch.compile(_own_code(eager, f"unetscope_unit_{kind}{'' if index is None else index}"),
                                 backend=backend)

        def run(args):
            *tensors, ctx = args
            if is_in_torch_dispatch_mode():  # FLOP counting (FlopCounterMode) sees the eager ops; and dynamo,
                return eager(*tensors, ctx)  # once it meets a dispatch mode, never runs the compiled code again
            return compiled(*map(_contiguous, tensors), ctx)

        if index is None:
            def call(*args):
                return run(args)
        else:
            def call(_index, *args):  # the protocol's (i, h, ctx) / (j, h, skip, ctx)
                return run(args)
        self.functions[(kind, index)] = call

    def get(self, kind: str, index: int | None):
        return self.functions.get((kind, index))

    @property
    def total(self) -> int:
        return sum(self.compilations.values())

    def stats(self) -> dict:
        """``{"backend", "units", "compilations", "per_unit"}``: graphs compiled, in all and per unit."""
        name = self.backend if isinstance(self.backend, str) else getattr(self.backend, "__name__", "custom")
        return dict(backend=name, units=len(self.compilations), compilations=self.total,
                    per_unit=dict(self.compilations))
