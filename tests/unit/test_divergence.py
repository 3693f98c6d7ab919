"""divergence.py against the worked example, identities, scipy and (if present) torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st
from pytest import approx

from monitor.core.divergence import cross_entropy, entropy, floor, js, kl, normalize_counts

from .strategies import EPS, FAST, SLOW, distribution_pairs, distributions


def test_worked_example_kl_is_0_036690014_nats():
    labels = normalize_counts([1, 9])  # 1 of 10 labels is class 0
    b = floor([0.2, 0.8], EPS)
    assert labels == approx([0.1, 0.9])
    assert float(kl(labels, b)) == approx(0.036690014, abs=5e-10)
    expected = 0.1 * math.log(0.1 / 0.2) + 0.9 * math.log(0.9 / 0.8)
    assert float(kl(labels, b)) == approx(expected, abs=1e-15)


@FAST
@given(distribution_pairs(zeros_a=True, zeros_b=True))
def test_cross_entropy_is_kl_plus_entropy(pair):
    a, raw_b = pair
    b = floor(raw_b, EPS)
    assert float(cross_entropy(a, b)) == approx(float(kl(a, b)) + float(entropy(a)), abs=1e-9)


@FAST
@given(distribution_pairs(zeros_a=True, zeros_b=False))
def test_kl_and_entropy_agree_with_scipy(pair):
    a, b = pair
    assert float(entropy(a)) == approx(scipy.stats.entropy(a), abs=1e-9)
    assert float(kl(a, b)) == approx(scipy.stats.entropy(a, b), abs=1e-9)


@FAST
@given(distribution_pairs(zeros_a=True, zeros_b=True))
def test_kl_of_floored_b_agrees_with_scipy_on_the_floored_vector(pair):
    a, raw_b = pair
    b = floor(raw_b, EPS)
    assert float(kl(a, b)) == approx(scipy.stats.entropy(a, b), abs=1e-9)


@FAST
@given(distribution_pairs(zeros_a=True, zeros_b=True))
def test_js_agrees_with_scipy_jensenshannon_squared(pair):
    """scipy's distance is the square root of its JS divergence, which rounding can leave a
    hair below 0 for equal distributions (sqrt -> nan): compare with what it takes the root
    of, scipy's own KL to the midpoint, and with the distance where that is positive."""
    a, b = pair
    m = (a + b) / 2
    divergence = (scipy.stats.entropy(a, m) + scipy.stats.entropy(b, m)) / 2
    assert float(js(a, b)) == approx(divergence, abs=1e-9)
    if divergence > 0:
        assert float(js(a, b)) == approx(scipy.spatial.distance.jensenshannon(a, b) ** 2, abs=1e-9)


@FAST
@given(st.integers(2, 20).flatmap(distributions))
def test_js_of_a_distribution_with_itself_is_zero_not_nan(a):
    assert float(js(a, a)) == approx(0.0, abs=1e-12)


def test_kl_agrees_with_torch_kl_div():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    for _ in range(200):
        k = int(rng.integers(2, 9))
        a = rng.dirichlet(np.ones(k))
        a[rng.random(k) < 0.3] = 0.0
        if a.sum() == 0:
            a[0] = 1.0
        a /= a.sum()
        b = floor(rng.dirichlet(np.ones(k)), EPS)
        reference = torch.nn.functional.kl_div(
            torch.log(torch.tensor(b, dtype=torch.float64)), torch.tensor(a, dtype=torch.float64),
            reduction="sum")
        assert float(kl(a, b)) == approx(float(reference), abs=1e-9)


def test_zero_entries_of_a_contribute_nothing_whatever_b_is_there():
    # B_0 = 0 would be ln(0) if the term were evaluated.
    assert float(entropy([0.0, 1.0])) == 0.0
    assert float(cross_entropy([0.0, 1.0], [0.0, 1.0])) == 0.0
    assert float(kl([0.0, 1.0], [0.0, 1.0])) == 0.0
    assert float(kl([0.0, 0.5, 0.5], [0.9, 0.05, 0.05])) == approx(math.log(10.0))
    assert float(cross_entropy([0.0, 1.0], [0.7, 0.3])) == approx(-math.log(0.3))


@FAST
@given(distribution_pairs(zeros_a=True, zeros_b=True))
def test_zeros_in_b_are_floored_at_epsilon_and_renormalised(pair):
    a, raw_b = pair
    b = floor(raw_b, EPS)
    assert b.sum() == approx(1.0, abs=1e-12)
    assert (b > 0).all()
    assert (b >= EPS / (1 + len(b) * EPS)).all()
    for value in (kl(a, b), cross_entropy(a, b), js(a, b), entropy(a)):
        assert math.isfinite(float(value))


