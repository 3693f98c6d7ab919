"""The reference scope: which labels make A, and which predictions make B_ref.

Each kind keeps one sum row (see window.py) with the same interface as a time window
(`advance`, `add`, `total`, `state`, `restore`), so aggregation treats them alike:
- cumulative (and static, whose A is the fixed prior): every event since the first start;
- `{window: D}`: a TimeWindow over label event times;
- `{decay: H}`: each event weighted 2^-((T - t)/H), T the window clock.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from monitor.core.settings import ReferenceSpec
from monitor.core.window import LABELLED, PRED, TimeWindow, row_width

Array = npt.NDArray[np.float64]


class Cumulative:
    def __init__(self, k: int) -> None:
        self.sums = np.zeros(row_width(k))

    def advance(self, now: float) -> None:
        """Nothing leaves a cumulative reference."""

    def add(self, ts: Array, rows: Array, columns: npt.NDArray[np.int64] | None = None) -> None:
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


class Decay:
    """Exponentially weighted sums, held as their value at the clock `anchor`, and the
    sums of squared weights over predictions and over labelled ones, for the effective
    sample size (sum w)^2 / (sum w^2)."""

    def __init__(self, half_life_s: float, k: int) -> None:
        self.half_life_s = half_life_s
        self.sums = np.zeros(row_width(k))
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

    def add(self, ts: Array, rows: Array, columns: npt.NDArray[np.int64] | None = None) -> None:
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


Reference = Cumulative | Decay | TimeWindow


def make_reference(spec: ReferenceSpec, k: int) -> Reference:
    if spec.kind == "window":
        assert spec.duration_s is not None
        return TimeWindow(spec.duration_s, k)
    if spec.kind == "decay":
        assert spec.half_life_s is not None
        return Decay(spec.half_life_s, k)
    return Cumulative(k)
