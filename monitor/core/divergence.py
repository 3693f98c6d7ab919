"""Information-theoretic quantities on probability arrays, in nats. Pure numpy, no I/O.

Every function works on the last axis, so one call handles many windows at once:
`a` of shape (K,) or (..., K) against `b` of shape (..., K).
Terms with a_i = 0 contribute 0 (the limit of x ln x), so zeros in A are fine;
B is floored at epsilon and renormalised by `floor` before it reaches a logarithm.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def normalize_counts(counts: npt.ArrayLike, smoothing: float = 0.0) -> Array:
    """Additive (Laplace/Lidstone) smoothing: (c_i + alpha) / (sum c + K alpha).

    Rows with no mass and no smoothing come out NaN: there is no distribution yet.
    """
    c = np.asarray(counts, dtype=np.float64) + smoothing
    total = c.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return c / total


def floor(b: npt.ArrayLike, epsilon: float) -> Array:
    """Clip every entry to at least epsilon and renormalise, so ln(b) is finite."""
    clipped = np.maximum(np.asarray(b, dtype=np.float64), epsilon)
    return clipped / clipped.sum(axis=-1, keepdims=True)


def _xlogy(x: Array, y: Array) -> Array:
    """x * ln(y), with 0 where x == 0 (whatever y is); NaN (no distribution) stays NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


def entropy(a: npt.ArrayLike) -> Array:
    """S(A) = -sum_i A_i ln A_i."""
    a = np.asarray(a, dtype=np.float64)
    return -_xlogy(a, a).sum(axis=-1)


def cross_entropy(a: npt.ArrayLike, b: npt.ArrayLike) -> Array:
    """H(A, B) = -sum_i A_i ln B_i; B must already be floored."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return -_xlogy(a, b).sum(axis=-1)


def kl(a: npt.ArrayLike, b: npt.ArrayLike) -> Array:
    """KL(A || B) = sum_i A_i ln(A_i / B_i); B must already be floored."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(a == 0, 1.0, a / np.where(a == 0, 1.0, b))
    # Gibbs: KL >= 0; rounding can leave -1e-16 for equal inputs, which reads oddly.
    return np.maximum(_xlogy(a, ratio).sum(axis=-1), 0.0)


def js(a: npt.ArrayLike, b: npt.ArrayLike) -> Array:
    """Jensen-Shannon divergence, 0.5 KL(A||M) + 0.5 KL(B||M), M = (A+B)/2; <= ln 2."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    m = 0.5 * (a + b)
    return 0.5 * kl(a, m) + 0.5 * kl(b, m)
