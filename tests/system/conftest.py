"""Shared fixtures for system tests: the real daemon as a subprocess, real files,
real HTTP scrapes parsed by prometheus_client's parser. Every wait is bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# free_port and parse_metrics are re-exported: the system tests import them here.
from tests.harness import DaemonProcess, free_port, parse_metrics, value  # noqa: F401
from tests.waiting import wait_until


def append(path: Path, lines: list[dict | str | bytes]) -> None:
    with open(path, "ab") as fh:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            if isinstance(line, str):
                line = line.encode()
            fh.write(line + b"\n")


def run_cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True,
                          text=True, timeout=timeout_s)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[[dict], DaemonProcess]]:
    started: list[DaemonProcess] = []

    def make(config: dict) -> DaemonProcess:
        d = DaemonProcess(tmp_path, config)
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()


def model_config(**overrides: object) -> dict:
    return {"classes": ["legit", "fraud"], "windows": ["1h", {"count": 1000}], "min_samples": 1,
            **overrides}


def source(path: Path, **overrides: object) -> dict:
    return {"name": "preds", "path": str(path), "model": "fraud", **overrides}


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    folder = tmp_path / "logs"
    folder.mkdir()
    return folder


class Writer:
    """Appends numbered prediction lines (label = i % classes) to a log, the way a
    model server does: sometimes a line in two writes, with rotation hooks.

    `written` counts complete lines per class, for exact comparisons."""

    def __init__(self, path: Path, classes: int = 2, pad: int = 60) -> None:
        self.path = path
        self.classes = classes
        self.pad = "x" * pad
        self.i = 0
        self.written = [0] * classes
        self.fh = open(path, "ab")  # noqa: SIM115 (kept open across calls, like a logger)

    def line(self) -> bytes:
        label = self.i % self.classes
        probs = [0.0] * self.classes
        probs[label] = 1.0
        doc = {"ts": time.time(), "id": f"r-{self.i}", "probs": probs, "label": label,
               "pad": self.pad}
        return (json.dumps(doc) + "\n").encode()

    def write(self, n: int, split_every: int = 7) -> None:
        for _ in range(n):
            data = self.line()
            if self.i % split_every == 0:
                # Half a line, flushed: the daemon must wait for the rest.
                self.fh.write(data[: len(data) // 2])
                self.fh.flush()
                self.fh.write(data[len(data) // 2:])
            else:
                self.fh.write(data)
            self.written[self.i % self.classes] += 1
            self.i += 1
        self.fh.flush()

    def reopen(self) -> None:
        self.fh.close()
        self.fh = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        self.fh.close()

    @property
    def total(self) -> int:
        return sum(self.written)


@contextmanager
def writing(writer: Writer, lines: Callable[[], int], pause_s: Callable[[], float]) -> Iterator[None]:
    """A thread appending through `writer` (`lines()` at a time, `pause_s()` apart) for
    as long as the block runs; the writer is closed after."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            writer.write(lines())
            time.sleep(pause_s())

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        writer.close()


def assert_counted_exactly(d: DaemonProcess, writer: Writer, timeout_s: float = 30,
                           model: str = "fraud", classes: tuple[str, ...] = ("legit", "fraud")) -> None:
    """Wait until every written line is counted, then check no class is over-counted."""
    def caught_up() -> bool:
        got = d.value("model_drift_predictions_total", model=model)
        if got is not None and got > writer.total:
            raise AssertionError(f"counted {got} > written {writer.total}: a line counted twice")
        return got == writer.total

    try:
        wait_until(caught_up, timeout_s, interval_s=0.1)
    except AssertionError:
        got = d.value("model_drift_predictions_total", model=model)
        raise AssertionError(f"counted {got}, written {writer.total}\n{d.log()[-3000:]}") from None
    samples = d.scrape()
    for index, cls in enumerate(classes):
        assert value(samples, "model_drift_labels_total", model=model, **{"class": cls}) == (
            writer.written[index]), cls
