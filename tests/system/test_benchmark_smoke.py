"""The benchmark keeps working: `benchmarks/throughput.py --quick` runs end to end and
prints every row of its table with a number in it. Speed is never asserted here (the
benchmark's own table says whether a target is met); only that it measures."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "throughput.py"
TIMEOUT_S = 300

# Row (its measurement starts with this) -> a pattern its result must contain.
NUMBER = r"\d[\d,]*(\.\d+)?"
ROWS = {
    "replay K=2,": rf"{NUMBER} lines/s",
    "replay K=10,": rf"{NUMBER} lines/s",
    "replay K=100,": rf"{NUMBER} lines/s",
    "stdlib json.loads floor K=2": rf"{NUMBER} lines/s",
    "stdlib json.loads floor K=10": rf"{NUMBER} lines/s",
    "stdlib json.loads floor K=100": rf"{NUMBER} lines/s",
    "replay / floor K=2": rf"{NUMBER}x",
    "live lag write -> /metrics": rf"{NUMBER} / {NUMBER} / {NUMBER} s",
    "live daemon kept up": rf"{NUMBER} of {NUMBER}",
    "/metrics latency at rest": rf"{NUMBER} ms / {NUMBER} ms / {NUMBER} ms",
    "/metrics latency during ingestion": rf"{NUMBER} ms",
    "ingest 100 models K=10, nobody scraping": rf"{NUMBER} lines/s",
    "ingest while scraping": rf"{NUMBER} lines/s",
    "replay peak RSS, 100 models x 10 classes, 20,000 lines": rf"{NUMBER} MiB",
    "replay peak RSS, 100 models x 10 classes, 200,000 lines": rf"{NUMBER} MiB",
    "RSS growth": rf"[+-]{NUMBER}%",
    "idle CPU": rf"{NUMBER}% of a core",
    "checkpoint write": rf"{NUMBER} ms \({NUMBER} MB\)",
    "restart after kill -9": rf"{NUMBER} lines/s",
}
NAIVE_ROWS = {
    "naive pandas+scipy K=2": rf"{NUMBER} lines/s",
    "naive pandas+scipy K=10": rf"{NUMBER} lines/s",
    "naive pandas+scipy K=100": rf"{NUMBER} lines/s",
    "replay / naive K=2": rf"{NUMBER}x",
    "KL(1h) replay vs naive K=2": r"values agree",
}


def table_rows(output: str) -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] != "measurement":
            rows[cells[0]] = (cells[1], cells[2], cells[3])
    return rows


def run_quick() -> subprocess.CompletedProcess:
    """Own session, so a timeout kills the benchmark's daemons too, not just the script."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--quick"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"benchmark --quick did not finish within {TIMEOUT_S}s:\n{err[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_quick_benchmark_prints_every_measurement():
    done = run_quick()
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    assert done.stdout.startswith("Machine: "), done.stdout[:500]
    rows = table_rows(done.stdout)
    assert rows, done.stdout
    assert not [m for m, (result, _, _) in rows.items() if "ERROR" in result], done.stdout
    wanted = dict(ROWS)
    if all(importlib.util.find_spec(m) for m in ("pandas", "scipy")):
        wanted.update(NAIVE_ROWS)
    for prefix, pattern in wanted.items():
        matching = [(m, r) for m, r in rows.items() if m.startswith(prefix)]
        assert matching, f"no row starting {prefix!r} in:\n{done.stdout}"
        measurement, (result, _, _) = matching[0]
        assert re.search(pattern, result), f"{measurement}: {result!r} lacks {pattern!r}"
