"""FileFollower on real files: every rotation style, truncation, late files, restarts."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relayguard.logs.follow import (
    PROBE_BYTES,
    READ_BYTES,
    FileFollower,
    Position,
    Waker,
    _read_size,
    is_compressed,
)


def _lines(batches) -> list[bytes]:
    return [ln for b in batches for ln in b.data.splitlines()]


def _append(path: Path, *lines: str) -> None:
    with open(path, "ab") as fh:
        for ln in lines:
            fh.write(ln.encode() + b"\n")


def test_partial_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\ntw")
    f = FileFollower(str(log))
    f.resume([])
    assert _lines(f.poll()) == [b"one"]
    assert f.poll() == []
    with open(log, "ab") as fh:
        fh.write(b"o\n")
    b = f.poll()
    assert _lines(b) == [b"two"] and b[0].first_lineno == 2
    assert f.positions()[0].offset == 8


def test_start_at_end_skips_history_but_not_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    _append(log, "old1", "old2")
    f = FileFollower(str(log), start_at_end=True)
    f.resume([])
    assert f.poll() == []
    _append(log, "new")
    assert _lines(f.poll()) == [b"new"]


def test_rename_rotation_drains_old_file_then_follows_new(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    _append(log, "a1")
    f = FileFollower(str(log), linger=0.0)
    f.resume([])
    assert _lines(f.poll()) == [b"a1"]
    os.rename(log, tmp_path / "a.log.1")
    _append(tmp_path / "a.log.1", "a2 (writer still has the old file open)")
    _append(log, "b1")
    got = _lines(f.poll()) + _lines(f.poll())
    assert got == [b"a2 (writer still has the old file open)", b"b1"]
    assert any("rotated" in e for e in f.events)
    # linger 0: the old file is let go on the next poll without data
    f.poll()
    assert [p.retired_at for p in f.positions()] == [None]


def test_copytruncate_reads_the_tail_from_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    _append(log, "l1", "l2")
    f = FileFollower(str(log))
    f.resume([])
    assert _lines(f.poll()) == [b"l1", b"l2"]
    _append(log, "l3 written before the copy")
    shutil.copyfile(log, tmp_path / "a.log.1")  # logrotate copytruncate: copy, then truncate
    with open(log, "r+b") as fh:
        fh.truncate(0)
    _append(log, "n1 after truncation")
    got = _lines(f.poll()) + _lines(f.poll())
    assert got == [b"l3 written before the copy", b"n1 after truncation"]
    assert any("copytruncate" in e for e in f.events)


def test_truncated_and_regrown_is_noticed_by_head_hash(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    _append(log, "short")
    f = FileFollower(str(log))
    f.resume([])
    assert _lines(f.poll()) == [b"short"]
    with open(log, "r+b") as fh:  # truncated and rewritten past our offset before we looked
        fh.truncate(0)
    _append(log, "different first line", "and more")
    assert _lines(f.poll()) == [b"different first line", b"and more"]


def test_file_appearing_later_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "late.log"
    f = FileFollower(str(log), start_at_end=True)
    f.resume([])
    assert f.poll() == []
    _append(log, "first", "second")
    assert _lines(f.poll()) == [b"first", b"second"]


def test_a_fifo_or_directory_in_the_logs_place_is_waited_out(tmp_path: Path) -> None:
    """A path that is no regular file is said once and never read: opening a FIFO does not
    wait for a writer (that hung the watcher), and a directory is not read at its "end";
    once a log file takes the path, it is followed from its start."""
    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)
    f = FileFollower(str(fifo), start_at_end=True)
    f.resume([])  # returns at once (a blocking open would wait here for ever)
    assert f.poll() == [] and f.poll() == []
    assert f.events == [f"{fifo}: not a regular file; waiting for a log file to take its place"]
    log = tmp_path / "dir.log"
    log.mkdir()
    g = FileFollower(str(log), start_at_end=True)
    g.resume([])
    assert g.poll() == [] and len(g.events) == 1
    log.rmdir()
    _append(log, "first")
    assert _lines(g.poll()) == [b"first"]


def test_compressed_rotated_files_are_never_read(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    _append(log, "x1")
    f = FileFollower(str(log))
    f.resume([])
    f.poll()
    saved = f.positions()
    f.close()
    # rotated and compressed while stopped: the old inode is gone, the .gz is ignored
    with open(log, "rb") as src, gzip.open(tmp_path / "a.log.1.gz", "wb") as dst:
        dst.write(src.read() + b"x2\n")
    os.unlink(log)
    _append(log, "y1")
    assert is_compressed(str(tmp_path / "a.log.1.gz"))
    g = FileFollower(str(log))
    g.resume(saved)
    assert _lines(g.poll()) == [b"y1"]
    assert any("lost" in e for e in g.events)


def test_restart_resumes_at_saved_offset_and_finds_rotated_file(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    _append(log, "a1", "a2")
    f = FileFollower(str(log))
    f.resume([])
    assert len(_lines(f.poll())) == 2
    saved = [Position(**vars(p)) for p in f.positions()]
    f.close()
    _append(log, "a3 written while stopped")
    os.rename(log, tmp_path / "a.log.1")
    _append(log, "b1")
    g = FileFollower(str(log))
    g.resume(saved)
    got = _lines(g.poll()) + _lines(g.poll())
    assert got == [b"a3 written while stopped", b"b1"]


def test_restart_after_copytruncate_while_stopped(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    _append(log, "a1")
    f = FileFollower(str(log))
    f.resume([])
    f.poll()
    saved = f.positions()
    f.close()
    _append(log, "a2")
    shutil.copyfile(log, tmp_path / "a.log.1")
    with open(log, "r+b") as fh:
        fh.truncate(0)
    _append(log, "b1")
    g = FileFollower(str(log))
    g.resume(saved)
    got = _lines(g.poll()) + _lines(g.poll())
    assert got == [b"a2", b"b1"]


def test_restart_when_the_saved_file_was_empty_and_copytruncated(tmp_path: Path) -> None:
    """What the real-logrotate test hit: the checkpoint holds a just-created, still empty
    file (no head to recognise a copy by); while stopped it gets lines, is copytruncated,
    and gets more. The copy was modified after the checkpoint: its lines are read, the older
    rotation (renamed, not modified) is not read again."""
    import time

    log = tmp_path / "a.log"
    old = tmp_path / "a.log.1"
    _append(old, "old1", "old2")  # an earlier rotation, read long ago
    past = time.time() - 3600
    os.utime(old, (past, past))
    log.touch()
    f = FileFollower(str(log))
    f.resume([])
    assert f.poll() == []
    saved = f.positions()
    assert saved[0].offset == 0 and saved[0].head_len == 0
    saved_at = time.time()
    f.close()
    os.rename(old, tmp_path / "a.log.2")  # logrotate shifts the old one (mtime kept)
    _append(log, "c1", "c2")
    shutil.copyfile(log, old)
    with open(log, "r+b") as fh:
        fh.truncate(0)
    _append(log, "d1")
    g = FileFollower(str(log))
    g.resume([Position(**vars(p)) for p in saved], saved_at)
    got = _lines(g.poll()) + _lines(g.poll())
    assert got == [b"c1", b"c2", b"d1"]
    assert any("written while stopped" in e for e in g.events)
    h = FileFollower(str(log))  # without the checkpoint time: the old behaviour
    h.resume(saved)
    assert _lines(h.poll()) + _lines(h.poll()) == [b"d1"]


def test_rewind_returns_the_same_lines_again(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    _append(log, "a1", "a2")
    f = FileFollower(str(log))
    f.resume([])
    (b,) = f.poll()
    f.rewind(b)
    (again,) = f.poll()
    assert again.data == b.data and again.first_lineno == 1


def test_backlog_is_read_in_whole_lines_up_to_the_last_line_end(tmp_path: Path) -> None:
    """A backlog larger than one read is read in blocks that end at the last line end within
    the read size (found by a probe of the block's end, so the block is not copied again to
    drop a cut line), also where a line longer than the probe crosses the block's end."""
    log = tmp_path / "a.log"
    lines = [f"line {i} " + "x" * (i * 37 % 300) for i in range(3000)]
    lines[100] = "long " + "y" * 100_000  # a line across the whole probe of the first block
    _append(log, *lines)
    data = log.read_bytes()
    f = FileFollower(str(log))
    f.resume([])
    max_bytes = PROBE_BYTES + 40000
    batches, offset, lineno = [], 0, 1
    for _ in range(1000):
        got = f.poll(max_bytes)
        if not got:
            break
        for b in got:
            want = data[offset:offset + max_bytes]
            cut = want.rfind(b"\n") + 1
            assert b.data == want[:cut] and b.start == offset and b.first_lineno == lineno
            offset, lineno = offset + cut, lineno + b.lines
            batches.append(b)
    assert offset == len(data) and lineno == 3001 and len(batches) > 4
    # the size asked of each read: the whole lines, or all of max_bytes where the probe saw no
    # line end (the first block: its end is then cut off the data)
    with open(log, "rb") as fh:
        sizes = [_read_size(fh.fileno(), b.start, max_bytes) for b in batches]
    assert sizes[0] == max_bytes > len(batches[0].data)
    assert [len(b.data) for b in batches[1:-1]] == sizes[1:-1]
    assert _lines(batches) == [ln.encode() for ln in lines]


