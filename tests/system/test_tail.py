"""The tailer on real files with an injected clock: dormant files, odd glob matches."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
from pathlib import Path

from monitor.tail import DORMANT_AFTER_S, Tailer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def lines_of(tailer: Tailer) -> list[bytes]:
    return [line for block in tailer.poll(1 << 30) for line in block.data.splitlines()]


def test_quiet_files_are_closed_and_reopened_when_they_grow(tmp_path: Path):
    clock = FakeClock()
    for i in range(3):
        (tmp_path / f"p-{i}.jsonl").write_bytes(b'{"n": %d}\n' % i)
    tailer = Tailer(str(tmp_path / "p-*.jsonl"), 1 << 20, monotonic=clock)
    assert len(lines_of(tailer)) == 3
    assert len(tailer.files) == 3
    lines_of(tailer)
    clock.advance(DORMANT_AFTER_S + 1)
    progress = tailer.progress
    lines_of(tailer)
    assert tailer.files == {} and len(tailer.dormant) == 3  # no descriptor held
    assert tailer.progress > progress  # what we follow changed: worth a checkpoint
    assert len(tailer.records()) == 3  # and still checkpointed
    with open(tmp_path / "p-1.jsonl", "ab") as fh:
        fh.write(b'{"n": 11}\n')
    assert lines_of(tailer) == [b'{"n": 11}']
    assert len(tailer.files) == 1 and len(tailer.dormant) == 2
    tailer.close()


def test_a_dormant_file_that_was_cut_is_read_again_from_its_start(tmp_path: Path):
    clock = FakeClock()
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2}\n')
    tailer = Tailer(str(path), 1 << 20, monotonic=clock)
    assert len(lines_of(tailer)) == 2
    lines_of(tailer)
    clock.advance(DORMANT_AFTER_S + 1)
    lines_of(tailer)
    assert tailer.dormant
    path.write_bytes(b'{"n": 3}\n')  # truncated and rewritten, shorter
    assert lines_of(tailer) == [b'{"n": 3}']
    tailer.close()


def test_folders_fifos_and_link_loops_on_the_glob_are_skipped_not_fatal(tmp_path: Path):
    (tmp_path / "p-dir").mkdir()
    os.mkfifo(tmp_path / "p-fifo")
    os.symlink(tmp_path / "p-loop", tmp_path / "p-loop")
    (tmp_path / "p-real").write_bytes(b'{"n": 1}\n')
    tailer = Tailer(str(tmp_path / "p-*"), 1 << 20, monotonic=FakeClock())
    assert lines_of(tailer) == [b'{"n": 1}']
    tailer.close()


def test_truncation_to_fewer_bytes_still_counts_as_progress(tmp_path: Path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"n": 1}\n' * 100)
    tailer = Tailer(str(path), 1 << 20, monotonic=FakeClock())
    lines_of(tailer)
    progress = tailer.progress
    path.write_bytes(b'{"n": 2}\n')  # cut, then one short line: offsets went down
    assert lines_of(tailer) == [b'{"n": 2}']
    assert tailer.progress > progress
    tailer.close()


def test_start_at_end_inside_a_line_longer_than_a_chunk_skips_the_rest_of_it(tmp_path: Path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"n": 1}\n' + b"x" * 5000)
    tailer = Tailer(str(path), 1000, start_at_end=True, monotonic=FakeClock())
    assert lines_of(tailer) == []
    with open(path, "ab") as fh:
        fh.write(b'\n{"n": 2}\n')
    blocks = list(tailer.poll(1 << 30))
    assert [b.too_long for b in blocks] == [True, False]
    assert blocks[1].data == b'{"n": 2}\n'
    tailer.close()


def test_a_cut_and_rewrite_between_scan_and_read_is_not_read_at_the_old_offset(tmp_path: Path):
    path = tmp_path / "p.jsonl"
    old = b"".join(b'{"gen": 1, "n": %03d}\n' % i for i in range(20))
    new = b"".join(b'{"gen": 2, "n": %03d}\n' % i for i in range(40))
    path.write_bytes(old)
    tailer = Tailer(str(path), 1 << 20, monotonic=FakeClock())
    assert len(lines_of(tailer)) == 20
    with open(path, "ab") as fh:
        fh.write(b'{"gen": 1, "n": 999}\n')
    tailer.scan()  # it saw the file grow...
    path.write_bytes(new)  # ...and then logrotate cut it and the writer wrote on
    scan, tailer.scan = tailer.scan, lambda: None
    assert lines_of(tailer) == []  # nothing read from the new content at the old offset
    tailer.scan = scan
    got = lines_of(tailer)
    assert got == new.splitlines()
    tailer.close()


def _numbered(start: int, n: int) -> bytes:
    return b"".join(b'{"seq": %06d, "pad": "%s"}\n' % (i, b"x" * 50) for i in range(start, start + n))


def test_a_copy_shorter_than_what_was_read_of_its_original_is_not_read_again(tmp_path: Path):
    # Issue 11's reproduction: cp, one more line read from the original, then the cut.
    logs = tmp_path / "logs"
    logs.mkdir()
    live = logs / "preds.log"
    live.write_bytes(_numbered(0, 1000))
    tailer = Tailer(str(logs / "preds.log*"), 1 << 20, monotonic=FakeClock())
    assert len(lines_of(tailer)) == 1000
    shutil.copyfile(live, logs / "preds.log.1")
    assert lines_of(tailer) == []  # the copy is held: its content was read already
    with open(live, "ab") as fh:
        fh.write(_numbered(1000, 1))
    assert len(lines_of(tailer)) == 1
    os.truncate(live, 0)
    assert lines_of(tailer) == []
    assert lines_of(tailer) == []
    with open(live, "ab") as fh:
        fh.write(_numbered(1001, 2))
    assert len(lines_of(tailer)) == 2
    tailer.close()


def test_a_copy_shorter_than_its_checkpointed_original_is_not_read_again_after_a_restart(
        tmp_path: Path):
    logs = tmp_path / "logs"
    logs.mkdir()
    live = logs / "preds.log"
    live.write_bytes(_numbered(0, 1000))
    tailer = Tailer(str(logs / "preds.log*"), 1 << 20, monotonic=FakeClock())
    lines_of(tailer)
    shutil.copyfile(live, logs / "preds.log.1")
    with open(live, "ab") as fh:
        fh.write(_numbered(1000, 1))
    assert len(lines_of(tailer)) == 1
    records, history = tailer.records(), dict(tailer.history)  # the checkpoint; then kill -9
    tailer.close()
    os.truncate(live, 0)  # while the daemon is down
    restarted = Tailer(str(logs / "preds.log*"), 1 << 20, records=records, history=history,
                       monotonic=FakeClock())
    assert lines_of(restarted) == []
    assert lines_of(restarted) == []
    restarted.close()


def test_compressed_rotations_are_skipped_once_and_never_read_as_text(tmp_path: Path):
    lines = _numbered(0, 50)
    (tmp_path / "p.log").write_bytes(lines)
    (tmp_path / "p.log.1.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "p.log.2.bz2").write_bytes(bz2.compress(lines))
    (tmp_path / "p.log.3.xz").write_bytes(lzma.compress(lines))
    (tmp_path / "p.log.4.zst").write_bytes(b"\x28\xb5\x2f\xfd" + lines)  # the magic is enough
    tailer = Tailer(str(tmp_path / "p.log*"), 1 << 20, monotonic=FakeClock())
    assert len(lines_of(tailer)) == 50  # only the plain file's
    assert lines_of(tailer) == []
    assert tailer.take_skips() == {"compressed": 4}
    assert tailer.files.keys() == {_key(tmp_path / "p.log")}  # no descriptor held for them
    # One that was empty when first seen (gzip had just created it) is skipped once written.
    late = tmp_path / "p.log.5.gz"
    late.write_bytes(b"")
    assert lines_of(tailer) == []
    late.write_bytes(gzip.compress(lines))
    assert lines_of(tailer) == []
    assert tailer.take_skips() == {"compressed": 1}
    saved, records = tailer.skipped_state(), tailer.records()
    tailer.close()
    restarted = Tailer(str(tmp_path / "p.log*"), 1 << 20, skipped=saved, records=records,
                       monotonic=FakeClock())
    assert lines_of(restarted) == []
    assert restarted.take_skips() == {}  # counted before the restart, not again
    restarted.close()


def _key(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def test_the_hole_left_by_copytruncate_under_a_writer_without_o_append_is_not_a_line(
        tmp_path: Path):
    path = tmp_path / "p.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)  # no O_APPEND: it writes at its own offset
    first = _numbered(0, 3000)
    os.write(fd, first)
    tailer = Tailer(str(path), 100 * 1024, monotonic=FakeClock())  # the hole is longer
    assert len(lines_of(tailer)) == 3000
    os.truncate(path, 0)  # logrotate's copytruncate (the copy is outside the glob)
    os.write(fd, _numbered(3000, 2))  # at offset len(first): NULs before it
    os.close(fd)
    assert os.path.getsize(path) == len(first) + len(_numbered(3000, 2)) > 100 * 1024
    got = [line for _ in range(3) for line in lines_of(tailer)]
    assert got == _numbered(3000, 2).splitlines()
    assert all(not b.too_long for b in tailer.poll(1 << 30))
    with open(path, "ab") as fh:  # NULs inside one block: before a line, never in it
        fh.write(b"\0" * 10 + _numbered(3002, 1))
    assert lines_of(tailer) == _numbered(3002, 1).splitlines()
    tailer.close()
