"""A new sampler is one file (#35): a ``Solver`` subclass added to ``sampling.SOLVERS`` runs under the one
driver with interventions, ``compare`` and the sweep engine's shared prefixes, and nothing else changes."""

import math
from dataclasses import dataclass

import pytest
import torch

import unetscope as us
from unetscope import sampling
from unetscope.sampling import Solver, UNetCall
from unetscope.sweep import SweepEngine


@dataclass(frozen=True)
class _Seeds:
    seeds: tuple

    @property
    def n(self):
        return len(self.seeds)

    def copy(self):
        return self


class DeterministicDDIM(Solver):
    """DDIM with eta 0, written as a user would (Song et al. 2021, Eq. 12): one call a step."""

    name = "my-ddim"

    def __init__(self, model, steps, method, eta=0.0, variance=None, options=None, clip_x0=False):
        self.model, self.steps = model, steps
        self.spacing = model.schedule.respace(steps)

    @classmethod
    def accepts(cls, method):
        return method == "my-ddim"

    def describe(self):
        return dict(method=self.name)

    def settings(self):
        return dict(method=self.name, eta=0.0, variance=None, options={})

    def new_state(self, seeds):
        return _Seeds(tuple(seeds))

    def model_input(self, states, x, t, k):
        tau = torch.full((x.shape[0],), self.spacing.tau(t), dtype=torch.long)
        return UNetCall(x, tau, float(self.spacing.alpha_bar[t]))

    def advance(self, states, x, t, k, call, x0, eps, frac, land, z=None):
        ab = float(self.spacing.alpha_bar[land])
        return x0 if land == 0 else math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps


@pytest.fixture
def registered():
    sampling.SOLVERS.insert(0, DeterministicDDIM)
    try:
        yield
    finally:
        sampling.SOLVERS.remove(DeterministicDDIM)


def test_a_solver_of_ones_own_runs_under_the_driver(registered, tiny_model_dir):
    m = us.load_model(tiny_model_dir)
    K, seeds, labels = m.num_blocks, [0, 1], [2, 3]
    mine = us.Sampler(m, steps=8, method="my-ddim", guidance=2.0)
    ddim = us.Sampler(m, steps=8, method="ddim", guidance=2.0)
    assert torch.allclose(mine.sample(seeds, labels).x0, ddim.sample(seeds, labels).x0, atol=1e-5)
    plans = [us.Plan([us.DropBlocks(K - 1, 5, 2, "cache")]), us.Plan([us.ZeroSkips(1, 6, 3)])]
    for p in plans:
        base, cut = mine.compare(seeds, labels, p)
        assert torch.allclose(cut.x0, ddim.sample(seeds, labels, p).x0, atol=1e-5) and not torch.equal(cut.x0, base.x0)
    res = SweepEngine(mine, max_batch=2).run_chunk(seeds, labels, plans)
    for p, got in zip(plans, res.finals):
        assert torch.equal(got, mine.sample(seeds, labels, p).x0)  # shared prefixes, bitwise each plan alone
    assert mine.describe()["method"] == "my-ddim" and mine.settings()["method"] == "my-ddim"
    with pytest.raises(us.SamplerError, match="take fewer steps"):  # jumps = False: the walk is refused, as a scheduler's
        mine.sample(seeds, labels, us.Plan([us.SkipSteps(5, 2)]))
