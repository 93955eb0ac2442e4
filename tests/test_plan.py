import json

import pytest

from unetscope import DropBlocks, Plan, PlanError, ReuseEncoder, SkipSteps, StopEarly, ZeroSkips
from unetscope.plan import StepAction


def test_json_round_trip():
    plan = Plan([SkipSteps(90, 5), ZeroSkips(2, 70, 5), DropBlocks(4, 70, 5, fill="cache"), StopEarly(18)])
    text = plan.to_json()
    assert Plan.from_json(text) == plan
    assert Plan.from_dict(json.loads(text)["interventions"]) == plan  # a bare list works too
    assert json.loads(text)["interventions"][2] == {"type": "DropBlocks", "nb": 4, "start": 70, "n": 5, "fill": "cache"}


def test_frozen():
    d = DropBlocks(2, 70, 5)
    with pytest.raises(Exception):
        d.nb = 3


@pytest.mark.parametrize("make, field", [
    (lambda: SkipSteps(10, 10), "SkipSteps.n"),       # would land below step 0
    (lambda: SkipSteps(1, 1), "SkipSteps.start"),
    (lambda: ZeroSkips(0, 10), "ZeroSkips.ns"),
    (lambda: DropBlocks(2, 5, 6), "DropBlocks.n"),
    (lambda: DropBlocks(2, 5, fill="noise"), "DropBlocks.fill"),
    (lambda: DropBlocks(2.5, 5), "DropBlocks.nb"),
    (lambda: StopEarly(0), "StopEarly.at"),
])
def test_construction_errors_name_the_field(make, field):
    with pytest.raises(PlanError, match=field.replace(".", r"\.")):
        make()


def test_ranges_checked_against_model_and_sampler():
    with pytest.raises(PlanError, match=r"DropBlocks\.nb must be in 1\.\.12"):
        Plan([DropBlocks(13, 50)]).check(100, 12)
    with pytest.raises(PlanError, match=r"ZeroSkips\.ns must be in 1\.\.4"):
        Plan([ZeroSkips(5, 50)]).check(100, 4)
    with pytest.raises(PlanError, match=r"start must be in 1\.\.100"):
        Plan([DropBlocks(2, 101)]).check(100, 12)
    with pytest.raises(PlanError, match=r"StopEarly\.at must be in 1\.\.20"):
        Plan([StopEarly(21)]).check(20, 12)
    Plan([DropBlocks(12, 100, 100)]).check(100, 12)


@pytest.mark.parametrize("items", [
    [DropBlocks(2, 70, 5), DropBlocks(4, 68, 2)],          # two DropBlocks on steps 68, 67
    [SkipSteps(70, 5), DropBlocks(2, 66, 1)],              # 66 is removed by the jump
    [SkipSteps(70, 5), SkipSteps(67, 1)],
    [DropBlocks(2, 20, 5), StopEarly(18)],                 # the cut reaches 16 < 18
    [SkipSteps(20, 3), StopEarly(18)],                     # stop on a removed step
    [StopEarly(18), StopEarly(10)],
])
def test_contradictions_rejected(items):
    with pytest.raises(PlanError):
        Plan(items)


def test_compatible_interventions_combine():
    plan = Plan([SkipSteps(70, 5), DropBlocks(2, 70, 1), ZeroSkips(1, 64, 3), DropBlocks(4, 64, 2), StopEarly(18)])
    acts = plan.actions()
    assert acts[70] == StepAction(drop_blocks=2, jump=5)
    assert acts[64] == StepAction(zero_skips=1, drop_blocks=4) and acts[62] == StepAction(zero_skips=1)
    assert 69 not in acts and acts[18].stop
    assert plan.first_step() == 70 and plan.stop_at == 18


