"""p-values for the alerting statistics, from the sums a window keeps. Pure numpy/math.

Every p-value here is honest: with no drift, P(p < alpha) <= alpha whatever the window
size, class count or skew, because each is either the likelihood-ratio test where
DESIGN.md fixes it, or a tail *bound* rather than an approximation:

- `label_shift_pvalue` with a static prior and every expected count >= 5: the G-test
  (Sokal & Rohlf, Biometry, 3rd ed., ch. 17), as DESIGN.md fixes it. Everywhere else
  (smaller expected counts, or a reference estimated from labels) one test per class,
  combined by Bonferroni (min p times the number of classes), which holds under any
  dependence between the classes.
- The per-class tests bound the tail of a sum of bounded values with the better of two
  exponential-moment bounds: Hoeffding's (1963, Theorem 1: exp(-n KL(mu + t/n || mu)) for
  values in [0, 1]; for counts it is the Chernoff bound of the binomial) and Bennett's
  (1962: exp(-(v/b^2) h(bt/v)), h(u) = (1+u) ln(1+u) - u, v the variance, b the largest
  step above the mean). The minimum of two valid bounds is a valid bound. Bennett keeps
  the power of a z-test when the variance is small (confident models); Hoeffding's is
  tight for rare classes, where a normal tail is far too thin (a class seen 0.1 times
  per window on average shows up twice 0.5 % of the time, not 1e-9).
- Window against reference: under no drift the window's values and the rest of the
  reference's are exchangeable, so given the pooled values the window is a random
  subset, and Hoeffding (1963, Theorem 4) carries every such bound over to sampling
  without replacement with the pooled mean and variance. Either group may serve as the
  sample (the window's excess is the rest's deficit), and the smaller bound is kept.
- Calibration: under "labels follow the window's own probabilities" O_k - E_k is a sum
  of independent terms 1[y = k] - p_k, mean 0, variance sum p_k (1 - p_k), each step at
  most 1; the Poisson-binomial's moment function is below the binomial's of the same
  mean (Hoeffding 1963, section 4), so both bounds apply.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Values = Array | float  # one value, or one per class

G_TEST_MIN_EXPECTED = 5.0  # DESIGN.md: the G-test where every expected count is >= 5
_TINY = 1e-9  # excesses below this (times the count) are rounding, not evidence


def gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) = Gamma(a, x) / Gamma(a), a > 0: a series
    below x = a + 1, a continued fraction (modified Lentz) above (Numerical Recipes,
    2nd ed., section 6.2); relative error ~1e-14."""
    if x <= 0.0:
        return 1.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(100_000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-17:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-17:
            break
    return math.exp(log_prefix) * h


def chi2_sf(x: float, df: int) -> float:
    """P(chi^2_df > x)."""
    return gamma_q(df / 2.0, x / 2.0)


def g_test(observed: Array, expected: Array) -> float:
    """The G-test of observed counts against expected ones (same total), df = cells - 1:
    scipy.stats.power_divergence(observed, expected, lambda_="log-likelihood")."""
    if len(observed) < 2:
        return 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(observed > 0, observed * np.log(observed / expected), 0.0)
    return chi2_sf(2.0 * float(terms.sum()), len(observed) - 1)


def _kl_bernoulli(a: Array, p: Array) -> Array:
    """KL(a || p) between Bernoulli distributions, a and p in [0, 1]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(a > 0, a * np.log(a / p), 0.0)
        down = np.where(a < 1, (1 - a) * np.log((1 - a) / (1 - p)), 0.0)
    return up + down


def excess_bound(n: Values, mean: Values, variance: Values, t: Values, step: Values) -> Array:
    """Bound on P(S - n mean >= t), S a sum of n independent values in [0, 1] with mean
    `mean` (for values of different means: their average) and total variance at most
    n * `variance`, each at most `step` above its own mean: the smaller of Hoeffding's
    and Bennett's bounds (see the module docstring). 1 where t <= 0 (rounding aside)."""
    n, mean, variance, t, step = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64)
                                                       for x in (n, mean, variance, t, step)))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        target = mean + t / n
        # Above 1 the sum cannot reach: probability 0 (beyond rounding of mean + t/n).
        hoeffding = np.where(target > 1.0 + 1e-12, 0.0,
                             np.exp(-n * _kl_bernoulli(np.minimum(target, 1.0), mean)))
        v = n * variance
        u = step * t / v
        bennett_exponent = v / (step * step) * ((1.0 + u) * np.log1p(u) - u)
        bennett = np.where((v > 0) & (step > 0), np.exp(-bennett_exponent), 0.0)
    bound = np.minimum(np.nan_to_num(hoeffding, nan=1.0), np.nan_to_num(bennett, nan=1.0))
    return np.where(t <= _TINY * np.maximum(n, 1.0), 1.0, np.minimum(bound, 1.0))


def _pooled(n1: Values, s1: Values, q1: Values, n2: Values, s2: Values, q2: Values,
            ) -> tuple[Array, Array, Array]:
    """Pooled mean and variance of values in [0, 1] (from counts, sums and sums of
    squares) and group 1's excess over its share, s1 - n1 * mean."""
    n = n1 + n2
    mean = np.clip((s1 + s2) / n, 0.0, 1.0)
    variance = np.clip((q1 + q2) / n - mean * mean, 0.0, mean * (1.0 - mean))
    return mean, variance, s1 - n1 * mean


