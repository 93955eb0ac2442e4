"""The Fréchet distance (FID's formula) and the classifier's penultimate features it is computed on."""

import numpy as np
import pytest
import torch

from unetscope.frechet import FrechetError, frechet_distance, frechet_from_stats, gaussian_stats


def _feats(n, d, seed, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated features, a full covariance
    return rng.normal(size=(n, d)) @ mix * scale + shift


def test_a_set_with_itself_is_zero_also_when_fewer_samples_than_features():
    for n, d in ((300, 16), (40, 64), (20, 256)):
        for seed in range(5):
            x = _feats(n, d, seed, scale=7.0, shift=3.0)
            # exactly 0 (the Pareto benchmark's reference against itself), not a trace difference's rounding
            assert frechet_distance(x, x) == 0.0 and frechet_distance(x, x.copy()) == 0.0
            assert frechet_distance(torch.from_numpy(x).float(), x.astype(np.float32)) == 0.0
    # the closed form's rounding for a set against itself stays tiny and is never negative
    x = _feats(40, 64, 0)
    assert 0.0 <= frechet_from_stats(*gaussian_stats(x), *gaussian_stats(x)) < 1e-6


def test_diagonal_gaussians_match_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, -1.0, 0.0])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()  # 0.25+4+4 + 4+1+0 = 13.25
    assert frechet_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(13.25)


def test_one_dimensional_samples_match_the_hand_computation():
    x = np.array([[0.0], [2.0], [4.0]])  # mean 2, unbiased variance 4
    y = np.array([[1.0], [2.0]])  # mean 1.5, unbiased variance 0.5
    want = (2 - 1.5) ** 2 + (2 - np.sqrt(0.5)) ** 2
    assert frechet_distance(x, y) == pytest.approx(want, rel=1e-12)


def test_full_covariances_match_scipy_sqrtm_and_the_distance_is_symmetric_and_non_negative():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    x, y = _feats(500, 8, 1), _feats(400, 8, 2, scale=1.5, shift=0.3)
    (ma, ca), (mb, cb) = gaussian_stats(x), gaussian_stats(y)
    want = ((ma - mb) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(scipy_linalg.sqrtm(ca @ cb).real)
    d = frechet_distance(x, y)
    assert d == pytest.approx(want, rel=1e-8) and d > 0.5
    assert frechet_distance(y, x) == pytest.approx(d, rel=1e-10)
    assert all(frechet_distance(_feats(30, 5, s), _feats(30, 5, s + 100)) >= 0 for s in range(5))


@pytest.mark.parametrize("na, nb, d", [(3, 3, 1024), (40, 25, 64), (2, 9, 10), (63, 5, 64)])
def test_fewer_samples_than_features_give_the_covariance_formula(na, nb, d):
    """The samples' cross-product path (taken when both sets have fewer samples than features) equals
    the (D, D) covariances' formula."""
    x, y = _feats(na, d, 7), _feats(nb, d, 8, scale=1.3, shift=0.2)
    want = frechet_from_stats(*gaussian_stats(x), *gaussian_stats(y))
    # the covariance path's (D - N) eigenvalues that are zero in exact arithmetic come out at ~1e-14 and
    # add their square roots: it is the less exact of the two, by ~1e-8 of the distance
    assert frechet_distance(x, y) == pytest.approx(want, rel=1e-6) and want > 0
    assert frechet_distance(y, x) == pytest.approx(frechet_distance(x, y), rel=1e-10)


def test_an_isometric_embedding_into_more_features_keeps_the_distance():
    """Sets in k = 4 dimensions with more samples than features (the covariance path), and the same sets
    mapped into 256 features by an orthonormal map (fewer samples than features): the same distance."""
    xk, yk = _feats(30, 4, 9), _feats(20, 4, 10, scale=0.7, shift=0.5)
    q, _ = np.linalg.qr(np.random.default_rng(11).normal(size=(256, 4)))  # (256, 4), orthonormal columns
    assert frechet_distance(xk @ q.T, yk @ q.T) == pytest.approx(frechet_distance(xk, yk), rel=1e-10)


def test_a_shifted_copy_is_at_the_squared_shift():
    x = _feats(200, 10, 4)
    v = np.linspace(-1, 1, 10)
    assert frechet_distance(x, x + v) == pytest.approx((v ** 2).sum(), rel=1e-8)


def test_tensors_and_float32_are_taken_in_float64():
    x = _feats(100, 6, 5)
    assert frechet_distance(torch.tensor(x, dtype=torch.float32), x * 2) == pytest.approx(frechet_distance(x, x * 2), rel=1e-5)


@pytest.mark.parametrize("a, b, match", [
    (np.zeros(5), np.zeros((5, 2)), "feats_a must be a .samples, features. array"),
    (np.zeros((5, 2)), np.zeros((5, 3)), "different feature sizes: 2 and 3"),
    (np.zeros((1, 2)), np.zeros((5, 2)), "at least 2 samples"),
    (np.zeros((5, 2)), np.full((5, 2), np.nan), "NaN or inf"),
    (np.zeros((5, 0)), np.zeros((5, 0)), "no features"),
])
def test_bad_inputs_are_refused_with_a_typed_error(a, b, match):
    with pytest.raises(FrechetError, match=match):
        frechet_distance(a, b)
    with pytest.raises(FrechetError, match="different feature sizes"):
        frechet_from_stats(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_penultimate_features_are_what_the_classifier_head_reads():
    from unetscope.bundled.classifier import classify, load_classifier, penultimate_features

    clf = load_classifier()
    imgs = torch.rand(7, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    f = penultimate_features(clf, imgs, batch_size=3)
    assert f.shape == (7, 1024) and f.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(clf.head(f), clf(imgs), atol=1e-5)
        assert torch.equal(clf.head(f).argmax(1), classify(clf, imgs))
    assert penultimate_features(clf, imgs[:, 0]).shape == (7, 1024)  # (N, H, W) taken too
