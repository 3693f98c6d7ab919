#!/usr/bin/env python3
"""drift-monitor benchmark: replay throughput, baselines, live lag, scrapes, memory, checkpoints.

    python benchmarks/throughput.py            # full run: several minutes, ~2 GB of temp disk
    python benchmarks/throughput.py --quick    # small sizes, under ~90 s (the smoke test)
    python benchmarks/throughput.py --only replay,lag

Everything runs in a temp folder that is deleted at the end, on loopback only. The
program under test (`python -m monitor replay|run`) always runs pinned to one core (the
first allowed CPU), and so do the baselines it is compared with; the load generators (the
log writer, the scrape clients) and this script run on another core when there is one.
Every wait is bounded and every child process is killed on the way out.

Prints a Markdown table `| measurement | result | target | ok |`. Exits 0 even when a
target is missed (the table says so), 1 when a measurement failed with an error.

Internal subcommands (run in pinned child processes by the benchmark itself):
    --baseline naive|floor FILE K   the pandas+scipy way / plain json.loads, prints JSON
    --writer SRC DST RATE SECONDS RECORD   appends SRC's lines to DST at RATE lines/s
    --checkpoint-probe CONFIG       loads a log in-process and times checkpoint writes
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

WINDOWS: list = ["5m", "1h", {"count": 10000}]
T0_MS = 1_795_000_000_000  # 2026-11-18: replay files have fixed, reproducible times
LABELLED = 0.3
POOL = 4096  # pre-formatted probability vectors per K
SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
LIVE_PER_MS = 10  # daemon-fed 100-model logs: 10 lines per ms of event time, ending ~now
BIG_FILE_BYTES_PER_LINE = 170  # K=10, 100 models: for the disk check

# -- sizes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    replay: dict[int, int]  # K -> lines
    repeats: int
    lag_rate: int
    lag_seconds: float
    scrape_lines: int  # first log of the 100-model daemon (all 100 models present)
    scrape_feed: int  # each of the two logs appended with and without scraping
    scrape_gets: int
    memory: tuple[int, int]
    idle_files: int
    idle_seconds: float
    restart_initial: int
    restart_backlog: int


FULL = Sizes(replay={2: 2_000_000, 10: 2_000_000, 100: 400_000}, repeats=3, lag_rate=200_000,
             lag_seconds=10.0, scrape_lines=200_000, scrape_feed=1_000_000, scrape_gets=100,
             memory=(1_000_000, 10_000_000), idle_files=1000, idle_seconds=10.0,
             restart_initial=200_000, restart_backlog=1_000_000)
QUICK = Sizes(replay={2: 20_000, 10: 20_000, 100: 20_000}, repeats=1, lag_rate=20_000,
              lag_seconds=2.0, scrape_lines=20_000, scrape_feed=20_000, scrape_gets=100,
              memory=(20_000, 200_000), idle_files=100, idle_seconds=2.0,
              restart_initial=20_000, restart_backlog=20_000)

# -- CPUs ------------------------------------------------------------------------------------

_ALLOWED = sorted(os.sched_getaffinity(0))
DUT_CPU = _ALLOWED[0]  # the program under test, and the baselines
LOAD_CPU = _ALLOWED[1] if len(_ALLOWED) > 1 else _ALLOWED[0]  # writers, scrapers, this script


def pin(cpu: int) -> Callable[[], None]:
    return lambda: os.sched_setaffinity(0, {cpu})


# -- results ---------------------------------------------------------------------------------


@dataclass
class Table:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, measurement: str, result: str, target: str = "", ok: bool | str | None = None) -> None:
        flag = ok if isinstance(ok, str) else {True: "yes", False: "**NO**", None: ""}[ok]
        self.rows.append((measurement, result, target, flag))
        print(f"  {measurement}: {result} {('(target ' + target + ') ' + flag) if target else ''}",
              file=sys.stderr, flush=True)

    def markdown(self) -> str:
        out = ["| measurement | result | target | ok |", "|---|---|---|---|"]
        out += [f"| {m} | {r} | {t} | {o} |" for m, r, t, o in self.rows]
        return "\n".join(out)


def rate(lines: int, seconds: float) -> str:
    return f"{lines / seconds:,.0f} lines/s" if seconds > 0 else "inf lines/s"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def mib(kib: float) -> str:
    return f"{kib / 1024:,.1f} MiB"


def note(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- log generation --------------------------------------------------------------------------


def probs_pool(k: int, seed: int) -> tuple[list[bytes], np.ndarray]:
    """POOL probability vectors with 6 decimals summing to 1, pre-formatted as JSON lists,
    and a label distribution a little away from their mean (so KL is not ~0)."""
    rng = np.random.default_rng(seed)
    p = np.round(rng.dirichlet(np.full(k, 2.0), size=POOL), 6)
    top = p.argmax(axis=1)
    p[np.arange(POOL), top] = np.round(1.0 - (p.sum(axis=1) - p[np.arange(POOL), top]), 6)
    pool = [("[" + ", ".join(f"{x:.6f}" for x in row) + "]").encode() for row in p]
    tilt = np.linspace(0.7, 1.3, k)
    q = p.mean(axis=0) * tilt
    return pool, q / q.sum()


_LABELLED = b'{"ts": %d.%03d, "model": "%s", "id": "r-%d", "probs": %s, "label": %d}\n'
_UNLABELLED = b'{"ts": %d.%03d, "model": "%s", "id": "r-%d", "probs": %s}\n'


def generate(path: Path, n: int, k: int, *, models: int = 1, seed: int = 1, t0_ms: int = T0_MS,
             per_ms: int = 1, first_id: int = 0, mode: str = "wb", chunk: int = 100_000) -> int:
    """Writes `n` lines (`per_ms` lines per millisecond from `t0_ms`, 30% labelled, models
    m0..m{models-1} in turn, or "m" for one) in big chunks; deterministic for a seed.
    Returns the bytes written."""
    pool, q = probs_pool(k, seed)
    names = [b"m"] if models == 1 else [f"m{i}".encode() for i in range(models)]
    rng = np.random.default_rng(seed + 1000)
    written = 0
    with open(path, mode) as fh:
        for lo in range(0, n, chunk):
            m = min(chunk, n - lo)
            ids = np.arange(first_id + lo, first_id + lo + m)
            sec, msec = np.divmod(t0_ms + ids // per_ms, 1000)
            which = rng.integers(0, POOL, m)
            labels = rng.choice(k, size=m, p=q)
            has = rng.random(m) < LABELLED
            model = ids % len(names)
            data = b"".join([
                _LABELLED % (s, f, names[mi], i, pool[pi], lab) if h else
                _UNLABELLED % (s, f, names[mi], i, pool[pi])
                for s, f, mi, i, pi, lab, h in zip(sec.tolist(), msec.tolist(), model.tolist(),
                                                   ids.tolist(), which.tolist(), labels.tolist(),
                                                   has.tolist())])
            fh.write(data)
            written += len(data)
    return written


def budget_s(lines: int) -> float:
    """A bound for waiting on `lines` to be processed: generous (20,000 lines/s) yet finite."""
    return 60.0 + lines / 20_000


def now_ms() -> int:
    return int(time.time() * 1000)


# -- configs and processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(path: Path, config: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def one_model_config(log_glob: Path, k: int, state_dir: Path, **extra: object) -> dict:
    return {"state_dir": str(state_dir), **extra,
            "sources": [{"name": "bench", "path": str(log_glob), "model": "m"}],
            "models": {"m": {"classes": [f"c{i}" for i in range(k)], "windows": WINDOWS,
                             "min_samples": 100}}}


def many_models_config(log_glob: Path, state_dir: Path, k: int = 10, **extra: object) -> dict:
    return {"state_dir": str(state_dir), "max_models": 100, **extra,
            "sources": [{"name": "bench", "path": str(log_glob)}],
            "models": {"default": {"classes": [f"c{i}" for i in range(k)], "windows": WINDOWS,
                                   "min_samples": 1}}}


CHILDREN: list[subprocess.Popen] = []


def spawn(cmd: list[str], cpu: int, **kwargs: object) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, preexec_fn=pin(cpu), **kwargs)
    CHILDREN.append(proc)
    return proc


def kill_children() -> None:
    for proc in CHILDREN:
        if proc.returncode is None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


@dataclass
class Finished:
    returncode: int
    wall_s: float
    maxrss_kib: int
    cpu_s: float


def run_timed(cmd: list[str], cpu: int, timeout_s: float, stdout: object = subprocess.DEVNULL,
              stderr: object = subprocess.PIPE) -> Finished:
    """Runs `cmd` pinned to `cpu`; wall time from spawn to exit, peak RSS from wait4."""
    started = time.perf_counter()
    proc = spawn(cmd, cpu, stdout=stdout, stderr=stderr)
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        err = proc.stderr.read() if stderr is subprocess.PIPE else b""
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.stderr is not None:
        proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))}... exited {proc.returncode} "
                           f"after {wall:.1f}s: {err.decode(errors='replace')[-2000:]}")
    return Finished(proc.returncode, wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)


def proc_io(pid: int) -> tuple[int, int]:
    """(rchar, wchar): bytes the process has read and written through read/pread and
    write (the tailer's reads, the checkpoint's writes; sockets are not counted), i.e.
    how far the daemon has got through its logs, without asking it."""
    with open(f"/proc/{pid}/io") as fh:
        io = dict(line.split(":") for line in fh)
    return int(io["rchar"]), int(io["wchar"])


def proc_rchar(pid: int) -> int:
    return proc_io(pid)[0]


def proc_cpu_s(pid: int) -> float:
    """utime + stime of the process, threads that have exited included (clock ticks)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_threads_cpu_s(pid: int) -> float:
    """CPU time of the process's live threads at ns resolution (schedstat), for short
    samples where no thread comes or goes; utime + stime without schedstat."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        return total / 1e9
    except (OSError, ValueError):
        return proc_cpu_s(pid)


def proc_status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key}")


def get(url: str, timeout_s: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read()


def predictions_total(text: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == "model_drift_predictions_total")


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str,
               interval_s: float = 0.05) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(interval_s)


class Daemon:
    """`python -m monitor run` pinned to the core under test."""

    def __init__(self, folder: Path, config: dict, name: str = "daemon") -> None:
        self.folder = folder
        self.port = free_port()
        self.config = {"listen": f"127.0.0.1:{self.port}", **config}
        self.config_path = write_config(folder / f"{name}.yaml", self.config)
        self.stderr_path = folder / f"{name}.stderr"
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def launch(self) -> Daemon:
        with open(self.stderr_path, "ab") as stderr:
            self.proc = spawn([sys.executable, "-m", "monitor", "run", "--config",
                               str(self.config_path)], DUT_CPU, stdout=subprocess.DEVNULL,
                              stderr=stderr)
        return self

    def start(self, timeout_s: float = 60.0, interval_s: float = 0.02) -> Daemon:
        self.launch()
        wait_until(self.ready, timeout_s, "daemon ready", interval_s)
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log()[-2000:]}")
        try:
            return get(self.url + "/readyz", 2.0) == b"ok\n"
        except OSError:
            return False

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def metrics(self, timeout_s: float = 5.0) -> str:
        return get(self.url + "/metrics", timeout_s).decode()

    def count(self) -> float:
        return predictions_total(self.metrics())

    def wait_count(self, expected: float, timeout_s: float, interval_s: float = 0.1) -> float:
        """Seconds until /metrics shows `expected` predictions (bounded)."""
        started = time.monotonic()

        def done() -> bool:
            got = self.count()
            if got > expected:
                raise RuntimeError(f"daemon counted {got:.0f} predictions, only {expected} written")
            return got == expected

        wait_until(done, timeout_s, f"{expected} predictions in /metrics", interval_s)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@contextlib.contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    try:
        yield daemon.start()
    finally:
        daemon.stop()


@dataclass
class Ingested:
    seconds: float  # from the first read of the new log to its last
    pause_s: float  # longest time without a read, checkpoints aside
    checkpoint_pause_s: float  # longest time without a read around a checkpoint write


def ingest(daemon: Daemon, staged: Path, target: Path, nbytes: int, timeout_s: float,
           interval_s: float = 0.002) -> Ingested:
    """Renames a finished log into the daemon's glob and follows the daemon through
    /proc/<pid>/io: reads run at most one 1 MiB block ahead of aggregation, and a gap
    between reads during which the process wrote a file is a checkpoint."""
    base, _ = proc_io(daemon.pid)
    os.rename(staged, target)
    samples = []
    deadline = time.monotonic() + timeout_s
    while True:
        rchar, wchar = proc_io(daemon.pid)
        now = time.monotonic()
        samples.append((now, rchar - base, wchar))
        if rchar - base >= nbytes:
            break
        if now > deadline:
            raise TimeoutError(f"daemon read {rchar - base} of {nbytes} bytes within {timeout_s:.0f}s")
        time.sleep(interval_s)
    first = next(i for i, (_, done, _) in enumerate(samples) if done > 0)
    moving = samples[max(first - 1, 0):]
    reads = [moving[0]] + [b for a, b in pairwise(moving) if b[1] > a[1]]
    pause = checkpoint_pause = 0.0
    for (t0, _, w0), (t1, _, w1) in pairwise(reads):
        if w1 > w0:
            checkpoint_pause = max(checkpoint_pause, t1 - t0)
        else:
            pause = max(pause, t1 - t0)
    return Ingested(samples[-1][0] - moving[0][0], pause, checkpoint_pause)


# -- internal subcommands (run pinned, in child processes) -----------------------------------


def baseline_naive(path: str, k: int) -> dict:
    """What a data scientist would write: pandas to load, numpy to window, scipy for KL."""
    import pandas as pd
    from scipy.stats import entropy

    started = time.perf_counter()
    df = pd.read_json(path, lines=True)
    probs = np.array(df["probs"].tolist(), dtype=float)
    ts = df["ts"].to_numpy(dtype=float)
    labels = df["label"].dropna().to_numpy(dtype=int)
    a = np.bincount(labels, minlength=k).astype(float)
    newest = ts.max()
    windows = {"5m": ts > newest - 300, "1h": ts > newest - 3600,
               "count:10000": np.arange(len(ts)) >= len(ts) - 10000}
    out = {}
    for name, mask in windows.items():
        b = probs[mask].mean(axis=0)
        kl = float(entropy(a, b))
        out[name] = {"kl": kl, "cross_entropy": kl + float(entropy(a))}
    return {"seconds": time.perf_counter() - started, "lines": len(df), "windows": out}


def baseline_floor(path: str) -> dict:
    """The floor: parse each line with the standard library, nothing else."""
    started = time.perf_counter()
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            json.loads(line)
            n += 1
    return {"seconds": time.perf_counter() - started, "lines": n}


def writer(src: str, dst: str, rate_lps: int, seconds: float, record: str) -> None:
    """Appends src's lines to dst at `rate_lps`, one batch every 10 ms, and records
    (monotonic time after the write, lines written so far) per batch."""
    data = Path(src).read_bytes()
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
    total = min(len(ends), int(rate_lps * seconds))
    batches = max(1, int(seconds / 0.01))
    marks: list[tuple[float, int]] = []
    fd = os.open(dst, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        done = 0
        for i in range(1, batches + 1):
            due = start + i * 0.01
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            upto = total * i // batches
            if upto > done:
                lo = int(ends[done - 1]) if done else 0
                view = memoryview(data)[lo:int(ends[upto - 1])]
                while view:
                    view = view[os.write(fd, view):]
                done = upto
                marks.append((time.monotonic(), done))
    finally:
        os.close(fd)
    Path(record).write_text(json.dumps({"marks": marks, "elapsed": time.monotonic() - start}))


def checkpoint_probe(config_path: str, repeats: int = 5) -> dict:
    """Loads the config's logs in-process the way the daemon does (its Reader and
    Aggregator, wall clock), then times the daemon's own checkpoint step, which the main
    loop waits for: aggregator state -> durable file (fsync, rename) -> the snapshot that
    republishes /metrics (timed apart). Then a fresh daemon's restore of that file."""
    from monitor.shell.config import load_config
    from monitor.shell.daemon import Daemon, Reader

    config = load_config(config_path)
    assert config.state_dir is not None
    os.makedirs(config.state_dir, exist_ok=True)
    daemon = Daemon(config, None)
    daemon.reader = Reader(config, daemon.aggregator)
    started = time.perf_counter()
    while daemon.reader.step(time.time()):
        pass
    load_s = time.perf_counter() - started
    lines = sum(sum(c.lines.values()) for c in daemon.aggregator.counters.values())
    snapshot = daemon.aggregator.snapshot
    snapshots: list[float] = []

    def timed_snapshot() -> object:
        t = time.perf_counter()
        try:
            return snapshot()
        finally:
            snapshots.append(time.perf_counter() - t)

    daemon.aggregator.snapshot = timed_snapshot  # type: ignore[method-assign]
    steps = []
    for _ in range(repeats):
        t = time.perf_counter()
        daemon._write_checkpoint()
        steps.append(time.perf_counter() - t)
    writes = [step - snap for step, snap in zip(steps, snapshots)]
    size = os.path.getsize(daemon.path)
    daemon.reader.close()
    fresh = Daemon(config, None)
    t = time.perf_counter()
    fresh._restore()
    restore_s = time.perf_counter() - t
    return {"lines": lines, "load_s": load_s, "write_s": writes, "snapshot_s": snapshots,
            "bytes": size, "restore_s": restore_s,
            "rss_kib": proc_status_kib(os.getpid(), "VmHWM")}


