"""What system tests, deployment tests and the benchmarks share: the real daemon as a
subprocess on a free loopback port, bounded waits, and /metrics parsed with
prometheus_client's own parser (one copy of each, #13)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.waiting import wait_until

# Samples by (metric name, label pairs).
Samples = dict[tuple[str, frozenset], float]


def free_port() -> int:
    """A port free on 127.0.0.1 now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_metrics(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str) -> float:
    """The sum of `name` over all its label sets (0 when there is none)."""
    return sum(v for (n, _), v in samples.items() if n == name)


class DaemonProcess:
    """`python -m monitor run` on a config written into `folder` (config.yaml, stderr
    to daemon.stderr). The tests' short intervals and state_dir are defaults the
    caller's config overrides; `preexec_fn` runs in the child (the benchmarks pin it
    to a core)."""

    def __init__(self, folder: Path, config: dict,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = {"listen": f"127.0.0.1:{self.port}", "state_dir": str(folder / "state"),
                       "checkpoint_interval": "200ms", "poll_interval": "200ms", **config}
        self.config_path = folder / "config.yaml"
        self.write_config(self.config)
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen | None = None
        self.stderr_path = folder / "daemon.stderr"

    def write_config(self, config: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self, wait_ready: bool = True, timeout_s: float = 20,
              interval_s: float = 0.05) -> DaemonProcess:
        with open(self.stderr_path, "ab") as stderr:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", str(self.config_path)],
                stdout=subprocess.DEVNULL, stderr=stderr, preexec_fn=self.preexec_fn)
        if wait_ready:
            wait_until(self.ready, timeout_s, interval_s, what="daemon ready")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ready(self) -> bool:
        """/readyz answers 200; an exited daemon fails at once, with its log."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self, timeout_s: float = 5) -> str:
        """The /metrics body as text."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=timeout_s) as r:
            return r.read().decode()

    def scrape(self) -> Samples:
        return parse_metrics(self.metrics())

    def value(self, name: str, **labels: str) -> float | None:
        return value(self.scrape(), name, **labels)

    def wait_value(self, name: str, expected: float, timeout_s: float = 10, **labels: str) -> None:
        wait_until(lambda: self.value(name, **labels) == expected, timeout_s)

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10) -> int | None:
        """Signal and wait; its exit code. One that does not exit in time is killed
        (never left behind), and its code then says so. None if never started."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL (a crash), and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
