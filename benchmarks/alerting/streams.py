"""Realistic prediction logs for measuring the alert rules: a real scikit-learn classifier
(logistic regression on the handwritten digits scikit-learn ships, 10 classes) serving
simulated days of traffic, with a drift injected at noon of the last day or none.

Requests arrive uniformly over each day; each draws a true class from the class mix of
its moment, then an image of that class from the held-out half of the data set, and
logs the model's predicted probabilities for it, as a model server would. Kinds:

- steady: the same class mix all along (uniform, as the data set).
- cycle: the class mix follows a day-night cycle: classes 0-4 up to +-`cycle` of their
  share, classes 5-9 the opposite way (every class at the limit: the worst such cycle).
- label: from noon, class 0's share triples, 10 % -> 30 % (a prior shift; the model's
  outputs follow, as they should).
- covariate_half / covariate_all: from noon, half (all) of the images arrive at 30 % of
  their intensity (a sensor gain drop): the outputs move, the class mix does not.
- concept: from noon, 30 % of the 3s and 8s carry the other label (the world's answer for
  those inputs changed): label mix and outputs unchanged, log loss up.

Labels are on the prediction line, or (label_delay_s > 0) in a separate label log that
many seconds later, joined by request id.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

DAY_S = 86400.0
FIRST_DAY = datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp()  # a Monday, midnight UTC
K = 10
KINDS = ("steady", "cycle", "label", "covariate_half", "covariate_all", "concept")
CONCEPT_SHARE = 0.3
LABEL_FACTOR = 3.0
GAIN = 0.3


@dataclass(frozen=True)
class Scenario:
    kind: str
    per_day: int  # predictions per day
    days: int = 2  # the last one carries the drift, from its noon
    cycle: float = 0.0  # relative amplitude of the day-night class mix
    label_delay_s: float = 0.0  # 0: labels on the prediction line
    seed: int = 1

    @property
    def name(self) -> str:
        delay = f"-delay{self.label_delay_s:.0f}s" if self.label_delay_s else ""
        cycle = f"-cycle{self.cycle:g}" if self.cycle else ""
        return f"{self.kind}{cycle}-{self.per_day // 1000}k{delay}-s{self.seed}"

    @property
    def drift_at(self) -> float | None:
        """Event time the drift starts; None for a control."""
        if self.kind in ("steady", "cycle"):
            return None
        return FIRST_DAY + (self.days - 1) * DAY_S + DAY_S / 2

    @property
    def start(self) -> float:
        return FIRST_DAY

    @property
    def end(self) -> float:
        return FIRST_DAY + self.days * DAY_S


@dataclass(frozen=True)
class Model:
    """The classifier's outputs on every held-out image, clean and at reduced gain."""

    labels: npt.NDArray[np.int64]
    clean: list[str]  # JSON text of the probability vector, per image
    faint: list[str]
    clean_probs: npt.NDArray[np.float64]
    faint_probs: npt.NDArray[np.float64]


def _texts(probs: npt.NDArray[np.float64]) -> list[str]:
    rounded = np.round(probs, 6)
    rounded[:, -1] = np.round(np.maximum(0.0, 1.0 - rounded[:, :-1].sum(axis=1)), 6)
    return [json.dumps([float(x) for x in row]) for row in rounded]


@cache
def model() -> Model:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_fit, x_serve, y_fit, y_serve = train_test_split(x, y, test_size=0.5, random_state=0,
                                                      stratify=y)
    clf = LogisticRegression(C=0.01, max_iter=2000).fit(x_fit, y_fit)
    clean = clf.predict_proba(x_serve)
    faint = clf.predict_proba(x_serve * GAIN)
    return Model(np.asarray(y_serve), _texts(clean), _texts(faint), clean, faint)


