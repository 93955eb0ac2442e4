"""Where a grid's chunks are computed: in this process (``LocalExecutor``, the default) or on the
workers of a Ray cluster (``RayExecutor``, ``pip install 'unetscope[ray]'``).

Both give one small interface, used by ``sweep.run_grid`` and open to any search over plans:

    with executor:                                    # Ray: connect (or start a local instance)
        for i, result in executor.map(fn, items, sampler):
            ...                                       # as they complete, in any order

``fn(sampler, item)`` must be a module-level function (a worker imports it by name; a closure would
be pickled for every item). It runs on a sampler built like ``sampler``: here, ``sampler`` itself;
on Ray, one sampler per worker, built once when the worker starts, from the model's reference
(``"default"``, a folder, ``FILE.py:FACTORY``, ``package.module:FACTORY``: each worker loads it) or,
for a model given as a Python object, from one copy put in Ray's object store. A worker never
receives the model with a task.

``unetscope shortcut search`` uses it too: each batch of candidate plans is scored on chunks of the
calibration (or validation) seeds, one chunk per worker (``shortcut.score_chunk``).

Ray's design here: one actor per slot (``cpus_per_task`` CPUs and ``gpus_per_task`` GPUs; a fraction
of a GPU puts several slots on one GPU), each fed one item at a time, so a slot is never idle while
items wait. A worker process that dies is restarted and its item run again (``max_restarts``,
``max_task_retries``): items are pure, so the results are the same. An error raised by ``fn`` (a
user's model that fails, a bad plan) stops the run and is raised here as itself, not as a Ray
traceback. The driver (this process) alone writes results. Workers' own output (the warnings the
driver already printed when it loaded the same model) stays in Ray's logs
(``/tmp/ray/session_latest/logs``), not on the driver's terminal.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checks import check_int, check_threads
from .errors import UnetscopeError

__all__ = ["ExecutorError", "LocalExecutor", "RayExecutor", "make_executor", "EXECUTORS", "tally_work", "describe_workers"]

EXECUTORS = ("local", "ray")
CONNECT_TIMEOUT_S = 5  # joining a cluster: how long to wait for its head before giving up (one line, exit 2)


def tally_work(workers: dict, worker: str, evaluations: int, samples: int, seconds: float) -> None:
    """Add one computed item to ``workers`` (host/pid -> chunks, evaluations, image-evaluations,
    seconds and image-evaluations per second)."""
    w = workers.setdefault(worker, dict(chunks=0, evaluations=0, image_evaluations=0, seconds=0.0))
    w["chunks"] += 1
    w["evaluations"] += evaluations
    w["image_evaluations"] += evaluations * samples
    w["seconds"] += seconds
    w["image_evaluations_per_s"] = w["image_evaluations"] / w["seconds"] if w["seconds"] > 0 else 0.0


def describe_workers(workers: dict) -> str:
    """One line: each worker's throughput."""
    return f"{len(workers)} workers, image-evaluations/s: " + ", ".join(
        f"{k} {w['image_evaluations_per_s']:.1f} ({w['chunks']} chunks)" for k, w in sorted(workers.items()))


class ExecutorError(UnetscopeError, ValueError):
    """Executor settings that do not fit, a cluster that cannot be reached, or workers that keep dying."""


class LocalExecutor:
    """The in-process executor: items run here, in order, on the driver's own sampler."""

    in_process = True
    name = "local"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def close(self) -> None:
        return None

    def check(self, model) -> None:
        return None

    def parallelism(self) -> int:
        """Items computed at once."""
        return 1

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable, sampler) -> Iterator[tuple[int, Any]]:
        for i, item in enumerate(items):
            yield i, fn(sampler, item)


@dataclass(frozen=True)
class WorkerSpec:
    """How a worker builds its sampler: the model (a reference, or None: from the object store), where
    and in what dtype, the sampler's settings, the model's description (checked: the same model), threads."""

    model: str | None
    device: str
    dtype: str
    sampler: tuple  # sorted (name, value) pairs of the Sampler's keywords
    describe: str  # JSON of the driver's model.describe()
    threads: int


class Slot:
    """A Ray actor's body: one sampler, built once; runs items on it. An error building it is kept and
    raised by every call (so the run stops with it; restarting would fail the same way)."""

    def __init__(self, spec: WorkerSpec, model_box: list | None):
        import json

        import torch

        self.error, self.sampler = None, None
        torch.set_num_threads(spec.threads)
        try:
            from .models import load_model
            from .sampling import Sampler

            if model_box is not None:
                import ray

                model = ray.get(model_box[0])
            else:
                model = load_model(spec.model, device=spec.device, dtype=getattr(torch, spec.dtype))
            if json.dumps(model.describe(), sort_keys=True) != spec.describe:
                raise ExecutorError(f"the worker's model {spec.model!r} is not the driver's ({model.describe()} vs "
                                    f"{spec.describe}): the same files must be on every node")
            kw = dict(spec.sampler)
            kw["options"] = json.loads(kw.get("options", "{}"))
            self.sampler = Sampler(model, **kw)
        except Exception as e:  # noqa: BLE001 - kept and raised with the first item
            self.error = e

    def run(self, fn, item):
        if self.error is not None:
            raise self.error
        return fn(self.sampler, item)


