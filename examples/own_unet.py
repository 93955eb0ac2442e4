"""Bring your own U-Net: the UNetUnits protocol for examples/research_unet.py (the adapter is the class)."""

import torch

import unetscope as us
from unetscope.adapters.base import Context
from research_unet import ResearchUNet, timestep_embedding


class ResearchUNetUnits:
    """E[0] = inp, E[1..3] = downs; M = mid; D[0..3] = ups (D[j] consumes the skip of E[3-j])."""

    def __init__(self, net):
        self.net, self.num_blocks = net, 1 + len(net.downs)

    def prepare(self, x, timesteps, cond):
        return Context(emb=self.net.time_mlp(timestep_embedding(timesteps, self.net.ch)))

    def encoder(self, i, h, ctx):
        return self.net.inp(h) if i == 0 else self.net.downs[i - 1](h, ctx.emb)

    def middle(self, h, ctx):
        return self.net.mid(h, ctx.emb)

    def decoder(self, j, h, skip, ctx):
        return self.net.ups[j](torch.cat([h, skip], dim=1), ctx.emb)

    def head(self, h, ctx):
        return self.net.out(h)


if __name__ == "__main__":
    torch.manual_seed(0)
    net = ResearchUNet().eval()
    model = us.wrap(ResearchUNetUnits(net), beta_schedule="linear", num_train_timesteps=1000, sample_shape=(1, 32, 32))
    base, cut = us.Sampler(model, steps=20).compare(range(2), plan=us.Plan([us.DropBlocks(nb=2, start=15, n=3)]))
    print(f"K={model.num_blocks}, SSIM after dropping 2 blocks: {us.ssim(base.images, cut.images).tolist()}")
