"""BentoML schema files, read next to each data folder (`<monitor>/schema/schema.*.log`
beside `<monitor>/data/data.*.log`). Shell: it reads files; formats.py parses them.

BentoML writes a monitor's schema before its first data line, and again when the service
restarts (possibly with other columns), so a folder's answer is re-read whenever one of
its schema files changes (a stat per block, no read).
"""

from __future__ import annotations

import glob
import os

from monitor.core.formats import Columns, schema_columns

Stamp = tuple[tuple[str, int, int, int], ...]  # (path, inode, size, mtime_ns) of each file


class Schemas:
    """Not thread-safe: the daemon's main thread owns it."""

    def __init__(self) -> None:
        self.cache: dict[str, tuple[Stamp, Columns]] = {}

    def columns(self, data_path: str) -> Columns:
        """What the schema next to the data file `data_path` says (empty when none)."""
        folder = os.path.join(os.path.dirname(os.path.dirname(data_path)), "schema")
        paths = sorted(glob.glob(os.path.join(glob.escape(folder), "schema.*.log*")))
        stamp = tuple(_stamp(p) for p in paths)
        cached = self.cache.get(folder)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        found = Columns()
        # The newest schema wins: rotated-away copies (schema.0.log.1) are older.
        for _, path in sorted((mtime, path) for path, _, _, mtime in stamp):
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    columns = schema_columns(fh.read())
            except OSError:
                continue
            if columns != Columns():
                found = columns
        self.cache[folder] = (stamp, found)
        return found


def _stamp(path: str) -> tuple[str, int, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (path, 0, -1, 0)
    return (path, st.st_ino, st.st_size, st.st_mtime_ns)
