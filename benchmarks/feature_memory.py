"""The memory feature-change holds for Stable Diffusion 1.5 at 512x512: the numbers in every unit's
output for one latent row, counted on the real architecture built on PyTorch's meta device (no
weights, no compute), and the bytes of two steps (what ``FeatureTracker`` keeps) of one guided
sample (two rows) in float16 and float32.

    python benchmarks/feature_memory.py
"""

import torch


def main() -> int:
    from diffusers import UNet2DConditionModel

    from unetscope.runner import UNetRunner
    from unetscope.adapters.diffusers_unet import DiffusersUNetUnits
    from unetscope.features import unit_sites

    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # SD 1.5's configuration
    r = UNetRunner(DiffusersUNetUnits(unet))
    K = r.num_blocks
    x = torch.zeros(2, 4, 64, 64, device="meta")
    t = torch.zeros(2, dtype=torch.long, device="meta")
    out = r(x, t, {"encoder_hidden_states": torch.zeros(2, 77, 768, device="meta")}, capture=unit_sites(K))
    n = sum(v[0].numel() for v in out.captured.values())
    print(f"K = {K}; unit outputs of one row: {n:,} numbers; two steps of a guided sample (two rows): "
          f"{2 * 2 * n * 2 / 1e6:.0f} MB in float16, {2 * 2 * n * 4 / 1e6:.0f} MB in float32")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
