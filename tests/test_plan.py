import json

import pytest

from unetscope import DropBlocks, Plan, PlanError, SkipSteps, StopEarly, ZeroSkips
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
