"""The unit view of diffusers U-Nets: parity with the model's forward and intervention equivalence
with hooks placed on the model's own modules (an independent implementation of the same rule)."""

import pytest
import torch

from conftest import tiny_cond_unet, tiny_unet
from unetscope.adapters.base import AdapterError
from unetscope.adapters.diffusers_unet import DiffusersUNetUnits
from unetscope.plan import StepAction
from unetscope.runner import UNetRunner


def _inputs(unet, n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = unet.config
    size = c.sample_size
    x = torch.randn(n, c.in_channels, size, size, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    cond = {}
    if getattr(c, "num_class_embeds", None):
        cond["class_labels"] = torch.randint(0, c.num_class_embeds, (n,), generator=g)
    if getattr(c, "cross_attention_dim", None):
        cond["encoder_hidden_states"] = torch.randn(n, 7, c.cross_attention_dim, generator=g)
    return x, t, cond


def _unit_modules(unet):
    """(encoder last modules, decoder (first resnet, last module)) built from the block structure."""
    enc = [unet.conv_in]
    for b in unet.down_blocks:
        attns = getattr(b, "attentions", None) or [None] * len(b.resnets)
        enc += [a if a is not None else r for r, a in zip(b.resnets, attns)]
        enc += list(b.downsamplers or [])
    dec = []
    for b in unet.up_blocks:
        attns = getattr(b, "attentions", None) or [None] * len(b.resnets)
        for k, (r, a) in enumerate(zip(b.resnets, attns)):
            last = a if a is not None else r
            if k == len(b.resnets) - 1 and b.upsamplers:
                last = b.upsamplers[-1]
            dec.append((r, last))
    return enc, dec


CONFIGS = {
    "plain-1": lambda: tiny_unet(attention=False, layers=1),
    "attn-2": lambda: tiny_unet(attention=True, layers=2),
    "class-attn-1": lambda: tiny_unet(attention=True, layers=1, classes=11),
    "resnet-updown": lambda: tiny_unet(resnet_updown=True, layers=1),
    "cross-1": lambda: tiny_cond_unet(layers=1),
    "cross-class-2": lambda: tiny_cond_unet(layers=2, class_embed=True),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_empty_plan_matches_forward(name):
    unet = CONFIGS[name]()
    units = DiffusersUNetUnits(unet)
    x, t, cond = _inputs(unet)
    with torch.no_grad():
        ref = unet(x, t, **cond).sample
    out = UNetRunner(units)(x, t, cond).out
    assert torch.allclose(out, ref, atol=1e-6), (out - ref).abs().max()
    enc, dec = _unit_modules(unet)
    assert units.num_blocks == len(enc) == len(dec)


@pytest.mark.parametrize("name", ["attn-2", "class-attn-1", "cross-class-2"])
def test_drop_blocks_equals_zeroing_output_by_hook(name):
    unet = CONFIGS[name]()
    runner = UNetRunner(DiffusersUNetUnits(unet))
    x, t, cond = _inputs(unet)
    _, dec = _unit_modules(unet)
    K = runner.num_blocks
    for nb in range(1, K + 1):
        h = dec[nb - 1][1].register_forward_hook(lambda m, i, o: torch.zeros_like(o[0] if isinstance(o, tuple) else o)
                                                 if not isinstance(o, tuple) else (torch.zeros_like(o[0]),) + o[1:])
        try:
            with torch.no_grad():
                ref = unet(x, t, **cond).sample
        finally:
            h.remove()
        out = runner(x, t, cond, drop_blocks=nb).out
        assert torch.allclose(out, ref, atol=1e-6), (nb, (out - ref).abs().max())


@pytest.mark.parametrize("name", ["attn-2", "cross-1"])
def test_zero_skips_equals_zeroing_skips_by_hook(name):
    unet = CONFIGS[name]()
    runner = UNetRunner(DiffusersUNetUnits(unet))
    x, t, cond = _inputs(unet)
    enc, dec = _unit_modules(unet)
    K = runner.num_blocks
    # channels of each skip, read off the encoder units' outputs
    chans, hooks = [], [m.register_forward_hook(lambda m, i, o: chans.append(
        (o[0] if isinstance(o, tuple) else o).shape[1])) for m in enc]
    with torch.no_grad():
        unet(x, t, **cond)
    for hk in hooks:
        hk.remove()
    for ns in range(1, K + 1):
        hooks = []
        for k in range(1, ns + 1):  # skip k from the top: E[k-1] -> D[K-k]; zero its channels in the concat
            c = chans[k - 1]

            def pre(m, args, kwargs, c=c):
                hs = args[0].clone()
                hs[:, -c:] = 0
                return (hs,) + args[1:], kwargs
            hooks.append(dec[K - k][0].register_forward_pre_hook(pre, with_kwargs=True))
        try:
            with torch.no_grad():
                ref = unet(x, t, **cond).sample
        finally:
            for hk in hooks:
                hk.remove()
        out = runner(x, t, cond, zero_skips=ns).out
        assert torch.allclose(out, ref, atol=1e-6), (ns, (out - ref).abs().max())


def test_dropped_units_are_not_called():
    unet = tiny_unet(attention=True, layers=2, classes=11)
    runner = UNetRunner(DiffusersUNetUnits(unet))
    x, t, cond = _inputs(unet)
    runner(x, t, cond)  # learns the decoder output shapes
    enc, dec = _unit_modules(unet)
    K = runner.num_blocks
    calls = {}
    mods = {f"E{i}": m for i, m in enumerate(enc)} | {f"D{j}": m for j, (_, m) in enumerate(dec)}
    mods["M"] = unet.mid_block
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: calls.__setitem__(k, calls.get(k, 0) + 1)) for k, m in mods.items()]
    for nb in (1, K // 2, K):
        calls.clear()
        runner(x, t, cond, drop_blocks=nb)
        ran = set(calls)
        assert ran == {f"E{i}" for i in range(K - nb)} | {f"D{j}" for j in range(nb, K)}, (nb, sorted(ran))
    for hk in hooks:
        hk.remove()


def test_cache_fill_is_used_and_shape_checked():
    unet = tiny_unet(attention=True, layers=1)
    runner = UNetRunner(DiffusersUNetUnits(unet))
    x, t, cond = _inputs(unet)
    full = runner(x, t, cond, capture={"D[1]"})
    assert set(full.captured) == {"D[1]"}
    # feeding D[1]'s own output back as the fill reproduces the full evaluation exactly
    again = runner(x, t, cond, StepAction(drop_blocks=2, fill="cache"), fill=full.captured)
    assert torch.equal(again.out, full.out)
    with pytest.raises(AdapterError, match=r"fill for D\[1\] must have shape"):
        runner(x, t, cond, StepAction(drop_blocks=2, fill="cache"), fill={"D[1]": full.captured["D[1]"][:1]})
    with pytest.raises(AdapterError, match=r"reads the cached output of D\[1\]"):
        runner(x, t, cond, StepAction(drop_blocks=2, fill="cache"))


@pytest.mark.parametrize("name", ["attn-2", "class-attn-1", "cross-1", "resnet-updown"])
def test_reuse_encoder_skips_the_encoder_and_feeds_the_cached_skips(name):
    """ReuseEncoder: E[..] and M are never called; every D[j] receives exactly the skip (and D[0]
    the middle's output) cached from the full evaluation, checked by hooks on the model's modules."""
    unet = CONFIGS[name]()
    runner = UNetRunner(DiffusersUNetUnits(unet))
    K = runner.num_blocks
    x, t, cond = _inputs(unet)
    sites = [f"E[{i}]" for i in range(K)] + ["M"]
    full = runner(x, t, cond, capture=sites)
    assert set(full.captured) == set(sites)
    enc, dec = _unit_modules(unet)
    calls, dec_in = {}, {}
    mods = {f"E{i}": m for i, m in enumerate(enc)} | {f"D{j}": r for j, (r, _) in enumerate(dec)} | {"M": unet.mid_block}
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: calls.__setitem__(k, calls.get(k, 0) + 1)) for k, m in mods.items()]
    hooks += [r.register_forward_pre_hook(lambda m, args, j=j: dec_in.__setitem__(j, args[0].clone()))
              for j, (r, _) in enumerate(dec)]
    try:
        # the next step: other timesteps and inputs, the encoder's outputs read from the cache
        x2, t2 = torch.randn_like(x), (t + 7) % 1000
        out = runner(x2, t2, cond, StepAction(reuse_encoder=True), fill=full.captured)
    finally:
        for hk in hooks:
            hk.remove()
    assert set(calls) == {f"D{j}" for j in range(K)}, sorted(calls)
    assert out.units_run == K
    # D[0]'s resnet reads cat([M's cached output, skip K]); each later D[j] reads the cached skip K-j
    mid = full.captured["M"]
    assert torch.equal(dec_in[0][:, :mid.shape[1]], mid)
    for j in range(K):
        skip = full.captured[f"E[{K - 1 - j}]"]
        assert torch.equal(dec_in[j][:, -skip.shape[1]:], skip), j
    # with the same inputs, reusing a step's own encoder outputs is the full evaluation
    same = runner(x, t, cond, StepAction(reuse_encoder=True), fill=full.captured)
    assert torch.equal(same.out, full.out)


def test_unsupported_blocks_refused():
    from diffusers import UNet2DModel

    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 32),
                       down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"),
                       up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"), attention_head_dim=8)
    with pytest.raises(AdapterError, match="SkipDownBlock2D is not supported"):
        DiffusersUNetUnits(unet)
