"""The reference scope: which labels make A, and which predictions make B_ref.

Each kind keeps one sum row (see window.py) and is a `Window`, fed as the windows are,
and says what of it lies outside a window (`Reference.rest`), so aggregation treats
them alike:
- cumulative (and static, whose A is the fixed prior): every event since the first start;
- `{window: D}`: a TimeWindow over label event times;
- `{decay: H}`: each event weighted 2^-((T - t)/H), T the window clock.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from monitor.core.settings import ReferenceSpec
from monitor.core.window import (
    LABELLED,
    PRED,
    ByTime,
    Layout,
    Recent,
    TimeWindow,
    Window,
)

Array = npt.NDArray[np.float64]


class Reference(Window, Protocol):
    def rest(self, window: Recent, total: Array) -> Array | None:
        """The reference's sums over what is *not* in `window` (whose sums are `total`),
        as plain counts; None when the window covers the reference."""


class Cumulative(ByTime):
    def __init__(self, k: int) -> None:
        self.layout = Layout(k)
        self.sums = np.zeros(self.layout.width)

    def advance(self, now: float) -> None:
        """Nothing leaves a cumulative reference."""

    def rest(self, window: Recent, total: Array) -> Array | None:
        """Every event of a window is also in the reference: subtract it."""
        return np.maximum(self.total() - total, 0.0)

    def add_rows(self, ts: Array, rows: Array, columns: npt.NDArray[np.int64] | None = None) -> None:
        if columns is None:
            self.sums += rows.sum(axis=0)
        else:
            self.sums[columns] += rows.sum(axis=0)

    def total(self) -> Array:
        return self.sums.copy()

    def state(self) -> dict[str, Array]:
        return {"sums": self.sums}

    def restore(self, state: dict[str, Array]) -> None:
        self.sums[:] = state["sums"]


class Decay(ByTime):
    """Exponentially weighted sums, held as their value at the clock `anchor`, and the
    sums of squared weights over predictions and over labelled ones, for the effective
    sample size (sum w)^2 / (sum w^2)."""

    def __init__(self, half_life_s: float, k: int) -> None:
        self.half_life_s = half_life_s
        self.layout = Layout(k)
        self.sums = np.zeros(self.layout.width)
        self.squares = np.zeros(2)
        self.anchor: float | None = None

    def weights(self, ts: Array) -> Array:
        """2^-((T - t)/H) at the clock T = `anchor`."""
        assert self.anchor is not None
        return 2.0 ** (-(self.anchor - np.asarray(ts)) / self.half_life_s)

    def advance(self, now: float) -> None:
        if self.anchor is None:
            self.anchor = now
        elif now > self.anchor:
            factor = 2.0 ** (-(now - self.anchor) / self.half_life_s)
            self.sums *= factor
            self.squares *= factor * factor
            self.anchor = now

    def rest(self, window: Recent, total: Array) -> Array | None:
        """The decayed sums less the window's own, weighted alike; each block (the
        per-prediction and the labelled columns) counts as its effective sample size
        (sum w)^2 / (sum w^2)."""
        if self.anchor is None:
            return None
        overlap, squares = window.weighted_total(self.weights)
        rest = np.maximum(self.total() - overlap, 0.0)
        squares = np.maximum(self.squares - squares, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.nan_to_num(rest[[PRED, LABELLED]] / squares, posinf=0.0)
        scaled = rest * scale[1]
        scaled[self.layout.per_prediction] = rest[self.layout.per_prediction] * scale[0]
        return scaled

    def add_rows(self, ts: Array, rows: Array, columns: npt.NDArray[np.int64] | None = None) -> None:
        if self.anchor is None or len(ts) == 0:
            return
        weights = self.weights(ts)
        columns = np.arange(rows.shape[1]) if columns is None else columns
        self.sums[columns] += weights @ rows
        squared = weights * weights
        for i, column in enumerate((PRED, LABELLED)):
            at = np.flatnonzero(columns == column)
            if len(at):
                self.squares[i] += squared @ rows[:, at[0]]

    def total(self) -> Array:
        return self.sums.copy()

    def state(self) -> dict[str, Array]:
        return {"sums": self.sums, "squares": self.squares,
                "anchor": np.array([np.nan if self.anchor is None else self.anchor])}

    def restore(self, state: dict[str, Array]) -> None:
        self.sums[:] = state["sums"]
        self.squares[:] = state["squares"]
        anchor = float(state["anchor"][0])
        self.anchor = None if np.isnan(anchor) else anchor


def make_reference(spec: ReferenceSpec, k: int) -> Reference:
    if spec.kind == "window":
        assert spec.duration_s is not None
        return TimeWindow(spec.duration_s, k)
    if spec.kind == "decay":
        assert spec.half_life_s is not None
        return Decay(spec.half_life_s, k)
    return Cumulative(k)