def test_waker_uses_inotify_and_wakes_on_a_write(tmp_path: Path) -> None:
    import time

    log = tmp_path / "a.log"
    _append(log, "x")
    w = Waker([str(log)])
    try:
        assert w.kind == "inotify"
        _append(log, "y")
        t0 = time.monotonic()
        w.wait(5.0)
        assert time.monotonic() - t0 < 1.0
    finally:
        w.close()


KEEP_BLOCKS_PROBE = """
import os, resource, sys
from relayguard.logs.follow import READ_BYTES, keep_read_blocks
if not keep_read_blocks():
    print("no mallopt")
    sys.exit(0)
fd = os.open(sys.argv[1], os.O_RDONLY)
held, before = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(60):  # a backlog: blocks read, a few held while in flight, small objects between
    held.append(os.pread(fd, READ_BYTES, i % 4 * READ_BYTES))
    del held[:-3]
    notes = [held[-1][:200] for _ in range(50)]
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_read_blocks_reuse_their_memory(tmp_path: Path) -> None:
    """Reading a backlog block by block, with a few blocks in flight, touches new memory for
    the blocks held at once, not for every block (glibc's adaptive defaults faulted in twice as
    many pages: each fault is a page the kernel zeroes)."""
    log = tmp_path / "big.log"
    log.write_bytes(os.urandom(4 * READ_BYTES))
    out = subprocess.run([sys.executable, "-c", KEEP_BLOCKS_PROBE, str(log)], capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    if out == "no mallopt":
        pytest.skip("the C library has no mallopt (not glibc): its defaults stand")
    pages = READ_BYTES // os.sysconf("SC_PAGE_SIZE")
    assert int(out) <= 5 * pages, out
