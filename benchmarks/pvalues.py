#!/usr/bin/env python3
"""Calibration and power of the alerting p-values (monitor/core/stats.py), by simulation.

    python benchmarks/pvalues.py          # a few minutes; prints two Markdown tables

Null: many independent windows with no drift (labels and outputs from the reference's own
distribution); the table gives P(p < alpha) / alpha at alpha = 0.05, 0.01, 0.001, the
largest over uniform and Zipf class mixes (1 means exactly nominal; honest is <= 1 up
to sampling error). Power: P(p < 0.01) under a stated shift. Seeded, so reproducible.
"""

from __future__ import annotations

import math

import numpy as np

from monitor.core import stats

ALPHAS = (0.05, 0.01, 0.001)
EPS = 1e-12
rng = np.random.default_rng(2026)


def mixes(k: int) -> list[np.ndarray]:
    zipf = 1.0 / np.arange(1, k + 1) ** 1.2
    return [np.full(k, 1 / k), zipf / zipf.sum()]


def ratio(p: np.ndarray) -> list[float]:
    return [float((p < a).mean() / a) for a in ALPHAS]


def labels_of(probs: np.ndarray) -> np.ndarray:
    u = rng.random((*probs.shape[:-1], 1))
    return np.minimum((probs.cumsum(axis=-1) < u).sum(axis=-1), probs.shape[-1] - 1)


def counts(y: np.ndarray, k: int) -> np.ndarray:
    return (y[..., None] == np.arange(k)).sum(axis=-2).astype(float)


def null_rows() -> list[tuple[str, int, str, list[float], int]]:
    rows = []
    for k in (2, 10, 100):
        for labels, m in ((100, 30), (100, 100_000), (300, 300), (2_000, 20_000)):
            windows = 20_000
            worst = np.max([ratio(stats.label_shift_against(
                rng.multinomial(labels, pi, size=windows).astype(float),
                rng.multinomial(m, pi, size=windows).astype(float))) for pi in mixes(k)], axis=0)
            rows.append(("label shift, window vs rest", k, f"l={labels}, rest={m}", list(worst),
                         windows))
        for labels in (3 * k, 5 * k, 30 * k):
            windows = 3_000
            worst = np.max([ratio(np.array([stats.label_shift_static(o, pi) for o in
                                            rng.multinomial(labels, pi, size=windows).astype(float)]))
                            for pi in mixes(k)], axis=0)
            rows.append(("label shift, static", k, f"l={labels}", list(worst), windows))
        for n, m in ((100, 1_000), (300, 300)):
            windows = max(200, 600_000 // (k * (n + m)))
            worst = []
            for c in (1.0, 0.05):
                w = rng.dirichlet(np.full(k, c), size=(windows, n))
                r = rng.dirichlet(np.full(k, c), size=(windows, m))
                worst.append(ratio(stats.mean_shift(n, w.sum(1), (w * w).sum(1), m, r.sum(1),
                                                    (r * r).sum(1))))
            rows.append(("prediction shift (Dirichlet 1 and 0.05)", k, f"n={n}, rest={m}",
                         list(np.max(worst, axis=0)), windows))
        for c in (1.0, 0.1 if k > 2 else 1.0):
            windows = 20_000
            beta = (c + 1, (k - 1) * c)  # p(label) of a calibrated Dirichlet(c) model
            for n, m in ((100, 2_000), (400, 400)):
                w = -np.log(np.maximum(rng.beta(*beta, size=(windows, n)), EPS))
                r = -np.log(np.maximum(rng.beta(*beta, size=(windows, m)), EPS))
                rows.append((f"log-loss shift (Dirichlet {c})", k, f"l={n}, rest={m}",
                             ratio(stats.mean_excess(n, w.sum(1), (w * w).sum(1), m, r.sum(1),
                                                     (r * r).sum(1), -math.log(EPS))), windows))
        for labels in (100, 1_000):
            windows = max(300, 2_000_000 // (k * labels))
            worst = []
            for c in (1.0, 0.05):
                p = rng.dirichlet(np.full(k, c), size=(windows, labels))
                worst.append(ratio(stats.calibration(counts(labels_of(p), k), p.sum(1),
                                                     (p * p).sum(1))))
            rows.append(("calibration (Dirichlet 1 and 0.05)", k, f"l={labels}",
                         list(np.max(worst, axis=0)), windows))
    return rows


def power_rows() -> list[tuple[str, str, float]]:
    rows = []
    prior, tripled = np.full(10, 0.1), np.r_[0.3, np.full(9, 0.7 / 9)]
    for labels in (50, 100, 150):
        o = rng.multinomial(labels, tripled, size=2_000).astype(float)
        r = rng.multinomial(10_000, prior, size=2_000).astype(float)
        rows.append(("label shift vs 10,000 reference labels", f"K=10, class 0 10% -> 30%, l={labels}",
                     float((stats.label_shift_against(o, r) < 0.01).mean())))
        rows.append(("label shift vs static prior", f"K=10, class 0 10% -> 30%, l={labels}",
                     float(np.mean([stats.label_shift_static(x, prior) < 0.01 for x in o[:500]]))))
    for n in (25, 50, 100):
        w = rng.dirichlet(np.r_[27 / 7, np.ones(9)], size=(1_000, n))
        r = rng.dirichlet(np.ones(10), size=(1_000, 1_000))
        rows.append(("prediction shift vs 1,000", f"K=10, mean p_0 0.1 -> 0.3, n={n}",
                     float((stats.mean_shift(n, w.sum(1), (w * w).sum(1), 1_000, r.sum(1),
                                             (r * r).sum(1)) < 0.01).mean())))
    for labels in (25, 50, 100):
        w = np.minimum(-2 * np.log(rng.beta(2, 9, size=(2_000, labels))), -math.log(EPS))
        r = -np.log(rng.beta(2, 9, size=(2_000, 2_000)))
        rows.append(("log-loss shift vs 2,000", f"K=10, every loss doubled, l={labels}",
                     float((stats.mean_excess(labels, w.sum(1), (w * w).sum(1), 2_000, r.sum(1),
                                              (r * r).sum(1), -math.log(EPS)) < 0.01).mean())))
    for labels in (250, 500, 1_000):
        p = rng.dirichlet(np.ones(10), size=(400, labels))
        truth = p.copy()
        truth[..., 0] *= 2
        truth /= truth.sum(axis=-1, keepdims=True)
        rows.append(("calibration", f"K=10, class 0 twice as frequent as predicted, l={labels}",
                     float((stats.calibration(counts(labels_of(truth), 10), p.sum(1),
                                              (p * p).sum(1)) < 0.01).mean())))
    return rows


def main() -> None:
    print("| test | K | window | P(p<0.05)/0.05 | P(p<0.01)/0.01 | P(p<0.001)/0.001 | windows |")
    print("|---|---|---|---|---|---|---|")
    for name, k, size, r, windows in null_rows():
        print(f"| {name} | {k} | {size} | {r[0]:.2f} | {r[1]:.2f} | {r[2]:.2f} | {windows:,} |")
    print()
    print("| test | shift | P(p < 0.01) |")
    print("|---|---|---|")
    for name, shift, power in power_rows():
        print(f"| {name} | {shift} | {power:.2f} |")


if __name__ == "__main__":
    main()
