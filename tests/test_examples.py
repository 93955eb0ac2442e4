"""The bring-your-own-U-Net example: parity with the module's forward, interventions, errors."""

import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import unetscope as us  # noqa: E402
from conftest import run_script  # noqa: E402
import unetscope.runner  # noqa: E402,F401
from own_unet import ResearchUNetUnits  # noqa: E402
from research_unet import ResearchUNet  # noqa: E402


def _net():
    torch.manual_seed(0)
    return ResearchUNet().eval()


def test_adapter_is_short():
    text = (ROOT / "examples" / "own_unet.py").read_text()
    adapter = text[text.index("class ResearchUNetUnits"):text.index('if __name__')]
    assert len([line for line in adapter.splitlines() if line.strip()]) <= 40


def test_parity_and_drop_equivalence():
    net = _net()
    units = ResearchUNetUnits(net)
    runner = us.runner.UNetRunner(units)
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([10, 900])
    with torch.no_grad():
        assert torch.allclose(runner(x, t).out, net(x, t), atol=1e-6)
        for nb in range(1, units.num_blocks + 1):  # zeroing D[nb-1]'s output by a hook = dropping nb blocks
            hk = net.ups[nb - 1].register_forward_hook(lambda m, i, o: torch.zeros_like(o))
            ref = net(x, t)
            hk.remove()
            assert torch.allclose(runner(x, t, drop_blocks=nb).out, ref, atol=1e-6)


def test_example_script_runs():
    code, out, err = run_script(ROOT / "examples" / "own_unet.py", cwd=ROOT / "examples")
    assert code == 0, err
    assert re.search(r"K=4, SSIM after dropping 2 blocks: \[0\.\d+, 0\.\d+\]", out)


def test_wrong_protocol_names_the_unit():
    units = ResearchUNetUnits(_net())
    units.num_blocks = 5  # one more unit than the module has
    model = us.wrap(units, sample_shape=(1, 32, 32))
    with pytest.raises(us.AdapterError, match=r"unit E\[4\] \(K=5\) failed: IndexError"):
        us.Sampler(model, steps=3).sample([0])
    with pytest.raises(us.ModelError, match="does not implement the UNetUnits protocol"):
        us.wrap(torch.nn.Conv2d(1, 1, 1), sample_shape=(1, 32, 32))


def test_example_adapter_runs_the_block_utility_sweep(tmp_path):
    from unetscope.experiments import run_experiment

    model = us.wrap(ResearchUNetUnits(_net()), beta_schedule="linear", num_train_timesteps=1000, sample_shape=(1, 32, 32))
    s = us.Sampler(model, steps=10)
    res = run_experiment("block-utility", model, s, [0, 1], None, tmp_path, {"t_step": 3}, progress=False)
    assert res["params"]["nbs"] == [1, 2, 3, 4] and res["stats"]["spent"] == res["stats"]["minimum"]  # small K: every nb
    assert set(res["findings"]["redundant_from"]) == {"1", "2", "3", "4"}
    assert all((tmp_path / f["file"]).exists() for f in res["figures"])
