"""Following log files like `tail -F`, across rotation, truncation and restarts.

A followed path has one *current* file identity (device, inode, a hash of its first bytes) and
may have *retired* ones: after a rename rotation the old inode stays open and is drained for a
grace period, because a daemon keeps writing to it until it reopens its log (Apache only after
`graceful`). Copytruncate is seen as a shrunken file or a changed head; the tail written
before the copy is then read from the rotated copy, found by its head hash. Only whole lines
are consumed, so a `Position` is always a line boundary and can be persisted with the state it
produced; `FileFollower.resume` finds a saved identity again (also among rotated siblings)
after a restart. Compressed rotated files are never read. Scheme after fail2ban's
(path, first-line md5, offset) plus the inode, as research/logs.md §2 suggests.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import select
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from relayguard.logs.fastpath import count_newlines
from relayguard.logs.sources import MAX_LINE  # a longer "line" is consumed as it is

HEAD_BYTES = 1024  # the file identity hash covers up to this many first bytes
READ_BYTES = 4 * 1024 * 1024  # at most this much per read
PROBE_BYTES = 64 * 1024  # where a big read looks for its last line end first
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z", ".zip")
_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


@dataclass
class Position:
    """Where reading stands in one file identity; `offset` is always just after a newline."""

    path: str  # the followed path (as configured)
    dev: int
    ino: int
    offset: int = 0
    head: str = ""  # sha1 hex of the first `head_len` bytes
    head_len: int = 0
    lineno: int = 0  # lines consumed from this identity
    retired_at: float | None = None  # set once a newer identity took over the path

    @property
    def ident(self) -> tuple[int, int]:
        return (self.dev, self.ino)


class ReadBuffer(Protocol):
    """Memory a block may be read into instead of a new bytes object (a scan worker's slot,
    so the block reaches the worker without a copy)."""

    view: memoryview

    def release(self) -> None: ...


@dataclass
class Batch:
    """Whole lines read from one file identity, and the position after them."""

    path: str  # the followed path
    source: str  # the file the bytes came from (a rotated sibling when recovering)
    data: bytes | memoryview  # a memoryview of `buffer` when read into one
    first_lineno: int  # 1-based line number of the first line within its identity
    lines: int
    position: Position
    start: int = 0  # offset of the first byte
    buffer: ReadBuffer | None = None  # what `data` was read into (its owner releases it)

    def as_bytes(self) -> bytes:
        """The lines as bytes (a copy when they were read into a buffer)."""
        return self.data if isinstance(self.data, bytes) else bytes(self.data)


def _read_size(fd: int, offset: int, max_bytes: int) -> int:
    """How much to read at `offset`: up to the last line end within `max_bytes` when more is
    there (found in the last PROBE_BYTES), so a backlog is read in whole lines and the block
    is not copied again to drop a cut last line (that copy cost as much as counting its
    lines); `max_bytes` when the rest is shorter or no line ends in the probe."""
    try:
        if os.fstat(fd).st_size - offset <= max_bytes or max_bytes <= PROBE_BYTES:
            return max_bytes
        tail = os.pread(fd, PROBE_BYTES, offset + max_bytes - PROBE_BYTES)
    except OSError:
        return max_bytes
    end = tail.rfind(b"\n")
    return max_bytes if end < 0 else max_bytes - PROBE_BYTES + end + 1


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def _libc() -> ctypes.CDLL | None:
    """The C library, for what Python has no binding of (inotify, mallopt)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def keep_read_blocks() -> bool:
    """Have glibc's malloc serve read blocks (READ_BYTES) from its heap and keep freed ones
    for the next read. With its adaptive defaults a block is now and then a fresh mmap, or the
    heap's top is trimmed between blocks, and the kernel zeroes and faults in a block's 1024
    pages again: reading a backlog took twice the page faults, a tenth of its CPU. For the
    processes that read blocks (`watch` and its scan worker); False where the C library has
    no mallopt (not glibc), whose defaults then stand."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    return all(bool(mallopt(param, value)) for param, value in _KEEP_BLOCKS.items())


_KEEP_BLOCKS = {M_MMAP_THRESHOLD: 4 * READ_BYTES, M_TRIM_THRESHOLD: 16 * READ_BYTES}
# the same for a child process that handles blocks, through the variables glibc reads at its
# start (the child then needs no ctypes: a scan worker starts ~10 % sooner)
KEEP_BLOCKS_ENV = {"MALLOC_MMAP_THRESHOLD_": str(_KEEP_BLOCKS[M_MMAP_THRESHOLD]),
                   "MALLOC_TRIM_THRESHOLD_": str(_KEEP_BLOCKS[M_TRIM_THRESHOLD])}


@dataclass
class _Handle:
    fd: int
    pos: Position
    source: str
    last_data: float = field(default_factory=time.monotonic)
    once: bool = False  # a copytruncate copy: read to its end, then close


def _last_newline(data: bytes | memoryview) -> int:
    """Index of the last newline (-1: none); a memoryview has no rfind, so its end is looked
    at first (the last line of a block is short) and only then the whole."""
    if isinstance(data, bytes):
        return data.rfind(b"\n")
    tail = max(0, len(data) - PROBE_BYTES)
    found = bytes(data[tail:]).rfind(b"\n")
    if found < 0 and tail:
        return bytes(data[:tail]).rfind(b"\n")
    return found if found < 0 else tail + found


def _hash(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def is_compressed(path: str) -> bool:
    """Rotated files compressed by logrotate are skipped (by name and by magic bytes)."""
    if path.endswith(COMPRESSED_SUFFIXES):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError:
        return True
    return any(head.startswith(m) for m in _MAGIC)


def open_log(path: str) -> tuple[int, os.stat_result] | None:
    """A read-only fd on `path` and its fstat when it is a regular file, else None (missing,
    unreadable, or a directory, FIFO or device: nothing a log follower can read by offset).
    O_NONBLOCK: opening a FIFO must not wait for a writer (on a regular file it changes
    nothing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def _open_each(names: list[str]) -> Iterator[tuple[str, int, os.stat_result]]:
    """Each regular file that opens, read-only, with its fstat; the caller keeps or closes
    the fd."""
    for name in names:
        opened = open_log(name)
        if opened is not None:
            yield name, *opened


def rotated_siblings(path: str) -> list[str]:
    """Uncompressed files beside `path` whose names extend it (`.1`, `-20260101`), newest first."""
    directory, base = os.path.split(path)
    directory = directory or "."
    out: list[tuple[float, str]] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        if name == base or not name.startswith(base) or len(name) == len(base):
            continue
        if name[len(base)] not in ".-_":
            continue
        full = os.path.join(directory, name)
        try:
            st = os.stat(full)
        except OSError:
            continue
        if not os.path.isfile(full) or is_compressed(full):
            continue
        out.append((st.st_mtime, full))
    return [p for _, p in sorted(out, reverse=True)]


class FileFollower:
    """One followed path: its current file, retired ones still being drained, and positions.

    `linger` is how long a rotated-away file keeps being read after its last new data.
    """

    def __init__(self, path: str, *, start_at_end: bool = False, linger: float = 30.0) -> None:
        self.path = path
        self.start_at_end = start_at_end
        self.linger = linger
        self.current: _Handle | None = None
        self.retired: list[_Handle] = []
        self.events: list[str] = []  # human notes: rotated, truncated, appeared, lost position
        self.irregular = False  # the path is a directory, FIFO or device (said once)

    # -- life cycle --------------------------------------------------------------------------
    def resume(self, saved: list[Position], saved_at: float | None = None) -> None:
        """Reopen saved identities: the current file at its offset, rotated ones by inode,
        a copytruncated one through its copy (matched by head hash); then any rotated file
        written since `saved_at` (the checkpoint) that is none of those (see
        `_written_while_stopped`)."""
        self._resume(saved)
        if saved and saved_at is not None:
            self._written_while_stopped(saved, saved_at)

    def _written_while_stopped(self, saved: list[Position], saved_at: float) -> None:
        """A file that was empty at the checkpoint has no head to recognise its copy by: if it
        was copytruncated (or rotated twice) while we were stopped, the lines it got are in a
        rotated file we never saw. Such a file was modified after the checkpoint (renames do
        not change mtime, so older rotations are not picked up again); read it whole, oldest
        first, before the current file goes on."""
        handles = [*self.retired, *([self.current] if self.current else [])]
        known = {p.ident for p in saved} | {h.pos.ident for h in handles}
        found: list[tuple[float, _Handle]] = []
        for sib, fd, st in _open_each(rotated_siblings(self.path)):
            if (st.st_dev, st.st_ino) in known or st.st_mtime < saved_at or not st.st_size:
                os.close(fd)
                continue
            pos = Position(self.path, st.st_dev, st.st_ino, retired_at=time.time())
            found.append((st.st_mtime, _Handle(fd, pos, sib, once=True)))
            self.events.append(f"{self.path}: {sib} was written while stopped and holds no "
                               f"line read before; reading it")
        self.retired += [h for _, h in sorted(found, key=lambda x: x[0])]

    def _resume(self, saved: list[Position]) -> None:
        current = [p for p in saved if p.retired_at is None]
        for pos in (p for p in saved if p.retired_at is not None):
            found = self._find_identity(pos)
            if found is not None:
                self.retired.append(found)
        if not current:
            self._open_current(first_run=not saved)
            return
        pos = current[0]
        opened = open_log(self.path)
        if opened is None:
            found = self._find_identity(pos)
            if found is not None:
                self.retired.append(found)
            self._note_unopened()
            if not self.irregular:
                self.events.append(f"{self.path}: missing; waiting for it to appear")
            return
        fd, st = opened
        if (st.st_dev, st.st_ino) == pos.ident and self._head_ok(fd, pos, st.st_size):
            self.current = _Handle(fd, pos, self.path)
            return
        os.close(fd)
        # rotated (other inode) or copytruncated (same inode, other head) while we were away
        found = self._find_identity(pos)
        if found is not None:
            self.retired.append(found)
            self.events.append(f"{self.path}: rotated while stopped; reading the rest of "
                               f"{found.source}")
        else:
            self.events.append(f"{self.path}: saved position not found (rotated and compressed "
                               f"or removed while stopped); lines after offset {pos.offset} of "
                               f"the old file are lost")
        self._open_current(first_run=False)

    def close(self) -> None:
        for h in [*self.retired, *([self.current] if self.current else [])]:
            with contextlib.suppress(OSError):
                os.close(h.fd)
        self.retired.clear()
        self.current = None

    def positions(self) -> list[Position]:
        """Every identity still being followed (to persist)."""
        out = [replace(h.pos) for h in self.retired]
        if self.current is not None:
            out.append(replace(self.current.pos))
        return out

    def lag_bytes(self) -> int:
        """Bytes written but not yet consumed."""
        total = 0
        for h in [*self.retired, *([self.current] if self.current else [])]:
            with contextlib.suppress(OSError):
                total += max(0, os.fstat(h.fd).st_size - h.pos.offset)
        return total

    # -- reading -----------------------------------------------------------------------------
    def poll(self, max_bytes: int = READ_BYTES,
             into: Callable[[int], ReadBuffer | None] | None = None) -> list[Batch]:
        """Whatever whole lines are available now (retired files first: older data first).
        `into(size)` may offer a buffer for a read of `size` bytes (None: a new bytes)."""
        out: list[Batch] = []
        now = time.monotonic()
        for h in list(self.retired):
            b = self._read(h, max_bytes, into)
            if b is not None:
                out.append(b)
                h.last_data = now
            elif h.once or now - h.last_data >= self.linger:
                os.close(h.fd)
                self.retired.remove(h)
        if self.current is None:
            self._open_current(first_run=False)
            if self.current is None:
                return out
        h = self.current
        try:
            st = os.fstat(h.fd)
        except OSError:
            return out
        if st.st_size < h.pos.offset or not self._head_ok(h.fd, h.pos, st.st_size):
            copy = self._truncated(h)
            if copy is not None:  # the copy holds the older lines: they go first
                b = self._read(copy, max_bytes, into)
                if b is not None:
                    out.append(b)
        b = self._read(h, max_bytes, into)
        if b is not None:
            out.append(b)
            return out
        # at the end of the current file: has the path moved on to another file?
        try:
            pst = os.stat(self.path)
        except OSError:
            return out
        if (pst.st_dev, pst.st_ino) != h.pos.ident:
            h.pos.retired_at = time.time()
            h.last_data = now
            self.retired.append(h)
            self.current = None
            self.events.append(f"{self.path}: rotated (new file); draining the old one")
            self._open_current(first_run=False)
            if self.current is not None:
                b = self._read(self.current, max_bytes, into)
                if b is not None:
                    out.append(b)
        return out

    def _read(self, h: _Handle, max_bytes: int,
              into: Callable[[int], ReadBuffer | None] | None = None) -> Batch | None:
        size = _read_size(h.fd, h.pos.offset, max_bytes)
        buffer = into(size) if into is not None else None
        try:
            if buffer is None:
                data: bytes | memoryview = os.pread(h.fd, size, h.pos.offset)
            else:
                data = buffer.view[:os.preadv(h.fd, [buffer.view[:size]], h.pos.offset)]
        except OSError:
            data = b""
        end = _last_newline(data) + 1
        if end == 0 and data and (len(data) >= MAX_LINE or (h.once and len(data) < max_bytes)):
            end = len(data)  # an over-long line, or the unterminated end of a copy
        if end == 0:  # nothing, or a line still being written
            if buffer is not None:
                buffer.release()
            return None
        data = data[:end]
        start = h.pos.offset
        lines = count_newlines(data) + (0 if data[-1:] == b"\n" else 1)
        first = h.pos.lineno + 1
        h.pos.offset += end
        h.pos.lineno += lines
        if h.pos.head_len < HEAD_BYTES and h.pos.offset > h.pos.head_len:
            head = os.pread(h.fd, min(HEAD_BYTES, h.pos.offset), 0)
            h.pos.head, h.pos.head_len = _hash(head), len(head)
        return Batch(self.path, h.source, data, first, lines, replace(h.pos), start, buffer)

    def rewind(self, batch: Batch) -> None:
        """Un-read the last batch of its file (its lines will be returned again)."""
        for h in [*self.retired, *([self.current] if self.current else [])]:
            if h.pos.ident == batch.position.ident and h.pos.offset == batch.position.offset:
                h.pos.offset = batch.start
                h.pos.lineno = batch.first_lineno - 1
                return

    # -- identities --------------------------------------------------------------------------
    @staticmethod
    def _head_ok(fd: int, pos: Position, size: int) -> bool:
        if pos.head_len == 0:
            return True
        if size < pos.head_len:
            return False
        try:
            return _hash(os.pread(fd, pos.head_len, 0)) == pos.head
        except OSError:
            return False

    def _open_current(self, first_run: bool) -> None:
        opened = open_log(self.path)
        if opened is None:
            self._note_unopened()
            return
        self.irregular = False
        fd, st = opened
        for h in self.retired:
            if h.pos.ident == (st.st_dev, st.st_ino) and not h.once:
                os.close(fd)  # still the old file (the rename has not happened yet)
                return
        pos = Position(self.path, st.st_dev, st.st_ino)
        if first_run and self.start_at_end and st.st_size:
            tail = os.pread(fd, min(st.st_size, MAX_LINE), max(0, st.st_size - MAX_LINE))
            nl = tail.rfind(b"\n")
            pos.offset = st.st_size - (len(tail) - nl - 1) if nl >= 0 else 0
            pos.lineno = -1  # line numbers unknown when starting at the end
            head = os.pread(fd, min(HEAD_BYTES, pos.offset), 0)
            pos.head, pos.head_len = _hash(head), len(head)
        elif not first_run:
            self.events.append(f"{self.path}: following new file (inode {st.st_ino})")
        self.current = _Handle(fd, pos, self.path)

    def _note_unopened(self) -> None:
        """Say once that the path is there but no regular file (a directory, a FIFO)."""
        irregular = os.path.exists(self.path) and not os.path.isfile(self.path)
        if irregular and not self.irregular:
            self.events.append(f"{self.path}: not a regular file; waiting for a log file to "
                               "take its place")
        self.irregular = irregular

    def _truncated(self, h: _Handle) -> _Handle | None:
        """Copytruncate: read what the copy holds past our offset, then restart at 0."""
        old = replace(h.pos)
        copy = self._find_copy(old)
        if copy is not None:
            self.retired.append(copy)
            self.events.append(f"{self.path}: truncated (copytruncate); reading the rest of "
                               f"{copy.source}")
        else:
            self.events.append(f"{self.path}: truncated; no uncompressed copy with our head "
                               f"found, reading from the start")
        h.pos = Position(self.path, old.dev, old.ino)
        return copy

    def _find_copy(self, pos: Position) -> _Handle | None:
        for sib, fd, st in _open_each(rotated_siblings(self.path)):
            if (st.st_dev, st.st_ino) != pos.ident and st.st_size >= pos.offset and \
                    self._head_ok(fd, pos, st.st_size):
                copy = replace(pos, dev=st.st_dev, ino=st.st_ino, retired_at=time.time())
                return _Handle(fd, copy, sib, once=True)
            os.close(fd)
        return None

    def _find_identity(self, pos: Position) -> _Handle | None:
        """A saved identity after a restart: same inode (renamed), else a copy by head hash."""
        for name, fd, st in _open_each([self.path, *rotated_siblings(self.path)]):
            if (st.st_dev, st.st_ino) == pos.ident and st.st_size >= pos.offset and \
                    self._head_ok(fd, pos, st.st_size):
                if name == self.path:
                    os.close(fd)  # still current: not a retired identity
                    continue
                retired = replace(pos, retired_at=pos.retired_at or time.time())
                return _Handle(fd, retired, name)
            os.close(fd)
        copy = self._find_copy(pos)
        return copy


# ---------------------------------------------------------------------------------------------
# waking up: inotify where the kernel has it, plain sleeping otherwise

_IN_FLAGS = (0x00000002 | 0x00000004 | 0x00000040 | 0x00000080 | 0x00000100 | 0x00000200
             | 0x00000008)  # MODIFY ATTRIB MOVED_FROM MOVED_TO CREATE DELETE CLOSE_WRITE


class Waker:
    """Sleeps until a watched directory changes or `timeout` passes.

    inotify (through libc with ctypes: no dependency for a 30-line binding) only shortens the
    wait; every wake-up re-checks files by `stat`, so a missed or absent event costs at most one
    poll interval, never a line.
    """

    def __init__(self, paths: list[str], use_inotify: bool = True) -> None:
        self.fd: int | None = None
        self.kind = "polling"
        if not use_inotify:
            return
        libc = _libc()
        try:
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC) if libc is not None else -1
        except AttributeError:
            return
        if fd < 0:
            return
        dirs = {os.path.dirname(os.path.abspath(p)) for p in paths}
        added = 0
        for d in dirs:
            if libc.inotify_add_watch(fd, os.fsencode(d), _IN_FLAGS) >= 0:
                added += 1
        if not added:
            os.close(fd)
            return
        self.fd, self.kind = fd, "inotify"

    def wait(self, timeout: float) -> None:
        if self.fd is None:
            time.sleep(timeout)
            return
        with contextlib.suppress(InterruptedError, OSError):
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if ready:
                self._drain()

    def _drain(self) -> None:
        assert self.fd is not None
        with contextlib.suppress(BlockingIOError, OSError):
            while True:
                buf = os.read(self.fd, 65536)
                if len(buf) < struct.calcsize("iIII"):
                    return

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
