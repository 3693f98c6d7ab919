"""Explicit checks of restored state. Pure: every check raises CheckpointError naming
where the value sits, so a restore never relies on catching KeyError or TypeError (which
would turn a bug in our own schema into "corrupt checkpoint, counters reset")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.core.errors import CheckpointError


def mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise CheckpointError(f"{where}: expected an object")
    return value


def field(parent: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in parent:
        raise CheckpointError(f"{where}.{key}: missing")
    return parent[key]


def items(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise CheckpointError(f"{where}: expected a list")
    return value


def text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise CheckpointError(f"{where}: expected a string")
    return value


def count(value: object, where: str) -> int:
    """A non-negative integer (bool is not one)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CheckpointError(f"{where}: expected a non-negative integer")
    return value


def counts(value: object, where: str) -> dict[str, int]:
    return {key: count(n, f"{where}.{key}") for key, n in mapping(value, where).items()}


def array(arrays: Mapping[str, npt.NDArray[Any]], name: str, like: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The array `name`, which must have exactly the dtype and shape of `like`."""
    if name not in arrays:
        raise CheckpointError(f"array {name}: missing")
    got = arrays[name]
    if got.dtype != like.dtype or got.shape != like.shape:
        raise CheckpointError(f"array {name}: {got.dtype}{list(got.shape)}, "
                              f"expected {like.dtype}{list(like.shape)}")
    return got


def rows(arrays: Mapping[str, npt.NDArray[Any]], name: str, dtype: type, width: tuple[int, ...],
         n: int) -> npt.NDArray[Any]:
    """The array `name` of `n` rows of shape `width` and the given dtype."""
    return array(arrays, name, np.empty((n, *width), dtype=dtype))


def within(values: npt.NDArray[Any], low: int, high: int, where: str) -> None:
    """Every value in [low, high)."""
    if values.size and (values.min() < low or values.max() >= high):
        raise CheckpointError(f"{where}: values outside [{low}, {high})")
