"""Bounded waiting for system and deployment tests: every wait has a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout_s: float, interval_s: float = 0.05,
               what: str = "") -> T:
    """Call pred until it returns something truthy, and return that; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = pred()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what or pred}")
        time.sleep(interval_s)
