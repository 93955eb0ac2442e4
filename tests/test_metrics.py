import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from unetscope import psnr, ssim
from unetscope.metrics import MetricError


def _pair(c, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(3, c, 32, 40, generator=g, dtype=torch.float64)
    b = (a + 0.15 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return a, b


@pytest.mark.parametrize("c", [1, 3])
def test_against_scikit_image(c):
    a, b = _pair(c, c)
    ours_s, ours_p = ssim(a, b), psnr(a, b)
    for i in range(a.shape[0]):
        x, y = a[i].numpy(), b[i].numpy()
        ref_s = structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, channel_axis=0)
        ref_p = peak_signal_noise_ratio(x, y, data_range=1.0)
        assert abs(float(ours_s[i]) - ref_s) < 1e-4
        assert abs(float(ours_p[i]) - ref_p) < 1e-4


def test_identical_and_errors():
    a, _ = _pair(1, 0)
    assert torch.allclose(ssim(a, a), torch.ones(3))
    assert torch.isinf(psnr(a, a)).all()
    with pytest.raises(MetricError, match="same shape"):
        ssim(a, a[:, :, :20])
    with pytest.raises(MetricError, match="at least 11x11"):
        ssim(a[..., :8, :8], a[..., :8, :8])