def test_floor_of_a_zero_entry_is_epsilon_over_the_new_total():
    b = floor([0.0, 1.0], 1e-3)
    assert b == approx([1e-3 / 1.001, 1.0 / 1.001], rel=1e-12)
    assert float(kl([0.5, 0.5], b)) == approx(
        0.5 * math.log(0.5 / b[0]) + 0.5 * math.log(0.5 / b[1]), rel=1e-12)


@FAST
@given(distributions(5, zeros=False))
def test_floor_leaves_a_vector_above_epsilon_unchanged(b):
    assert floor(b, 1e-12) == approx(b, rel=1e-9)


def test_smoothing_is_additive_on_counts():
    assert normalize_counts([3, 0, 1], 1.0) == approx([4 / 7, 1 / 7, 2 / 7])
    assert normalize_counts([3, 0, 1], 0.5) == approx([3.5 / 5.5, 0.5 / 5.5, 1.5 / 5.5])
    assert normalize_counts([3, 0, 1]) == approx([0.75, 0.0, 0.25])


def test_smoothing_with_no_labels_gives_uniform_and_without_smoothing_no_distribution():
    assert normalize_counts([0, 0, 0], 2.0) == approx([1 / 3] * 3)
    assert np.isnan(normalize_counts([0, 0, 0])).all()


@FAST
@given(st.lists(st.integers(0, 1000), min_size=2, max_size=8).filter(lambda c: sum(c) > 0),
       st.floats(0.0, 10.0))
def test_smoothed_counts_are_a_distribution_matching_the_formula(counts, alpha):
    got = normalize_counts(counts, alpha)
    expected = [(c + alpha) / (sum(counts) + len(counts) * alpha) for c in counts]
    assert got == approx(expected, rel=1e-12)
    assert got.sum() == approx(1.0)


@FAST
@given(distribution_pairs(zeros_a=True, zeros_b=True))
def test_js_is_symmetric_and_bounded_by_ln_2(pair):
    a, b = pair
    value = float(js(a, b))
    assert 0.0 <= value <= math.log(2) + 1e-12
    assert value == approx(float(js(b, a)), abs=1e-12)


@FAST
@given(distributions(6))
def test_divergences_of_a_distribution_with_itself_are_zero(a):
    assert float(js(a, a)) == approx(0.0, abs=1e-12)
    assert float(kl(a, a)) == approx(0.0, abs=1e-12)
    assert float(cross_entropy(a, a)) == approx(float(entropy(a)), abs=1e-12)


def test_js_reaches_ln_2_for_disjoint_supports():
    assert float(js([1.0, 0.0], [0.0, 1.0])) == approx(math.log(2), abs=1e-15)


@SLOW
@given(st.integers(2, 6), st.integers(1, 20), st.data())
def test_vectorised_rows_equal_one_row_at_a_time(k, n, data):
    a_rows = np.array([data.draw(distributions(k)) for _ in range(n)])
    b_rows = floor(np.array([data.draw(distributions(k)) for _ in range(n)]), EPS)
    for f in (cross_entropy, kl, js):
        together = f(a_rows, b_rows)
        assert together.shape == (n,)
        assert together == approx([float(f(a, b)) for a, b in zip(a_rows, b_rows)], abs=1e-12)
        # One reference A against many windows' B, as the snapshot uses it.
        broadcast = f(a_rows[0], b_rows)
        assert broadcast == approx([float(f(a_rows[0], b)) for b in b_rows], abs=1e-12)
    assert entropy(a_rows) == approx([float(entropy(a)) for a in a_rows], abs=1e-12)
    assert floor(b_rows, 1e-3) == approx(np.array([floor(b, 1e-3) for b in b_rows]), abs=1e-15)
    counts = a_rows * 10
    assert normalize_counts(counts, 0.5) == approx(
        np.array([normalize_counts(c, 0.5) for c in counts]), abs=1e-15)


def test_no_labels_yet_gives_undefined_divergences_not_zero():
    """normalize_counts of all-zero counts is NaN ("no distribution yet"); what is computed
    from it must stay undefined (not exported), never read as 0 nats of drift."""
    a = normalize_counts([0, 0, 0])
    b = floor([0.2, 0.3, 0.5], EPS)
    for value in (entropy(a), cross_entropy(a, b), kl(a, b), js(a, b)):
        assert math.isnan(float(value))
