"""Timing waits for the device: a fake CUDA / MPS device records its synchronize calls, and a fake
clock its reads; every timed run is [synchronize, clock, run, synchronize, clock]."""

import pytest
import torch

import unetscope as us
from unetscope import timing


def _recorder(monkeypatch):
    """Events in order: ("sync", device), ("clock",), ("run", name)."""
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: events.append(("sync", str(d))))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: events.append(("sync", "mps")))

    def clock():
        events.append(("clock",))
        return float(len(events))

    return events, clock


def _timed_runs(events):
    """The events around each clock pair: every timed run's [sync, clock, run, sync, clock]."""
    clocks = [i for i, e in enumerate(events) if e == ("clock",)]
    assert len(clocks) % 2 == 0
    return [events[a - 1:b + 1] for a, b in zip(clocks[::2], clocks[1::2])]


@pytest.mark.parametrize("device, synced", [("cuda:1", "cuda:1"), ("cuda", "cuda"), ("mps", "mps")])
def test_interleave_waits_for_the_device_around_every_timed_run(monkeypatch, device, synced):
    events, clock = _recorder(monkeypatch)
    fns = {k: (lambda k=k: events.append(("run", k)) or k) for k in ("baseline", "shortcut")}
    timings, first = timing.interleave(fns, repeats=3, warmup=1, clock=clock, device=torch.device(device))
    runs = _timed_runs(events)
    assert len(runs) == 6 and first == {"baseline": "baseline", "shortcut": "shortcut"}
    for run, name in zip(runs, ["baseline", "shortcut"] * 3):
        assert run == [("sync", synced), ("clock",), ("run", name), ("sync", synced), ("clock",)]
    # the warm-up's queued work is waited for before the first timed run's clock starts
    assert events[:4] == [("run", "baseline"), ("sync", synced), ("run", "shortcut"), ("sync", synced)]
    assert all(t.median > 0 for t in timings.values())


def test_the_cpu_is_not_synchronised(monkeypatch):
    events, clock = _recorder(monkeypatch)
    seconds, r = timing.timed(lambda: events.append(("run", "x")) or 7, torch.device("cpu"), clock)
    assert r == 7 and seconds > 0 and events == [("clock",), ("run", "x"), ("clock",)]
    timing.synchronize(None)
    assert ("sync", "cpu") not in events


def test_action_seconds_and_measure_wait_for_the_models_device(monkeypatch, tiny_model_dir):
    """Both time through the one helper, on the model's device (here the CPU, whose wait is a no-op:
    the helper is replaced by a recorder so that the calls it gets are seen)."""
    from unetscope.shortcut import action_seconds, measure

    events = []
    monkeypatch.setattr(timing, "synchronize", lambda d=None: events.append(("sync", str(torch.device(d)))))

    def clock():
        events.append(("clock",))
        return float(len(events))

    model = us.load_model(tiny_model_dir)
    s = us.Sampler(model, steps=4, guidance=3.0)
    plan = us.Plan([us.DropBlocks(2, 3, 2, "cache")])
    action_seconds(s, plan, [0, 1], [1, 2], repeats=2, warmup=1, clock=clock)
    runs = _timed_runs(events)
    assert len(runs) == 2 * 2  # two actions (none, the cut) x two repeats
    assert all(r[0] == ("sync", "cpu") and r[-2] == ("sync", "cpu") and r[1] == r[-1] == ("clock",) for r in runs)
    events.clear()
    res = measure(s, plan, [0, 1], [1, 2], repeats=2, warmup=1, clock=clock)
    runs = _timed_runs(events)
    assert len(runs) == 2 * 2 + 2 * 5  # the two sides x repeats, then action_seconds' two actions x 5 repeats
    assert all(r[0] == ("sync", "cpu") and r[-2] == ("sync", "cpu") for r in runs)
    assert res["timing"]["repeats"] == 2
