"""The tailer on real files with an injected clock: dormant files, odd glob matches,
copies, holes, links, descriptors; and the daemon on FIFOs, devices and a low ulimit."""

from __future__ import annotations

import bz2
import errno
import gzip
import lzma
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from monitor.core.errors import StateError
from monitor.shell import checkpoint
from monitor.shell.config import load_config
from monitor.shell.daemon import Daemon
from monitor.shell.tail import DORMANT_AFTER_S, Descriptors, Tailer
from tests.system.conftest import Writer, model_config, run_cli, source
from tests.waiting import wait_until


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
    progress, changes = tailer.progress, tailer.changes
    lines_of(tailer)
    assert tailer.files == {} and len(tailer.dormant) == 3  # no descriptor held
    assert tailer.progress == progress  # no byte read
    assert tailer.changes > changes  # but what we follow changed: worth a checkpoint
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


def test_truncation_to_fewer_bytes_counts_the_bytes_read_and_a_change(tmp_path: Path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"n": 1}\n' * 100)
    tailer = Tailer(str(path), 1 << 20, monotonic=FakeClock())
    lines_of(tailer)
    assert tailer.progress == 900  # bytes only
    progress, changes = tailer.progress, tailer.changes
    path.write_bytes(b'{"n": 2}\n')  # cut, then one short line: offsets went down
    assert lines_of(tailer) == [b'{"n": 2}']
    assert tailer.progress == progress + 9
    assert tailer.changes > changes
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


@pytest.mark.parametrize("n", [1000, 2], ids=["long", "within-fingerprint"])
def test_a_copy_shorter_than_what_was_read_of_its_original_is_not_read_again(tmp_path: Path,
                                                                            n: int):
    # Issue 11's reproduction: cp, one more line read from the original, then the cut.
    # Within the fingerprint's 256 bytes, the copy is shorter than what it was taken of.
    logs = tmp_path / "logs"
    logs.mkdir()
    live = logs / "preds.log"
    live.write_bytes(_numbered(0, n))
    tailer = Tailer(str(logs / "preds.log*"), 1 << 20, monotonic=FakeClock())
    assert len(lines_of(tailer)) == n
    shutil.copyfile(live, logs / "preds.log.1")
    assert lines_of(tailer) == []  # the copy is held: its content was read already
    with open(live, "ab") as fh:
        fh.write(_numbered(n, 1))
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


def test_a_symlink_out_of_the_glob_s_folder_is_followed_only_when_asked(tmp_path: Path):
    logs, outside = tmp_path / "logs", tmp_path / "outside"
    logs.mkdir()
    outside.mkdir()
    (outside / "secret.log").write_bytes(_numbered(0, 7))
    (logs / "app-1.log").write_bytes(_numbered(100, 2))
    os.symlink(outside / "secret.log", logs / "leak.log")
    os.symlink(logs / "app-1.log", logs / "current.log")  # inside: the same file, once
    tailer = Tailer(str(logs / "*.log"), 1 << 20, monotonic=FakeClock())
    assert lines_of(tailer) == _numbered(100, 2).splitlines()
    assert lines_of(tailer) == []
    assert tailer.take_skips() == {"symlink_outside": 1}  # once, not once per poll
    tailer.close()
    following = Tailer(str(logs / "*.log"), 1 << 20, follow_symlinks=True, monotonic=FakeClock())
    assert sorted(lines_of(following)) == sorted(_numbered(0, 7).splitlines()
                                                 + _numbered(100, 2).splitlines())
    assert following.take_skips() == {}
    following.close()


def test_fifos_devices_folders_and_proc_files_are_skipped_once_without_opening_them(
        tmp_path: Path):
    os.mkfifo(tmp_path / "p-fifo")
    (tmp_path / "p-dir").mkdir()
    os.symlink("/dev/zero", tmp_path / "p-zero")
    os.symlink("/proc/self/status", tmp_path / "p-proc")
    (tmp_path / "p-real").write_bytes(b'{"n": 1}\n')
    tailer = Tailer(str(tmp_path / "p-*"), 1 << 20, follow_symlinks=True, monotonic=FakeClock())
    for _ in range(3):
        assert lines_of(tailer) in ([b'{"n": 1}'], [])
    assert tailer.take_skips() == {"not_regular": 3, "pseudo": 1}
    assert len(tailer.files) == 1 and tailer.descriptors.held == 1
    tailer.close()