def test_bad_json_messages():
    with pytest.raises(PlanError, match="not valid JSON"):
        Plan.from_json("{nope")
    with pytest.raises(PlanError, match="type must be one of"):
        Plan.from_json('[{"type": "DropSkips", "nb": 1, "start": 3}]')
    with pytest.raises(PlanError, match="unknown field 'k'"):
        Plan.from_json('[{"type": "DropBlocks", "k": 1, "start": 3}]')
    with pytest.raises(PlanError, match="DropBlocks needs nb"):
        Plan.from_json('[{"type": "DropBlocks", "start": 3}]')


def test_reuse_encoder_round_trips_and_folds_into_the_step_action():
    plan = Plan([ReuseEncoder(70, 3), ZeroSkips(1, 69, 1), StopEarly(10)])
    assert Plan.from_json(plan.to_json()) == plan
    assert json.loads(plan.to_json())["interventions"][0] == {"type": "ReuseEncoder", "start": 70, "n": 3}
    acts = plan.actions()
    assert acts[70] == StepAction(reuse_encoder=True) and acts[69] == StepAction(reuse_encoder=True, zero_skips=1)
    assert 67 not in acts
    with pytest.raises(PlanError, match=r"ReuseEncoder\.n must be in 1\.\.3"):
        ReuseEncoder(3, 4)
    with pytest.raises(PlanError, match="both set ReuseEncoder at step 69"):
        Plan([ReuseEncoder(70, 3), ReuseEncoder(69, 1)])


def test_reuse_encoder_needs_an_earlier_full_evaluation():
    with pytest.raises(PlanError, match=r"ReuseEncoder\(start=100, n=1\) at step 100: no earlier step computes E\[0\]"):
        Plan([ReuseEncoder(100)]).check(100, 4)
    # the step before dropped the bottom 2 blocks: E[2], E[3] and M were not computed since the first step...
    with pytest.raises(PlanError, match=r"no earlier step computes E\[2\], E\[3\], M"):
        Plan([DropBlocks(2, 100, 1), ReuseEncoder(99)]).check(100, 4)
    # ...but an earlier full step computed them, so they are cached from there (per site: the last step that ran it)
    Plan([DropBlocks(2, 99, 1), ReuseEncoder(98)]).check(100, 4)
    # a jump passes over steps: what the landing step reads was computed before the jump
    Plan([SkipSteps(90, 5), ReuseEncoder(84, 2)]).check(100, 4)


def test_walk_is_the_plans_evaluations_with_their_landings():
    plan = Plan([SkipSteps(9, 2), DropBlocks(1, 6, 1), StopEarly(3)])
    walk = list(plan.walk(10))
    assert [(s.t, s.land) for s in walk] == [(10, 9), (9, 6), (6, 5), (5, 4), (4, 3), (3, 2)]
    assert walk[1].action.jump == 2 and walk[2].action.drop_blocks == 1 and walk[-1].action.stop
    assert [s.t for s in Plan().walk(5, start=3)] == [3, 2, 1]


def test_a_new_intervention_registers_itself():
    """Adding an intervention is one class: plans, JSON and the actions know it with no list kept by hand."""
    from dataclasses import dataclass, replace
    from typing import ClassVar

    from unetscope.plan import INTERVENTIONS, Intervention

    @dataclass(frozen=True)
    class ZeroTopSkipOnce(Intervention):
        start: int
        kind: ClassVar[str] = "zero_top_skip_once"

        def evaluated_steps(self):
            return range(self.start, self.start - 1, -1)

        def apply(self, action, t):
            return replace(action, zero_skips=1)

    try:
        plan = Plan.from_json('[{"type": "ZeroTopSkipOnce", "start": 5}, {"type": "StopEarly", "at": 2}]')
        assert plan.actions()[5] == StepAction(zero_skips=1)
        assert Plan.from_json(plan.to_json()) == plan
    finally:
        del INTERVENTIONS["ZeroTopSkipOnce"]
    with pytest.raises(PlanError, match="type must be one of"):
        Plan.from_json('[{"type": "ZeroTopSkipOnce", "start": 5}]')