def _absolute_reference(ref: str) -> str:
    """A model reference that means the same in a worker whose working folder differs: relative
    folders and factory files made absolute ("default" and ``package.module:FACTORY`` as they are)."""
    from .models import is_factory_reference

    if ref == "default":
        return ref
    if is_factory_reference(ref):
        file, _, factory = ref.rpartition(":")
        return f"{Path(file).resolve()}:{factory}" if file.endswith(".py") else ref
    return str(Path(ref).expanduser().resolve())


def _number(name: str, v, low: float, allow_zero: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < low or (v == 0 and not allow_zero):
        raise ExecutorError(f"{name} must be a number {'>=' if allow_zero else '>'} {low}, got {v!r}")
    return float(v)


class RayExecutor:
    """Items on Ray workers: one actor per slot of ``cpus_per_task`` CPUs and ``gpus_per_task`` GPUs.

    ``address``: None starts a local Ray instance with this machine's CPUs and GPUs (closed on exit);
    ``"auto"`` or ``HOST:PORT`` joins a running cluster (``ray start --head``). ``threads``: torch
    threads per worker (0: one per CPU of the slot). ``workers``: at most this many slots (default:
    as many as the cluster holds). ``model``: the reference workers load (None: ship the driver's
    model once through the object store)."""

    in_process = False
    name = "ray"

    def __init__(self, address: str | None = None, *, cpus_per_task: float = 1, gpus_per_task: float = 0,
                 threads: int = 0, workers: int | None = None, model: str | os.PathLike | None = None,
                 max_retries: int = 3):
        self.cpus_per_task = _number("cpus_per_task", cpus_per_task, 0)
        self.gpus_per_task = _number("gpus_per_task", gpus_per_task, 0)
        if self.cpus_per_task == 0 and self.gpus_per_task == 0:
            raise ExecutorError("cpus_per_task and gpus_per_task are both 0: a worker needs a CPU or a GPU")
        if self.gpus_per_task > 1 and self.gpus_per_task != int(self.gpus_per_task):
            raise ExecutorError(f"gpus_per_task above 1 must be a whole number, got {gpus_per_task!r}")
        threads = check_threads(threads, ExecutorError, zero="one per CPU of a slot")
        workers = check_int(workers, ExecutorError, "workers", 1, none="every slot")
        max_retries = check_int(max_retries, ExecutorError, "max_retries", 0)
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ExecutorError(f"address must be 'auto' or HOST:PORT of a Ray cluster's head, got {address!r}")
        self.address, self.workers, self.max_retries = address, workers, max_retries
        self.threads = threads or max(1, int(self.cpus_per_task))
        self.model = None if model is None else _absolute_reference(str(model))
        self._started = False  # this executor started the local Ray instance (and closes it)
        self._pools: dict[WorkerSpec, list] = {}
        self._boxes: dict[int, list] = {}  # id(model) -> [ObjectRef] of a model shipped once

    def __repr__(self) -> str:
        return (f"RayExecutor(address={self.address!r}, cpus_per_task={self.cpus_per_task:g}, "
                f"gpus_per_task={self.gpus_per_task:g}, threads={self.threads}, workers={self.workers})")

    def for_model(self, model) -> "RayExecutor":
        """This executor, with ``model`` as the reference workers load (when it is one and none is set)."""
        if self.model is None and isinstance(model, (str, os.PathLike)):
            self.model = _absolute_reference(str(model))
        return self

    def check(self, model) -> None:
        """The model's device against the slots' GPUs (before any folder is made)."""
        import torch

        kind = torch.device(model.device).type
        if kind == "cpu" and self.gpus_per_task > 0:
            raise ExecutorError(f"gpus_per_task {self.gpus_per_task:g} with a model on the CPU: give --device cuda")
        if kind == "cuda" and self.gpus_per_task == 0:
            raise ExecutorError("a model on cuda needs gpus_per_task > 0 (Ray hides the GPUs from a worker without one)")

    # --- connecting ------------------------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self) -> None:
        try:
            import ray
        except ImportError:
            raise ExecutorError("the ray executor needs Ray: pip install 'unetscope[ray]'") from None
        if self.address not in (None, "auto") and not self.address.startswith("ray://"):
            _probe(self.address)
        if ray.is_initialized():  # a session of the caller's: used as it is, left open
            return
        if self.address is None:
            ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            self._started = True
            return
        # a head that does not answer fails in seconds, not after Ray's minutes of retries
        keys = ("RAY_py_gcs_connect_timeout_s", "RAY_gcs_rpc_server_connect_timeout_s", "RAY_gcs_server_port_wait_time_s")
        saved = {k: os.environ.get(k) for k in keys}
        for k in keys:
            os.environ.setdefault(k, str(CONNECT_TIMEOUT_S))
        try:
            ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ExecutorError(f"cannot join the Ray cluster at {self.address}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def close(self) -> None:
        import ray

        for pool in self._pools.values():
            for a in pool:
                ray.kill(a)
        self._pools.clear()
        self._boxes.clear()
        if self._started:
            ray.shutdown()
            self._started = False

    # --- running ---------------------------------------------------------------------------------
    def _spec(self, sampler) -> tuple[WorkerSpec, list | None]:
        import json

        import ray
        import torch

        m = sampler.model
        box = None
        if self.model is None:
            box = self._boxes.get(id(m))
            if box is None:
                box = self._boxes[id(m)] = [ray.put(m)]  # in a list: a worker fetches it once, not per call
        settings = sampler.settings()  # a worker compiles its own copy (compiled code does not pickle)
        settings["options"] = json.dumps(settings["options"], sort_keys=True)  # hashable
        spec = WorkerSpec(self.model, torch.device(m.device).type, str(m.dtype).removeprefix("torch."),
                          tuple(sorted(settings.items())), json.dumps(m.describe(), sort_keys=True), self.threads)
        return spec, box

    def slots(self) -> int:
        """Slots the cluster holds for one worker each."""
        import ray

        res = ray.cluster_resources()
        n = []
        if self.cpus_per_task > 0:
            n.append(int(res.get("CPU", 0) // self.cpus_per_task))
        if self.gpus_per_task > 0:
            n.append(int(res.get("GPU", 0) // self.gpus_per_task))
        if min(n) < 1:
            raise ExecutorError(f"the Ray cluster has {res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs: no slot of "
                                f"{self.cpus_per_task:g} CPUs and {self.gpus_per_task:g} GPUs fits")
        return min(n)

    def parallelism(self) -> int:
        """Items computed at once: the cluster's slots (at most ``workers``)."""
        return min(self.slots(), self.workers or self.slots())

    def _pool(self, spec: WorkerSpec, box: list | None, n: int) -> list:
        """``n`` workers for ``spec``: those of an earlier call (a reproduce's experiments share them), and new ones."""
        import ray

        pool = self._pools.setdefault(spec, [])
        if len(pool) < n:
            actor = ray.remote(Slot).options(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
                                             max_restarts=self.max_retries, max_task_retries=self.max_retries)
            pool += [actor.remote(spec, box) for _ in range(n - len(pool))]
        return pool[:n]

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable, sampler) -> Iterator[tuple[int, Any]]:
        """``(i, fn(worker's sampler, items[i]))`` as the items complete, in any order; one item at a
        time per worker, so none idles while items wait."""
        import ray

        items = list(items)
        if not items:
            return
        spec, box = self._spec(sampler)
        idle = list(self._pool(spec, box, min(len(items), self.slots(), self.workers or len(items))))
        todo = list(enumerate(items))[::-1]
        running: dict = {}  # ObjectRef -> (index, worker)
        finished = False
        try:
            while todo or running:
                while todo and idle:
                    i, item = todo.pop()
                    a = idle.pop()
                    running[a.run.remote(fn, item)] = (i, a)
                [ref], _ = ray.wait(list(running), num_returns=1)
                i, a = running.pop(ref)
                result = _get(ref, fn)
                idle.append(a)
                yield i, result
            finished = True
        finally:
            if not finished:  # a stopped run (an error, the caller's break): nothing is left working
                for a in self._pools.pop(spec, []):
                    ray.kill(a)


def _get(ref, fn):
    """A result; or the error ``fn`` raised in the worker: unetscope's typed errors as themselves,
    anything else as one ExecutorError line (never a Ray traceback)."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, Exception) and type(cause).__module__.startswith("unetscope."):
            raise cause from None
        what = f"{type(cause).__name__}: {str(cause).strip()}" if isinstance(cause, Exception) else str(e).strip()
        raise ExecutorError(f"{getattr(fn, '__name__', 'a task')} failed in a worker: {what.splitlines()[0] if what else '?'}") from None
    except RayActorError as e:
        raise ExecutorError(f"a worker died more than max_retries times ({type(e).__name__}); its node may be out "
                            "of memory: see Ray's logs") from None


def _probe(address: str) -> None:
    """Something listens at HOST:PORT (a refused or silent port is one line at once, not Ray's retries)."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ExecutorError(f"ray address must be 'auto' or HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise ExecutorError(f"no Ray cluster at {address} ({e.strerror or type(e).__name__}); start one with "
                            "`ray start --head`, or leave --ray-address out for a local instance") from None


def make_executor(executor: str | LocalExecutor | RayExecutor | None, model=None) -> LocalExecutor | RayExecutor:
    """``executor`` as an object: None or ``"local"``: in this process; ``"ray"``: a local Ray instance;
    an executor as it is. ``model``: the API's model argument (a reference is what Ray workers load)."""
    if executor is None or executor == "local":
        return LocalExecutor()
    if executor == "ray":
        executor = RayExecutor()
    if isinstance(executor, RayExecutor):
        return executor.for_model(model)
    if isinstance(executor, LocalExecutor):
        return executor
    raise ExecutorError(f"executor must be one of {', '.join(EXECUTORS)} or an executor object, got {executor!r}")
