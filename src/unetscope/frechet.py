"""The Fréchet distance between two sets of features (the distance FID computes on Inception
features, Heusel et al. 2017): each set is fitted by a Gaussian and

    d^2 = ||mu_a - mu_b||^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^{1/2}).

unetscope applies it to the bundled MNIST classifier's penultimate features (no Inception weights can
be downloaded here): a distribution-level quality next to per-sample SSIM. Its limits: a small
classifier's features, and few samples make a biased estimate (the trace term grows as N shrinks), so
compare values only at one sample size, never with published FIDs.
"""

from __future__ import annotations

import numpy as np

from .errors import UnetscopeError

__all__ = ["FrechetError", "frechet_distance", "gaussian_stats", "frechet_from_stats"]


class FrechetError(UnetscopeError, ValueError):
    """Feature sets the distance cannot be computed on."""


def _as_features(x, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != 2:
        raise FrechetError(f"{name} must be a (samples, features) array, got shape {a.shape}")
    if a.shape[0] < 2:
        raise FrechetError(f"{name} needs at least 2 samples to estimate a covariance, got {a.shape[0]}")
    if a.shape[1] < 1:
        raise FrechetError(f"{name} has no features")
    if not np.isfinite(a).all():
        raise FrechetError(f"{name} holds NaN or inf")
    return a


def gaussian_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D)) of features (N, D) in float64; the covariance is unbiased (N - 1)."""
    a = _as_features(feats, "feats")
    return a.mean(0), np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1])


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    """The distance between two Gaussians. ``tr((C_a C_b)^{1/2})`` is the sum of the square roots of
    the eigenvalues of the symmetric ``C_a^{1/2} C_b C_a^{1/2}`` (the same spectrum), so two
    symmetric eigendecompositions replace a general matrix square root (no complex parts, stable
    for the rank-deficient covariances of fewer samples than features)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != mu_a.shape * 2:
        raise FrechetError(f"the two sets have different feature sizes: means {mu_a.shape} and {mu_b.shape}, "
                           f"covariances {cov_a.shape} and {cov_b.shape}")
    ra = _psd_sqrt(cov_a)
    m = ra @ cov_b @ ra
    w = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(w, 0, None)).sum())
    d = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)
    return max(d, 0.0)  # rounding can leave -1e-12 for identical sets


def _frechet_few_samples(a: np.ndarray, b: np.ndarray) -> float:
    """The distance from the samples themselves when there are fewer than features. With the centred,
    scaled samples ``A = (a - mu_a) / sqrt(N_a - 1)`` (so ``C_a = A^T A``) and likewise ``B``, the nonzero
    eigenvalues of ``C_a C_b`` are those of ``(A B^T)(A B^T)^T``: ``tr((C_a C_b)^{1/2})`` is the sum of
    the singular values of the (N_a, N_b) matrix ``A B^T``, and ``tr(C_a) = ||A||_F^2``. The same number
    as ``frechet_from_stats`` in O(N_a N_b D), with no (D, D) matrix."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = (a - mu_a) / np.sqrt(len(a) - 1), (b - mu_b) / np.sqrt(len(b) - 1)
    tr_sqrt = float(np.linalg.svd(ca @ cb.T, compute_uv=False).sum())
    d = float(((mu_a - mu_b) ** 2).sum() + (ca ** 2).sum() + (cb ** 2).sum() - 2 * tr_sqrt)
    return max(d, 0.0)


def frechet_distance(feats_a, feats_b) -> float:
    """The Fréchet distance between features ``feats_a`` (N_a, D) and ``feats_b`` (N_b, D)
    (numpy arrays or tensors; computed in float64). With fewer samples than features (200 samples of
    the classifier's 1,024 features) it is computed from the samples' cross-products, not from two
    (D, D) eigendecompositions: the same value, in a fraction of the time."""
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise FrechetError(f"the two sets have different feature sizes: {a.shape[1]} and {b.shape[1]}")
    if a.shape == b.shape and np.array_equal(a, b):
        return 0.0  # a set against itself: exactly 0, not the rounding of a trace difference (5e-14)
    if max(len(a), len(b)) < a.shape[1]:
        return _frechet_few_samples(a, b)
    return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b))
