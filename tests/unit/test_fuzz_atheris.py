"""Coverage-guided fuzzing of the line parsers with atheris (libFuzzer), a bounded run.

Hypothesis (test_fuzz_parse.py) explores what we thought of; atheris mutates bytes
towards new branches of parse.py and decode.py. The same properties: nothing raises,
both paths agree, every line is accounted for once, what is accepted is a distribution.
atheris is the `fuzz` extra (`pip install -e '.[fuzz]'`); without it this test skips.
Run longer by hand: `python tests/unit/test_fuzz_atheris.py -max_total_time=600`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNS = 30_000
SEEDS = [
    b'{"ts": 1795514400.5, "model": "fraud", "id": "r-1", "probs": [0.2, 0.8], "label": 1}\n'
    b'{"ts": "2026-11-24T10:00:00.123Z", "model": "three", "probs": [0.2, 0.3, 0.5], "label": "c"}\n',
    b'{"probs": {"legit": 0.4, "fraud": 0.6}, "label": "legit", "id": 81}\n{"prediction": 1}\n',
    b'{"id": "r-1", "label": 1, "ts": 1795514400}\n',
]


@pytest.mark.slow
def test_atheris_finds_no_line_that_raises_or_is_miscounted(tmp_path):
    pytest.importorskip("atheris", reason="atheris is not installed (pip install -e '.[fuzz]')")
    # Seeds: a valid block of each shape, for the mutations to start from.
    for i, seed in enumerate(SEEDS):
        (tmp_path / f"seed{i}").write_bytes(seed)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, __file__, f"-runs={RUNS}", "-max_len=4096", "-seed=1", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    assert f"Done {RUNS} runs" in result.stderr


def main() -> None:
    import atheris

    with atheris.instrument_imports():
        from monitor.core import decode, parse  # noqa: F401  (instrumented for coverage)
    from monitor.core.parse import parse_labels
    from tests.unit.test_fuzz_parse import CATALOG, FIELDS, NOW, accounted, both_paths, check_rows

    def one_input(data: bytes) -> None:
        block = data if data.endswith(b"\n") else data + b"\n"
        n = block.count(b"\n")
        fast, _ = both_paths(block, n)
        accounted(fast, n)
        check_rows(fast)
        labels = parse_labels(block, FIELDS, "fraud", CATALOG, NOW)
        assert len(labels.labels.index) + len(labels.rejects) + labels.blank == n

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