def test_a_file_that_cannot_be_opened_is_said_once_retried_and_read_once_it_can(tmp_path: Path):
    path = tmp_path / "p.log"
    path.write_bytes(_numbered(0, 3))
    path.chmod(0)
    # Root reads whatever the mode says: the tailer then runs as root without the
    # capabilities that override file permissions.
    drop: list[str] = []
    if os.getuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: a chmod cannot stop a read")
        drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    script = textwrap.dedent(f"""
        import logging, sys
        from monitor.shell.tail import Tailer
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        t = Tailer({str(path)!r}, 1 << 20)
        read = lambda: sum(b.lines for b in t.poll(1 << 30))
        print([read() for _ in range(5)], flush=True)
        sys.stdin.readline()  # the parent makes it readable
        print([read() for _ in range(2)], flush=True)
        """)
    child = subprocess.Popen([*drop, sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "[0, 0, 0, 0, 0]"  # five polls refused
    path.chmod(0o644)
    out, err = child.communicate("go\n", timeout=60)
    assert child.returncode == 0, err
    assert out.strip() == "[3, 0]"  # from its start, once
    assert err.count("cannot open") == 1, err  # said once, not once per poll
    assert "readable again" in err


def test_descriptors_stay_within_max_open_files_and_every_file_is_read(tmp_path: Path):
    for i in range(5):
        (tmp_path / f"p-{i}.log").write_bytes(_numbered(10 * i, 10))
    budget = Descriptors(3)
    tailer = Tailer(str(tmp_path / "p-*.log"), 1 << 20, descriptors=budget, monotonic=FakeClock())
    got = []
    for _ in range(4):
        got += lines_of(tailer)
        assert budget.held == len(tailer.files) <= 3
    assert sorted(got) == _numbered(0, 50).splitlines()  # each line once
    assert tailer.take_skips() == {"max_open_files": 2}  # refused at first, each once
    tailer.close()
    assert budget.held == 0


def test_the_rotated_file_is_closed_first_when_descriptors_run_out(tmp_path: Path):
    (tmp_path / "a.log").write_bytes(_numbered(0, 5))
    (tmp_path / "b.log").write_bytes(_numbered(5, 5))
    budget = Descriptors(2)
    tailer = Tailer(str(tmp_path / "*.log"), 1 << 20, descriptors=budget, monotonic=FakeClock())
    assert len(lines_of(tailer)) == 10
    rotated = _key(tmp_path / "b.log")
    os.rename(tmp_path / "b.log", tmp_path / "b.log-1")  # off the glob: rotated away
    assert lines_of(tailer) == []
    (tmp_path / "c.log").write_bytes(_numbered(10, 5))
    assert lines_of(tailer) == _numbered(10, 5).splitlines()
    assert rotated not in tailer.files and _key(tmp_path / "a.log") in tailer.files
    tailer.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_fifo_or_dev_zero_on_the_glob_does_not_spin_the_daemon(daemon_factory, logs):
    os.mkfifo(logs / "p-fifo.jsonl")
    os.symlink("/dev/zero", logs / "p-zero.jsonl")
    Writer(logs / "p-real.jsonl").write(10)
    d = daemon_factory({"sources": [source(logs / "p-*.jsonl", follow_symlinks=True)],
                        "models": {"fraud": model_config()}, "watch": "auto"}).start()
    d.wait_value("model_drift_predictions_total", 10, model="fraud")
    assert d.proc is not None
    before, started = cpu_seconds(d.proc.pid), time.monotonic()
    time.sleep(3)
    used = (cpu_seconds(d.proc.pid) - before) / (time.monotonic() - started)
    assert used < 0.15, f"{used:.0%} of a core"  # 83-95 % before the fix
    assert d.log().count("file skipped") == 2, d.log()[-2000:]
    assert d.value("drift_monitor_skipped_files_total", source="preds", reason="not_regular") == 2
    assert d.stop() == 0


@pytest.mark.parametrize(("files", "nofile", "budget"), [(1500, 1024, 512), (300, 128, 64)])
def test_more_files_than_the_process_may_open_are_all_read(daemon_factory, logs, files, nofile,
                                                           budget):
    # Issue 15: 1,500 files under systemd's default nofile of 1,024 crash-looped start-up.
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is needed to lower the descriptor limit")
    for i in range(files):
        w = Writer(logs / f"p-{i:04d}.jsonl")
        w.write(2)
        w.close()
    d = daemon_factory({"sources": [source(logs / "p-*.jsonl")],
                        "models": {"fraud": model_config()}})
    with open(d.stderr_path, "ab") as stderr:  # DaemonProcess.start, under `ulimit -n`
        d.proc = subprocess.Popen(["prlimit", f"--nofile={nofile}:{nofile}", sys.executable, "-m",
                                   "monitor", "run", "--config", str(d.config_path)],
                                  stdout=subprocess.DEVNULL, stderr=stderr)
    wait_until(d.ready, 30)
    d.wait_value("model_drift_predictions_total", 2 * files, timeout_s=90, model="fraud")
    assert (f"lowered to {budget}" in d.log()) == (budget < 512)
    assert d.value("drift_monitor_skipped_files_total", source="preds",
                   reason="max_open_files") > 0  # refused at first, read later
    assert len(os.listdir(f"/proc/{d.proc.pid}/fd")) <= budget + 40
    assert "Traceback" not in d.log()
    assert d.stop() == 0


def test_running_out_of_descriptors_at_start_up_says_so(tmp_path, logs, monkeypatch):
    # What ran out, not "state_dir not writable" (the write fails as it would at EMFILE).
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"sources": [source(logs / "*.jsonl")],
                                      "models": {"fraud": model_config()},
                                      "state_dir": str(tmp_path / "state")}))

    def out_of_descriptors(*args: object) -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(checkpoint, "write", out_of_descriptors)
    d = Daemon(load_config(str(config)), str(config))
    with pytest.raises(StateError, match=r"out of file descriptors \(Too many open files\)") as err:
        d.startup()
    assert "not writable" not in str(err.value)
    d.shutdown(clean=False)


