"""U-Nets shaped the way research code writes them (tests/research_shapes.py and the second bundled
model's MnistUNet): each adapter matches its module's own forward, and DropBlocks / ZeroSkips equal
the same effect made by hooks on the module's own forward (an independent implementation)."""

import sys
from pathlib import Path

import pytest
import torch

import unetscope as us
from research_shapes import (IntColumnUNet, IntColumnUNetUnits, PadUNet, PadUNetUnits, UnitTimeUNet,
                             UnitTimeUNetUnits)
from unetscope.adapters.base import AdapterError
from unetscope.runner import UNetRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from mnist_unet import MnistUNet, MnistUNetUnits  # noqa: E402


def _zero_out(o):
    return torch.zeros_like(o)


# each case: the module, its units, inputs, how its own forward reads the timesteps, the module whose
# output is D[j]'s (zeroed by a hook = DropBlocks(j + 1)), and the decoder module whose input holds skip
# k from the top with where its channels sit in the concat (zeroed by a pre-hook = ZeroSkips(k))
def _pad():
    net = PadUNet().eval()
    emb = {}
    net.temb.register_forward_hook(lambda m, i, o: emb.__setitem__("e", o))

    def after_cat(j):  # the skip's channels of dec[j]'s input hold the embedding added after the concat
        return net.cat_emb[j](emb["e"])[:, :, None, None]

    return net, PadUNetUnits(net), (1, 28, 28), lambda t: t, lambda j: net.dec[j], lambda j: (net.dec[j], "last", after_cat)


def _unit_time():
    net = UnitTimeUNet().eval()
    return net, UnitTimeUNetUnits(net), (1, 16, 16), lambda t: t.float().view(-1, 1) / 999, \
        lambda j: net.dec[j], lambda j: (net.dec[j], "last", None)


def _int_column():
    net = IntColumnUNet().eval()
    return net, IntColumnUNetUnits(net), (1, 16, 16), lambda t: t.view(-1, 1), lambda j: net.dec[j], \
        lambda j: (net.dec[j], "first", None)


def _mnist():
    net = MnistUNet().eval()

    def d_out(j):  # D[1] and D[3] end with the upsampling that the module runs before the next concat
        return net.ups[str(j + 1)] if str(j + 1) in net.ups else net.dec[j]

    return net, MnistUNetUnits(net), (1, 28, 28), lambda t: t, d_out, lambda j: (net.dec[j], "first", None)


CASES = {"pad-odd-sizes-h-skip-emb-after-cat": _pad, "timesteps-float-01-column": _unit_time,
         "timesteps-int-column-conv-in": _int_column, "mnist-unet-skip-h-strided": _mnist}


@pytest.mark.parametrize("name", list(CASES))
def test_units_match_forward_and_interventions_match_hooks(name):
    torch.manual_seed(0)
    net, units, shape, t_of, d_out, consumer = CASES[name]()
    runner = UNetRunner(units)
    K = units.num_blocks
    x, t = torch.randn(3, *shape), torch.tensor([3, 500, 998])
    with torch.no_grad():
        ref = net(x, t_of(t))
        assert (runner(x, t).out - ref).abs().max() <= 1e-6
        for nb in range(1, K + 1):  # zeroing D[nb-1]'s output by a hook = dropping nb blocks (fill zeros)
            hk = d_out(nb - 1).register_forward_hook(lambda m, i, o: _zero_out(o))
            want = net(x, t_of(t))
            hk.remove()
            assert (runner(x, t, drop_blocks=nb).out - want).abs().max() <= 1e-6, nb
        full = runner(x, t, capture=[f"E[{i}]" for i in range(K)])
        skip_ch = {k: full.captured[f"E[{k - 1}]"].shape[1] for k in range(1, K + 1)}
        for ns in range(1, K + 1):  # zeroing the skip channels of the concats that read skips 1..ns
            hooks = []
            for k in range(1, ns + 1):
                j = K - k
                mod, where, added = consumer(j)

                def pre(m, args, where=where, c=skip_ch[k], added=added, j=j):
                    z = args[0].clone()
                    sl = slice(z.shape[1] - c, None) if where == "last" else slice(0, c)
                    z[:, sl] = 0 if added is None else added(j).expand_as(z)[:, sl]
                    return (z, *args[1:])
                hooks.append(mod.register_forward_pre_hook(pre))
            want = net(x, t_of(t))
            for hk in hooks:
                hk.remove()
            assert (runner(x, t, zero_skips=ns).out - want).abs().max() <= 1e-6, ns


def test_time_embedding_after_the_concat_is_not_a_skip():
    """In PadUNet the concat gets the time embedding added: zeroing a skip zeroes its channels before
    the addition, so the embedding still reaches them (the hook above zeroes the block's input after it)."""
    net = PadUNet().eval()
    runner = UNetRunner(PadUNetUnits(net))
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([10, 700])
    assert not torch.equal(runner(x, t, zero_skips=1).out, runner(x, t).out)


def test_a_wrong_num_blocks_is_reported_as_k():
    for K in (3, 5):
        units = MnistUNetUnits(MnistUNet().eval())
        units.num_blocks = K
        model = us.wrap(units, sample_shape=(1, 28, 28))
        with pytest.raises(AdapterError, match=rf"K={K}.*num_blocks|num_blocks.*K={K}|\(K={K}\)"):
            us.Sampler(model, steps=2).sample([0])


def test_weights_from_research_checkpoints(tmp_path):
    """A checkpoint saved by research code: nested under "ema", DataParallel's "module." prefix, read
    weights-only on the CPU; a wrong file is one typed error."""
    from unetscope.adapters.weights import load_weights

    src = IntColumnUNet().eval()
    torch.save({"ema": {f"module.{k}": v for k, v in src.state_dict().items()}, "step": 7}, tmp_path / "ckpt.pt")
    torch.manual_seed(1)
    dst = load_weights(IntColumnUNet().eval(), tmp_path / "ckpt.pt", key="ema")
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    with pytest.raises(AdapterError, match="has no 'model'"):
        load_weights(IntColumnUNet(), tmp_path / "ckpt.pt", key="model")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AdapterError, match="cannot read weights"):
        load_weights(IntColumnUNet(), tmp_path / "bad.pt")
    with pytest.raises(AdapterError, match="do not fit"):
        load_weights(IntColumnUNet(ch=16), tmp_path / "ckpt.pt", key="ema")
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(AdapterError, match="cannot read weights"):  # weights-only: no code runs
        load_weights(IntColumnUNet(), tmp_path / "evil.pt")