def child(argv: list[str]) -> int:
    """The internal subcommands: print one JSON object on stdout."""
    kind = argv[0]
    if kind == "--baseline" and argv[1] == "naive":
        out = baseline_naive(argv[2], int(argv[3]))
    elif kind == "--baseline" and argv[1] == "floor":
        out = baseline_floor(argv[2])
    elif kind == "--writer":
        writer(argv[1], argv[2], int(argv[3]), float(argv[4]), argv[5])
        return 0
    elif kind == "--checkpoint-probe":
        out = checkpoint_probe(argv[1])
    else:
        print(f"unknown internal subcommand {argv}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout)
    return 0


def run_child(args: list[str], timeout_s: float, cpu: int = DUT_CPU) -> dict:
    with tempfile.TemporaryFile() as out:
        run_timed([sys.executable, str(SCRIPT), *args], cpu, timeout_s, stdout=out)
        out.seek(0)
        return json.loads(out.read())


# -- the measurements ------------------------------------------------------------------------


def bench_replay(work: Path, sizes: Sizes, table: Table) -> dict[int, float]:
    """Replay per K (best of N, start-up netted out), then the naive and floor baselines
    on the same file, and a check that naive and replay agree on KL(1h)."""
    replay_rates: dict[int, float] = {}
    targets = {2: 1_000_000, 10: 600_000, 100: 150_000}
    for k, n in sizes.replay.items():
        folder = work / f"replay-k{k}"
        folder.mkdir()
        log = folder / "log.jsonl"
        t = time.perf_counter()
        nbytes = generate(log, n, k, seed=k)
        note(f"K={k}: generated {n:,} lines, {nbytes / 2**20:,.0f} MiB in "
             f"{time.perf_counter() - t:.1f}s")
        (folder / "empty").mkdir()
        (folder / "empty" / "log.jsonl").touch()
        config = write_config(folder / "config.yaml",
                              one_model_config(log, k, folder / "state"))
        empty = write_config(folder / "empty.yaml",
                             one_model_config(folder / "empty" / "log.jsonl", k, folder / "state"))
        cmd = [sys.executable, "-m", "monitor", "replay", "--json", "--config"]
        startup = min(run_timed([*cmd, str(empty)], DUT_CPU, 60).wall_s for _ in range(3))
        walls = []
        for _ in range(sizes.repeats):
            with open(folder / "replay.json", "wb") as out:
                walls.append(run_timed([*cmd, str(config)], DUT_CPU, budget_s(n),
                                       stdout=out).wall_s)
        wall = min(walls)
        table.add(f"replay K={k}, {n:,} lines (wall, best of {sizes.repeats})", rate(n, wall))
        # On a small log the difference is mostly timing noise; ratios of a replay
        # dominated by start-up to baselines timed without theirs are shown, not judged.
        judged = wall - startup >= 0.25 * wall
        if judged:
            net = wall - startup
            table.add(f"replay K={k} net of start-up ({ms(startup)})", rate(n, net),
                      f">= {targets[k]:,} lines/s", n / net >= targets[k])
        else:
            net = wall
            table.add(f"replay K={k} net of start-up ({ms(startup)})",
                      "n/a (start-up dominates; ratios below use wall time)",
                      f">= {targets[k]:,} lines/s", "n/a")
        replay_rates[k] = n / net

        floor_s = min(run_child(["--baseline", "floor", str(log)], budget_s(n))["seconds"]
                      for _ in range(sizes.repeats))
        missing = [m for m in ("pandas", "scipy") if importlib.util.find_spec(m) is None]
        if missing:
            why = f"SKIPPED: {', '.join(missing)} not installed (pip install -e '.[bench]')"
            table.add(f"naive pandas+scipy K={k}", why, "", "SKIPPED")
        else:
            naive = [run_child(["--baseline", "naive", str(log), str(k)], budget_s(n))
                     for _ in range(sizes.repeats)]
            naive_s = min(r["seconds"] for r in naive)
            if naive[0]["lines"] != n:
                raise RuntimeError(f"pandas read {naive[0]['lines']} lines of {n}")
            table.add(f"naive pandas+scipy K={k}", rate(n, naive_s))
        table.add(f"stdlib json.loads floor K={k}", rate(n, floor_s))
        if not missing:
            table.add(f"replay / naive K={k}", f"{naive_s / net:,.1f}x", ">= 8x",
                      naive_s / net >= 8 if judged else "n/a")
        table.add(f"replay / floor K={k}", f"{floor_s / net:,.2f}x", "> 1x",
                  floor_s / net > 1 if judged else "n/a")
        if not missing:
            replayed = json.loads((folder / "replay.json").read_text())
            ours = {s["labels"]["window"]: s["value"] for s in replayed["metrics"]
                    if s["name"] == "model_drift_kl_divergence"}
            diff = abs(ours.get("1h", math.nan) - naive[0]["windows"]["1h"]["kl"])
            table.add(f"KL(1h) replay vs naive K={k}",
                      "values agree" if diff <= 1e-6 else f"DIFFER by {diff:.3g}",
                      "agree to 1e-6", diff <= 1e-6)
        shutil.rmtree(folder)
    return replay_rates


def bench_lag(work: Path, sizes: Sizes, table: Table) -> None:
    """Live daemon (K=2, 1 model) with a writer appending at a fixed rate; lag of each
    batch = first /metrics scrape showing its lines minus its write time."""
    folder = work / "lag"
    folder.mkdir()
    total = int(sizes.lag_rate * sizes.lag_seconds)
    source = folder / "source.jsonl"
    # Event times advance with the wall clock as the writer goes: live windows.
    generate(source, total, 2, seed=7, t0_ms=now_ms() + 1000,
             per_ms=max(1, sizes.lag_rate // 1000))
    log = folder / "live.jsonl"
    log.touch()
    daemon = Daemon(folder, one_model_config(log, 2, folder / "state", checkpoint_interval="1s",
                                             poll_interval="1s"))
    record = folder / "marks.json"
    scrapes: list[tuple[float, float]] = []
    with running(daemon):
        writer_proc = spawn([sys.executable, str(SCRIPT), "--writer", str(source), str(log),
                             str(sizes.lag_rate), str(sizes.lag_seconds), str(record)], LOAD_CPU)
        deadline = time.monotonic() + sizes.lag_seconds + 60
        count = 0.0
        while time.monotonic() < deadline:
            t_before = time.monotonic()
            count = predictions_total(daemon.metrics())
            scrapes.append((time.monotonic(), count))
            if count >= total:
                break
            time.sleep(max(0.0, 0.05 - (time.monotonic() - t_before)))
        writer_proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    if writer_proc.returncode != 0:
        raise RuntimeError(f"writer exited {writer_proc.returncode}")
    marks = json.loads(record.read_text())
    elapsed = marks["elapsed"]
    lags = []
    counts = [c for _, c in scrapes]
    for t_write, cumulative in marks["marks"]:
        i = bisect_left(counts, cumulative)
        lags.append(scrapes[i][0] - t_write if i < len(scrapes) else math.inf)
    lags.sort()
    p50 = lags[len(lags) // 2]
    p99 = lags[min(len(lags) - 1, math.ceil(0.99 * len(lags)) - 1)]
    kept_up = count >= total
    achieved = total / elapsed
    table.add(f"live writer ({sizes.lag_rate:,} lines/s for {sizes.lag_seconds:g}s)",
              f"{total:,} lines in {elapsed:.2f}s ({achieved:,.0f} lines/s achieved)",
              f"{sizes.lag_rate:,} lines/s", achieved >= 0.95 * sizes.lag_rate)
    table.add("live lag write -> /metrics (p50 / p99 / max)",
              f"{p50:.2f} / {p99:.2f} / {lags[-1]:.2f} s", "p99 < 2 s", p99 < 2.0)
    table.add("live daemon kept up (final count == written)",
              f"{count:,.0f} of {total:,}", "all", kept_up)
    shutil.rmtree(folder)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def bench_scrape(work: Path, sizes: Sizes, table: Table) -> None:
    """100 models x 3 windows x 10 classes: /metrics latency at rest, then ingestion of
    a log with and without a client scraping in a tight loop."""
    folder = work / "scrape"
    (folder / "logs").mkdir(parents=True)
    # Event times: 10 lines per ms ending about now, so every window holds data.
    start_ms = now_ms() - (sizes.scrape_lines + 2 * sizes.scrape_feed) // LIVE_PER_MS
    generate(folder / "logs" / "a.jsonl", sizes.scrape_lines, 10, models=100, seed=11,
             t0_ms=start_ms, per_ms=LIVE_PER_MS)
    feeds = []
    for i, name in enumerate(("b", "c")):
        first = sizes.scrape_lines + i * sizes.scrape_feed
        staged = folder / f"{name}.staged"
        nbytes = generate(staged, sizes.scrape_feed, 10, models=100, seed=12 + i,
                          t0_ms=start_ms, per_ms=LIVE_PER_MS, first_id=first)
        feeds.append((staged, folder / "logs" / f"{name}.jsonl", nbytes))
    daemon = Daemon(folder, many_models_config(folder / "logs" / "*.jsonl", folder / "state",
                                               checkpoint_interval="1s", poll_interval="1s"))
    with running(daemon):
        daemon.wait_count(sizes.scrape_lines, budget_s(sizes.scrape_lines))
        body = get(daemon.url + "/metrics")
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        kl_series = body.count(b"\nmodel_drift_kl_divergence{")
        times = []
        cpu0 = proc_cpu_s(daemon.pid)
        for _ in range(sizes.scrape_gets):
            t = time.perf_counter()
            get(daemon.url + "/metrics")
            times.append(time.perf_counter() - t)
        cpu_per_scrape = (proc_cpu_s(daemon.pid) - cpu0) / sizes.scrape_gets
        p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
        table.add("/metrics size, 100 models x 3 windows x 10 classes",
                  f"{len(body) / 1024:,.0f} KiB, {series:,} samples ({kl_series} KL series)")
        table.add(f"/metrics latency at rest, {sizes.scrape_gets} GETs (p50 / p99 / max)",
                  f"{ms(p50)} / {ms(p99)} / {ms(max(times))}", "< 50 ms", max(times) < 0.05)
        table.add("daemon CPU per scrape", ms(cpu_per_scrape))

        quiet = ingest(daemon, *feeds[0], timeout_s=budget_s(sizes.scrape_feed))
        expected = sizes.scrape_lines + sizes.scrape_feed
        daemon.wait_count(expected, 60)
        stop = threading.Event()
        busy: list[float] = []

        def hammer() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    get(daemon.url + "/metrics", 10)
                except OSError:
                    continue
                busy.append(time.perf_counter() - t)

        client = threading.Thread(target=hammer, daemon=True)
        client.start()
        try:
            loud = ingest(daemon, *feeds[1], timeout_s=budget_s(sizes.scrape_feed))
        finally:
            stop.set()
            client.join(timeout=15)
        daemon.wait_count(expected + sizes.scrape_feed, 60)
    n = sizes.scrape_feed
    table.add("ingest 100 models K=10, nobody scraping", rate(n, quiet.seconds))
    table.add(f"ingest while scraping in a tight loop ({len(busy)} scrapes)",
              f"{rate(n, loud.seconds)} ({quiet.seconds / loud.seconds:.0%} of quiet)")
    table.add("/metrics latency during ingestion (p50 / p99 / max)",
              f"{ms(percentile(busy, 0.5))} / {ms(percentile(busy, 0.99))} / {ms(max(busy))}"
              if busy else "no scrape finished", "< 50 ms", bool(busy) and max(busy) < 0.05)
    extra = loud.pause_s - quiet.pause_s
    table.add("longest gap between block reads, quiet / scraping (checkpoints aside)",
              f"{ms(quiet.pause_s)} / {ms(loud.pause_s)}")
    table.add("longest stall added by scraping (gap scraping - gap quiet)", ms(extra),
              "< 50 ms", extra < 0.05)
    table.add("longest pause around a checkpoint write, quiet / scraping",
              f"{ms(quiet.checkpoint_pause_s)} / {ms(loud.checkpoint_pause_s)}")
    shutil.rmtree(folder)


def bench_memory(work: Path, sizes: Sizes, table: Table) -> dict[int, float]:
    """Peak RSS of replay over 100 models x 10 classes x 3 windows, at two log sizes."""
    folder = work / "memory"
    folder.mkdir()
    small, big = sizes.memory
    need = big * BIG_FILE_BYTES_PER_LINE * 1.1
    free = shutil.disk_usage(folder).free
    results: dict[int, tuple[int, float]] = {}
    rates: dict[int, float] = {}
    cmd = [sys.executable, "-m", "monitor", "replay", "--json", "--config"]
    (folder / "empty.jsonl").touch()
    empty = write_config(folder / "empty.yaml",
                         many_models_config(folder / "empty.jsonl", folder / "state"))
    startup = min(run_timed([*cmd, str(empty)], DUT_CPU, 60).wall_s for _ in range(3))
    for n in (small, big):
        if free < need:
            table.add(f"replay peak RSS, {n:,} lines", "SKIPPED",
                      "< 150 MiB", f"SKIPPED: {free / 2**30:.1f} GiB free, need {need / 2**30:.1f}")
            continue
        log = folder / "log.jsonl"
        t = time.perf_counter()
        nbytes = generate(log, n, 10, models=100, seed=21)
        note(f"memory: generated {n:,} lines, {nbytes / 2**20:,.0f} MiB in "
             f"{time.perf_counter() - t:.1f}s")
        config = write_config(folder / "config.yaml", many_models_config(log, folder / "state"))
        done = run_timed([*cmd, str(config)], DUT_CPU, budget_s(n))
        log.unlink()
        results[n] = (done.maxrss_kib, done.wall_s)
        net = done.wall_s - startup if done.wall_s - startup >= 0.25 * done.wall_s else done.wall_s
        rates[n] = n / net
        table.add(f"replay peak RSS, 100 models x 10 classes, {n:,} lines",
                  f"{mib(done.maxrss_kib)} ({rate(n, net)} net of start-up)", "< 150 MiB",
                  done.maxrss_kib < 150 * 1024)
    if len(results) == 2:
        growth = results[big][0] / results[small][0] - 1
        table.add(f"RSS growth {small:,} -> {big:,} lines", f"{growth:+.1%}", "within 5%",
                  abs(growth) <= 0.05)
    shutil.rmtree(folder)
    return rates


def bench_idle(work: Path, sizes: Sizes, table: Table) -> None:
    """A glob matching many files that never change: CPU of the caught-up daemon."""
    folder = work / "idle"
    (folder / "logs").mkdir(parents=True)
    stamp = now_ms()
    for i in range(sizes.idle_files):
        generate(folder / "logs" / f"f{i:04d}.jsonl", 1, 2, seed=31, t0_ms=stamp, first_id=i)
    daemon = Daemon(folder, one_model_config(folder / "logs" / "*.jsonl", 2, folder / "state",
                                             checkpoint_interval="1s", poll_interval="1s"))
    with running(daemon):
        daemon.wait_count(sizes.idle_files, 120, 0.2)
        time.sleep(2.0)  # the last checkpoint after catching up
        fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        c0, t0 = proc_threads_cpu_s(daemon.pid), time.monotonic()
        threads0 = set(os.listdir(f"/proc/{daemon.pid}/task"))
        time.sleep(sizes.idle_seconds)
        c1, t1 = proc_threads_cpu_s(daemon.pid), time.monotonic()
        if set(os.listdir(f"/proc/{daemon.pid}/task")) != threads0:
            raise RuntimeError("threads came and went while idle: schedstat sums do not hold")
        rss = proc_status_kib(daemon.pid, "VmRSS")
    share = (c1 - c0) / (t1 - t0)
    table.add(f"idle CPU, {sizes.idle_files:,} watched files, {sizes.idle_seconds:g}s",
              f"{share:.2%} of a core ({fds:,} fds open, RSS {mib(rss)})", "< 1%", share < 0.01)
    shutil.rmtree(folder)


def bench_checkpoint(work: Path, sizes: Sizes, table: Table, replay_rate: float | None) -> None:
    """Checkpoint cost on the 100-model state, then a kill -9 + restart on a backlog."""
    folder = work / "checkpoint"
    (folder / "logs").mkdir(parents=True)
    n = sizes.memory[0]
    log = folder / "logs" / "log.jsonl"
    generate(log, n, 10, models=100, seed=41, t0_ms=now_ms() - n // LIVE_PER_MS,
             per_ms=LIVE_PER_MS)
    config = write_config(folder / "probe.yaml",
                          many_models_config(log, folder / "probe-state"))
    probe = run_child(["--checkpoint-probe", str(config)], budget_s(n))
    write_med = statistics.median(probe["write_s"])
    snap_med = statistics.median(probe["snapshot_s"])
    table.add(f"checkpoint write, 100 models x 10 classes x 3 windows (median of "
              f"{len(probe['write_s'])})", f"{ms(write_med)} ({probe['bytes'] / 1e6:,.1f} MB)",
              "< 50 ms", write_med < 0.05)
    table.add("snapshot for /metrics after each checkpoint (median)", ms(snap_med))
    table.add("checkpoint restore at start-up (read, verify, load)", ms(probe["restore_s"]))
    log.unlink()

    # kill -9 and restart with a backlog: resumes from the checkpoint at replay speed?
    first, backlog = sizes.restart_initial, sizes.restart_backlog
    start_ms = now_ms() - (first + backlog) // LIVE_PER_MS
    generate(log, first, 10, models=100, seed=42, t0_ms=start_ms, per_ms=LIVE_PER_MS)
    daemon = Daemon(folder, many_models_config(folder / "logs" / "*.jsonl", folder / "state",
                                               checkpoint_interval="1s", poll_interval="1s"))
    with running(daemon):
        daemon.wait_count(first, budget_s(first))  # /metrics is never ahead of the checkpoint
        daemon.kill()
    staged = folder / "backlog.staged"
    generate(staged, backlog, 10, models=100, seed=43, t0_ms=start_ms, per_ms=LIVE_PER_MS,
             first_id=first)
    with open(log, "ab") as out, open(staged, "rb") as src:
        shutil.copyfileobj(src, out, 16 << 20)
    staged.unlink()
    expected = first + backlog
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        daemon.launch()
        stack.callback(daemon.stop)
        # The loop reads only once /readyz answers (state restored, server up): the
        # catch-up runs from just before the first 200 to the last block read, found
        # in /proc/<pid>/io once reads have stopped and /metrics shows every line.
        ready_at = started
        while not daemon.ready():
            ready_at = time.monotonic()
            if ready_at - started > 120:
                raise TimeoutError("daemon not ready within 120s of its restart")
            time.sleep(0.005)
        last_read, seen, checked = ready_at, proc_rchar(daemon.pid), 0.0
        deadline = ready_at + budget_s(backlog)
        while True:
            time.sleep(0.002)
            now, rchar = time.monotonic(), proc_rchar(daemon.pid)
            if rchar - seen >= 4096:  # a block of the log, not a 1 KiB identity peek
                last_read = now
            seen = rchar
            if now - last_read >= 1.5 and now - checked >= 0.5:
                checked = now
                if daemon.count() == expected:
                    break
            if now > deadline:
                raise TimeoutError(f"restart catch-up of {backlog:,} lines not within "
                                   f"{budget_s(backlog):.0f}s")
        catch_up_s = last_read - ready_at
        ready_s = ready_at - started
        total_s = last_read - started
        rss = proc_status_kib(daemon.pid, "VmRSS")
        hwm = proc_status_kib(daemon.pid, "VmHWM")
    versus = f", {backlog / catch_up_s / replay_rate:.0%} of replay" if replay_rate else ""
    table.add(f"restart after kill -9: {backlog:,}-line backlog catch-up",
              f"{rate(backlog, catch_up_s)}{versus}", "~ replay speed",
              backlog / catch_up_s >= 0.8 * replay_rate if replay_rate else None)
    table.add("restart: ready / caught up, from spawn (exactly once)",
              f"{ms(ready_s)} / {total_s:.2f} s ({expected:,} counted of {expected:,})")
    table.add("daemon RSS after restart catch-up, 100 models x 10 classes (now / peak)",
              f"{mib(rss)} / {mib(hwm)}", "< 150 MiB", hwm < 150 * 1024)
    shutil.rmtree(folder)


# -- main ------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")),
                   cpu)
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for name in ("numpy", "msgspec", "pysimdjson", "pandas", "scipy"):
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name} missing")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    spec = importlib.util.find_spec("monitor")
    where = os.path.dirname(spec.origin) if spec and spec.origin else "?"
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "."],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        source = f"git {commit}" + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        source = "not a git checkout"
    return (f"Machine: {cpu}, {os.cpu_count()} cores (under test on CPU {DUT_CPU}, load on "
            f"CPU {LOAD_CPU}), Linux {platform.release()}, Python {platform.python_version()}, "
            + ", ".join(versions) + f"\nCode: monitor from {where} ({source}); "
            f"load average {load} at start")


SECTIONS = ("replay", "lag", "scrape", "memory", "idle", "checkpoint")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("--baseline", "--writer", "--checkpoint-probe"):
        return child(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (the smoke test)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections: {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    sizes = QUICK if args.quick else FULL
    os.sched_setaffinity(0, {LOAD_CPU})
    # SIGTERM (a timeout upstream) unwinds like Ctrl-C: children killed, temp dir removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    table = Table()
    header = machine()
    note(header)
    replay_rate = None
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    try:
        for name in only:
            note(f"== {name}")
            t = time.monotonic()
            try:
                if name == "replay":
                    bench_replay(work, sizes, table)
                elif name == "lag":
                    bench_lag(work, sizes, table)
                elif name == "scrape":
                    bench_scrape(work, sizes, table)
                elif name == "memory":
                    rates = bench_memory(work, sizes, table)
                    replay_rate = rates.get(sizes.memory[0])
                elif name == "idle":
                    bench_idle(work, sizes, table)
                elif name == "checkpoint":
                    bench_checkpoint(work, sizes, table, replay_rate)
            except Exception as exc:
                traceback.print_exc()
                table.errors.append(f"{name}: {exc}")
                table.add(f"{name}", f"ERROR: {str(exc).splitlines()[0][:200]}", "", False)
            finally:
                kill_children()
            note(f"   {name} took {time.monotonic() - t:.1f}s")
    finally:
        kill_children()
        shutil.rmtree(work, ignore_errors=True)
    mode = "quick" if args.quick else "full"
    print(header)
    print(f"Mode: {mode}, {time.monotonic() - started:.0f}s in all.\n")
    print(table.markdown())
    return 1 if table.errors else 0


if __name__ == "__main__":
    sys.exit(main())
