"""What every benchmark section shares: sizes, the result table, log generation,
configs, pinned child processes and what /proc says about them. The daemon wrapper,
waits and metric parsing come from tests/harness.py, shared with the tests."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from tests.harness import DaemonProcess, total
from tests.waiting import wait_until

WINDOWS: list = ["5m", "1h", {"count": 10000}]
T0_MS = 1_795_000_000_000  # 2026-11-18: replay files have fixed, reproducible times
LABELLED = 0.3
POOL = 4096  # pre-formatted probability vectors per K
SCRIPT = Path(__file__).resolve().parent / "throughput.py"  # runs the internal subcommands
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
        ns = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                ns += int(fh.read().split()[0])
        return ns / 1e9
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



# -- the daemon under test -------------------------------------------------------------------


def pinned_daemon(folder: Path, config: dict) -> DaemonProcess:
    """`python -m monitor run` pinned to the core under test."""
    return DaemonProcess(folder, config, preexec_fn=pin(DUT_CPU))


def count(daemon: DaemonProcess) -> float:
    """Predictions counted so far, all models, as /metrics shows them."""
    return total(daemon.scrape(), "model_drift_predictions_total")


def wait_count(daemon: DaemonProcess, expected: float, timeout_s: float,
               interval_s: float = 0.1) -> float:
    """Seconds until /metrics shows `expected` predictions (bounded)."""
    started = time.monotonic()

    def done() -> bool:
        got = count(daemon)
        if got > expected:
            raise RuntimeError(f"daemon counted {got:.0f} predictions, only {expected} written")
        return got == expected

    wait_until(done, timeout_s, interval_s, what=f"{expected} predictions in /metrics")
    return time.monotonic() - started


@contextlib.contextmanager
def running(daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    try:
        yield daemon.start(timeout_s=60, interval_s=0.02)
    finally:
        daemon.stop()


@dataclass
class Ingested:
    seconds: float  # from the first read of the new log to its last
    pause_s: float  # longest time without a read, checkpoints aside
    checkpoint_pause_s: float  # longest time without a read around a checkpoint write


def ingest(daemon: DaemonProcess, staged: Path, target: Path, nbytes: int, timeout_s: float,
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



def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]



def run_child(args: list[str], timeout_s: float, cpu: int = DUT_CPU) -> dict:
    with tempfile.TemporaryFile() as out:
        run_timed([sys.executable, str(SCRIPT), *args], cpu, timeout_s, stdout=out)
        out.seek(0)
        return json.loads(out.read())