def _subset_excess(n1: Values, n2: Values, mean: Values, variance: Values, t: Values) -> Array:
    """Bound on P(S1 - n1 * mean >= t) for a random n1-subset of a pool of n1 + n2 values
    in [0, 1] with this mean and variance: bounded as group 1's excess, or as group 2's
    deficit (values mirrored, x -> 1 - x), whichever is smaller."""
    mean = np.asarray(mean)
    return np.minimum(excess_bound(n1, mean, variance, t, 1.0 - mean),
                      excess_bound(n2, 1.0 - mean, variance, t, mean))


def two_sample_upper(n1: Values, s1: Values, q1: Values, n2: Values, s2: Values, q2: Values
                     ) -> Array:
    """p-value of "group 1's mean is not above group 2's", values in [0, 1], the groups
    exchangeable under the null (group 1 a random subset of the pool)."""
    mean, variance, t = _pooled(n1, s1, q1, n2, s2, q2)
    return _subset_excess(n1, n2, mean, variance, t)


def two_sample_two_sided(n1: Values, s1: Values, q1: Values, n2: Values, s2: Values, q2: Values
                         ) -> Array:
    """p-value of "the two groups' means are equal": P(|S1 - n1 mean| >= |t|) bounded as
    the sum of both tails' bounds."""
    mean, variance, t = _pooled(n1, s1, q1, n2, s2, q2)
    size = np.abs(t)
    return np.minimum(1.0, _subset_excess(n1, n2, mean, variance, size)
                      + _subset_excess(n1, n2, 1.0 - mean, variance, size))


def bonferroni(p: Array, tested: npt.NDArray[np.bool_]) -> Array:
    """Combined p-value of per-class tests (last axis): the smallest of the tested ones
    times how many were tested; 1 when none was."""
    smallest = np.where(tested, p, 1.0).min(axis=-1)
    return np.minimum(1.0, smallest * np.maximum(tested.sum(axis=-1), 1))


def label_shift_static(observed: Array, prior: Array) -> float:
    """p-value of "the labels are a sample of `prior`": the G-test over the classes with
    prior > 0 when every expected count is >= 5, per-class bounds otherwise; 0 when a
    label falls in a class of prior 0."""
    labels = float(observed.sum())
    support = prior > 0
    if (observed[~support] > 0).any():
        return 0.0
    expected = labels * prior[support]
    if (expected >= G_TEST_MIN_EXPECTED).all():
        return g_test(observed[support], expected)
    o, pi = observed[support], prior[support]
    variance = pi * (1.0 - pi)
    size = np.abs(o - expected)
    upper = excess_bound(labels, pi, variance, size, 1.0 - pi)
    lower = excess_bound(labels, 1.0 - pi, variance, size, pi)
    return float(bonferroni(np.minimum(1.0, upper + lower), np.ones(len(o), dtype=bool)))


def label_shift_against(observed: Array, rest: Array) -> Array:
    """p-value of "the window's labels and the rest of the reference's (counts per class
    on the last axis, disjoint from the window) come from one distribution"."""
    p = two_sample_two_sided(observed.sum(axis=-1, keepdims=True), observed, observed,
                             rest.sum(axis=-1, keepdims=True), rest, rest)
    return bonferroni(p, (observed + rest) > 0)


def mean_shift(n1: Values, s1: Array, q1: Array, n2: Values, s2: Array, q2: Array) -> Array:
    """p-value of "every class's mean output is the same in both groups", from counts and
    per-class (last axis) sums and sums of squares of values in [0, 1]."""
    n1, n2 = np.asarray(n1)[..., None], np.asarray(n2)[..., None]
    p = two_sample_two_sided(n1, s1, q1, n2, s2, q2)
    _, variance, _ = _pooled(n1, s1, q1, n2, s2, q2)
    return bonferroni(p, variance > 0)


def mean_excess(n1: Values, s1: Values, q1: Values, n2: Values, s2: Values, q2: Values,
                high: float) -> Array:
    """p-value of "group 1's mean is not above group 2's", values in [0, high]."""
    h2 = high * high
    return two_sample_upper(n1, np.divide(s1, high), np.divide(q1, h2), n2,
                            np.divide(s2, high), np.divide(q2, h2))


def calibration(observed: Array, expected: Array, squares: Array) -> Array:
    """p-value of "the labels follow the predicted probabilities": per class (last axis),
    the observed count against the sum of p_k over the labelled predictions (`expected`),
    variance expected - sum p_k^2 (`squares`)."""
    labels = np.maximum(observed.sum(axis=-1, keepdims=True), 1.0)
    variance = np.maximum(expected - squares, 0.0) / labels
    mean = np.clip(expected / labels, 0.0, 1.0)
    size = np.abs(observed - expected)
    upper = excess_bound(labels, mean, variance, size, 1.0)
    lower = excess_bound(labels, 1.0 - mean, variance, size, 1.0)
    return bonferroni(np.minimum(1.0, upper + lower), np.ones(observed.shape, dtype=bool))