def class_mix(scenario: Scenario, ts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """(n, K) class probabilities of the requests at times ts."""
    mix = np.full((len(ts), K), 1.0 / K)
    if scenario.cycle:
        sign = np.where(np.arange(K) < K // 2, 1.0, -1.0)
        mix *= 1.0 + scenario.cycle * sign[None, :] * np.sin(2 * math.pi * ts / DAY_S)[:, None]
    mix /= mix.sum(axis=1, keepdims=True)
    if scenario.kind == "label" and scenario.drift_at is not None:
        # Class 0's share triples (0.1 -> 0.3); the others keep their proportions.
        drifted = ts >= scenario.drift_at
        share = mix[drifted, 0]
        mix[drifted, 1:] *= ((1 - LABEL_FACTOR * share) / (1 - share))[:, None]
        mix[drifted, 0] = LABEL_FACTOR * share
    return mix


def write(scenario: Scenario, folder: Path) -> dict[str, Path]:
    """Write predictions.jsonl (and labels.jsonl) into folder; returns their paths."""
    m = model()
    rng = np.random.default_rng(scenario.seed)
    n = scenario.per_day * scenario.days
    ts = np.sort(rng.uniform(scenario.start, scenario.end, size=n))
    mix = class_mix(scenario, ts)
    classes = (rng.random(n)[:, None] > np.cumsum(mix, axis=1)).sum(axis=1).clip(0, K - 1)
    by_class = [np.flatnonzero(m.labels == k) for k in range(K)]
    pick = rng.random(n)
    images = np.empty(n, dtype=np.int64)
    for k in range(K):
        rows = classes == k
        images[rows] = by_class[k][(pick[rows] * len(by_class[k])).astype(np.int64)]
    labels = classes.copy()
    drifted = np.zeros(n, dtype=bool) if scenario.drift_at is None else ts >= scenario.drift_at
    faint = np.zeros(n, dtype=bool)
    if scenario.kind == "covariate_all":
        faint = drifted
    elif scenario.kind == "covariate_half":
        faint = drifted & (rng.random(n) < 0.5)
    elif scenario.kind == "concept":
        swap = drifted & np.isin(classes, (3, 8)) & (rng.random(n) < CONCEPT_SHARE)
        labels[swap] = 11 - classes[swap]  # 3 <-> 8
    folder.mkdir(parents=True, exist_ok=True)
    out = {"predictions": folder / "predictions.jsonl"}
    delayed = scenario.label_delay_s > 0
    texts = [m.faint[j] if f else m.clean[j] for j, f in zip(images.tolist(), faint.tolist())]
    stamps = [f"{t:.3f}" for t in ts.tolist()]
    truth = labels.tolist()
    with open(out["predictions"], "w", encoding="utf-8") as predictions:
        if delayed:
            predictions.writelines(f'{{"ts": {stamps[i]}, "id": "r{i}", "probs": {texts[i]}}}\n'
                                   for i in range(n))
        else:
            predictions.writelines(f'{{"ts": {stamps[i]}, "id": "r{i}", "probs": {texts[i]}, '
                                   f'"label": {truth[i]}}}\n' for i in range(n))
    if delayed:
        out["labels"] = folder / "labels.jsonl"
        # Every label comes label_delay_s after its prediction: the order stays the same.
        with open(out["labels"], "w", encoding="utf-8") as feedback:
            feedback.writelines(f'{{"ts": {t + scenario.label_delay_s:.3f}, "id": "r{i}", '
                                f'"label": {truth[i]}}}\n' for i, t in enumerate(ts.tolist()))
    return out


def config(scenario: Scenario, paths: dict[str, Path]) -> dict:
    """The drift-monitor config a user would write for this model."""
    cfg: dict = {
        "sources": [{"name": "predictions", "path": str(paths["predictions"]), "model": "digits"}],
        "models": {"digits": {"classes": [str(k) for k in range(K)], "windows": ["15m", "30m", "1h"],
                              "min_samples": 100}},
    }
    if "labels" in paths:
        cfg["labels"] = [{"name": "feedback", "path": str(paths["labels"]), "model": "digits",
                          "join_ttl": "1h"}]
    return cfg