def test_follow_symlinks_and_max_open_files_are_checked_with_their_key_paths(tmp_path, logs):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"sources": [source(logs / "*.jsonl", follow_symlinks="yes")],
                                      "models": {"fraud": model_config()}, "max_open_files": 0}))
    out = run_cli("check-config", str(config))
    assert out.returncode == 2
    assert "sources[0].follow_symlinks: expected true or false" in out.stderr
    assert "max_open_files: must be at least 1" in out.stderr


def test_rotations_truncations_and_copies_are_counted_once_each(tmp_path: Path):
    clock = FakeClock()
    live = tmp_path / "p.log"
    live.write_bytes(_numbered(0, 10))
    tailer = Tailer(str(tmp_path / "p.log*"), 1 << 20, monotonic=clock, rotate_wait_s=1)
    lines_of(tailer)
    shutil.copyfile(live, tmp_path / "p.log.1")  # copytruncate, the copy in the glob
    os.truncate(live, 0)
    lines_of(tailer)
    lines_of(tailer)
    assert tailer.take_events() == {"truncated": 1, "copied": 1}
    os.rename(tmp_path / "p.log.1", tmp_path / "old")  # rotated out of the glob...
    live2 = tmp_path / "p.log.new"
    live2.write_bytes(b"")  # ...and an empty new file: not a copy, though it looks like one
    lines_of(tailer)
    clock.advance(2)
    lines_of(tailer)
    lines_of(tailer)
    assert tailer.take_events() == {"rotated": 1}  # once closed for good, not when missed
    tailer.close()


@pytest.mark.parametrize("cut_with_copy", [True, False])
def test_a_copy_seen_empty_is_not_read_again_once_filled(tmp_path: Path, cut_with_copy: bool):
    # The soak with deletion's double count: copytruncate's copy seen while still empty
    # (every file starts with its empty head), held as a copy of another, older file,
    # then let go as a new file once it held the live file's lines, and read again.
    live = tmp_path / "p.jsonl"
    live.write_bytes(_numbered(0, 50))
    tailer = Tailer(str(tmp_path / "p*.jsonl"), 1 << 20, monotonic=FakeClock())
    assert len(lines_of(tailer)) == 50
    os.rename(live, tmp_path / "p.0001.jsonl")  # followed first: the older file
    live.write_bytes(_numbered(50, 50))
    assert len(lines_of(tailer)) == 50
    copy = tmp_path / "p.0002.jsonl"
    copy.write_bytes(b"")  # copytruncate's copy, seen before it is written
    assert lines_of(tailer) == []
    copy.write_bytes(live.read_bytes())
    if not cut_with_copy:
        assert lines_of(tailer) == []  # held as the live file's copy now
    os.truncate(live, 0)
    assert lines_of(tailer) == []
    live.write_bytes(_numbered(100, 3))
    assert lines_of(tailer) == _numbered(100, 3).splitlines()  # and nothing else
    assert tailer.take_events() == {"copied": 1, "truncated": 1}
    tailer.close()


def test_a_file_held_while_empty_that_became_a_compressed_rotation_takes_over_nothing(
        tmp_path: Path):
    # The CI failure of logrotate's copytruncate + compress + delaycompress: logrotate
    # creates `p.log.1.gz` empty before gzip fills it, so a scan in that moment holds it
    # as a copy of the live file (every file starts with an empty head). When the live
    # file is cut, what it held must pass to its real copy, never to the .gz: released at
    # the live file's offset, the .gz was taken as read to its end and never skipped, and
    # the real copy was read again from its start.
    live = tmp_path / "p.log"
    live.write_bytes(_numbered(0, 50))
    tailer = Tailer(str(tmp_path / "p.log*"), 1 << 20, monotonic=FakeClock())
    assert len(lines_of(tailer)) == 50
    late = tmp_path / "p.log.1.gz"
    late.write_bytes(b"")
    assert lines_of(tailer) == []
    late.write_bytes(gzip.compress(_numbered(0, 50)))
    shutil.copyfile(live, tmp_path / "p.log.2")  # copytruncate's copy, then the cut
    os.truncate(live, 0)
    assert lines_of(tailer) == []
    assert lines_of(tailer) == []
    live.write_bytes(_numbered(50, 3))
    assert lines_of(tailer) == _numbered(50, 3).splitlines()
    assert tailer.take_skips() == {"compressed": 1}
    assert tailer.take_events() == {"copied": 1, "truncated": 1}
    tailer.close()
