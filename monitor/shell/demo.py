"""`drift-monitor demo`: a synthetic model server, the daemon on its logs, a live table.

A writer thread plays a fraud model: 10% of requests are fraud, the model is calibrated
(mean output about [0.9, 0.1]) until DRIFT_AFTER_S, then it starts over-predicting
fraud (mean output about [0.6, 0.4]) while the labels stay the same. Half the labels
are on the prediction line, the rest arrive a few seconds later in a feedback log,
joined by request id. The KL divergence of the 10s window rises first, then 30s's.

The windows (demo.yaml) are shorter than the demo: a time window longer than the time
since start holds every event, exactly the cumulative reference's scope, so its output
drift KL(B_ref || B_window) would stay 0 for that long. With 10s and 30s windows every
column moves within a minute.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import replace
from importlib import resources

from monitor.core.aggregate import Snapshot
from monitor.shell.config import load_config
from monitor.shell.daemon import STOP, Daemon
from monitor.shell.replay import format_table, min_samples_of

log = logging.getLogger(__name__)

DRIFT_AFTER_S = 20.0
RATE_PER_S = 200
LABEL_DELAY_S = 3.0
LOGS = ("predictions-0.jsonl", "labels-0.jsonl")  # what the Writer appends to


def _bind_error(port: int) -> str | None:
    """Why the demo cannot listen on `port`, or None when it can."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Writer(threading.Thread):
    """Appends predictions (and delayed labels) to the demo logs until stopped."""

    def __init__(self, folder: str, stop: threading.Event, seed: int = 7) -> None:
        super().__init__(name="demo-writer", daemon=True)
        self.folder = folder
        self.stop_event = stop
        self.random = random.Random(seed)

    def prediction(self, i: int, now: float, drifted: bool) -> tuple[dict, int]:
        rng = self.random
        label = 1 if rng.random() < 0.1 else 0
        # Calibrated: fraud score near 0.1 on average; drifted: near 0.4.
        score = min(max(rng.betavariate(4, 6) if drifted else rng.betavariate(1, 9), 1e-4), 1 - 1e-4)
        line = {"ts": now, "model": "fraud", "id": f"r-{i}", "probs": [1 - score, score]}
        return line, label

    def run(self) -> None:
        start = time.time()
        delayed: list[tuple[float, dict]] = []
        i = 0
        with (open(os.path.join(self.folder, LOGS[0]), "a", encoding="utf-8") as predictions,
              open(os.path.join(self.folder, LOGS[1]), "a", encoding="utf-8") as labels):
            while not self.stop_event.is_set():
                now = time.time()
                drifted = now - start > DRIFT_AFTER_S
                for _ in range(RATE_PER_S // 10):
                    line, label = self.prediction(i, now, drifted)
                    if i % 2 == 0:
                        line["label"] = label
                    else:
                        delayed.append((now + LABEL_DELAY_S, {"id": line["id"], "label": label}))
                    predictions.write(json.dumps(line) + "\n")
                    i += 1
                while delayed and delayed[0][0] <= now:
                    labels.write(json.dumps(delayed.pop(0)[1]) + "\n")
                predictions.flush()
                labels.flush()
                self.stop_event.wait(0.1)


class Table(threading.Thread):
    """Prints the daemon's published snapshot every couple of seconds."""

    def __init__(self, daemon: Daemon, stop: threading.Event, url: str) -> None:
        super().__init__(name="demo-table", daemon=True)
        self.daemon_ = daemon
        self.stop_event = stop
        self.url = url
        self.started = time.monotonic()
        self.tty = sys.stdout.isatty()

    def run(self) -> None:
        while not self.stop_event.wait(2.0):
            snapshot: Snapshot | None = self.daemon_.snapshot
            if snapshot is None:
                continue
            elapsed = time.monotonic() - self.started
            phase = ("drift injected" if elapsed > DRIFT_AFTER_S
                     else f"drift starts in {DRIFT_AFTER_S - elapsed:.0f}s")
            text = (f"drift-monitor demo  {self.url}  ({phase}; Ctrl-C to stop)\n\n"
                    + format_table(snapshot.models,
                                   min_samples_of(self.daemon_.config, snapshot)))
            sys.stdout.write(("\x1b[H\x1b[J" if self.tty else "\n") + text)
            sys.stdout.flush()


def run_demo(port: int = 9841, duration_s: float | None = None) -> int:
    folder = tempfile.mkdtemp(prefix="drift-monitor-demo-")
    os.makedirs(os.path.join(folder, "logs"))
    # The logs exist before the daemon starts, or it would rightly warn that a source
    # matches no file while the writer thread is still opening them.
    for name in LOGS:
        open(os.path.join(folder, "logs", name), "x").close()
    config_path = os.path.join(folder, "config.yaml")
    with resources.as_file(resources.files("monitor") / "demo.yaml") as source:
        shutil.copyfile(source, config_path)
    if (error := _bind_error(port)) is not None:
        free = _free_port()
        print(f"drift-monitor demo: port {port} is not free ({error}), using port {free} instead",
              flush=True)
        port = free
    config = replace(load_config(config_path), listen_port=port)
    daemon = Daemon(config, config_path)
    url = f"http://127.0.0.1:{port}/metrics"
    print(f"drift-monitor demo: logs in {folder}/logs\nmetrics: {url}\n"
          f"the table below refreshes every 2s; drift is injected after {DRIFT_AFTER_S:.0f}s",
          flush=True)
    stop = threading.Event()
    threads = [Writer(os.path.join(folder, "logs"), stop), Table(daemon, stop, url)]
    if duration_s is not None:
        threads.append(threading.Timer(duration_s, lambda: daemon.messages.put(STOP)))
    for thread in threads:
        thread.start()
    try:
        return daemon.run()
    finally:
        stop.set()
        for thread in threads:
            if isinstance(thread, threading.Timer):
                thread.cancel()
            thread.join(timeout=5)
        shutil.rmtree(folder, ignore_errors=True)
