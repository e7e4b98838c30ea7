"""A child process that runs `scan_chunk` on the blocks `watch` hands it (see pipeline.py).

Blocks travel through a shared memory file (memfd) of SLOTS slots: read into a slot by the
watcher (or copied in) and scanned there in place, where a pipe costs the child three times as
much in small reads. Jobs and results are small pickles over two pipes, answered in order.
The child is a fresh interpreter (`-I -S`: only this module and the fast path imported,
~0.07 s to start), not a fork of the threaded watcher. It ignores the signals a terminal or
systemd sends the whole process group and exits when its job pipe closes: the watcher finishes
its blocks first, and a watcher killed with -9 takes the worker with it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import signal
import subprocess
import sys
from collections import deque
from multiprocessing.connection import Connection

from relayguard.logs.fastpath import ChunkResult, scan_chunk
from relayguard.logs.formats import AccessFormat

SLOTS = 3  # blocks the worker holds at most: one being scanned, two waiting
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# -I -S: no environment, no site-packages (the fast path needs only the standard library
# and relayguard's own optional C scanner, found beside it under _ROOT)
_CHILD = ("import sys; sys.path.insert(0, {root!r}); "
          "from relayguard.watch.scanworker import serve; serve({fd}, {size})")


class WorkerError(Exception):
    """The worker died, hung or failed on a block: the caller scans inline instead."""


class ScanWorker:
    """The watcher's side: start the child, hand it blocks, take results oldest first.

    The constructor raises OSError when no child can be started (no memfd, no fork or exec
    allowed: sandbox, limits); `ready` turns true once the child has imported its modules."""

    def __init__(self, slot_bytes: int) -> None:
        self.slot_bytes = slot_bytes  # the largest block it takes
        if not hasattr(os, "memfd_create"):
            raise OSError("cannot start a scan worker: no memfd_create here")
        fd = os.memfd_create("relayguard-scan", os.MFD_CLOEXEC)
        ends: list[int] = []
        try:
            os.ftruncate(fd, SLOTS * slot_bytes)
            self.shm = mmap.mmap(fd, SLOTS * slot_bytes)
            job_r, job_w = os.pipe()
            ends += [job_r, job_w]
            res_r, res_w = os.pipe()
            ends += [res_r, res_w]
            code = _CHILD.format(root=_ROOT, fd=fd, size=slot_bytes)
            # imported here, not with the module, which the child imports too (ctypes)
            from relayguard.logs.follow import KEEP_BLOCKS_ENV
            self.proc = subprocess.Popen(  # what it allocates per block (results; a copy
                [sys.executable, "-I", "-S", "-c", code],  # on rare paths) memory kept
                stdin=job_r, stdout=res_w, stderr=None, pass_fds=(fd,), close_fds=True,
                env={**os.environ, **KEEP_BLOCKS_ENV})
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            for end in ends:
                os.close(end)
            if hasattr(self, "shm"):
                self.shm.close()
            raise OSError(f"cannot start a scan worker: {exc}") from None
        finally:
            os.close(fd)  # the mapping (and the child's copy) keep the memory
        os.close(job_r)
        os.close(res_w)
        self.jobs = Connection(job_w, readable=False)
        self.results = Connection(res_r, writable=False)
        self.pending: deque[int] = deque()  # slots of the blocks sent, oldest first
        self.lent: set[int] = set()  # slots a block is being read into
        self.ready = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_ready(self) -> bool:
        """True once the child said it is ready (never blocks)."""
        if not self.ready and self._answered(0):
            self.ready = self._recv() == "ready"
        return self.ready

    def has_room(self) -> bool:
        return self.ready and len(self.pending) + len(self.lent) < SLOTS

    def lend(self) -> Slot | None:
        """A free slot to read a block into (`submit` it, or release it), if one is free."""
        if not self.has_room():
            return None
        index = self._free_slot()
        self.lent.add(index)
        start = index * self.slot_bytes
        return Slot(self, index, memoryview(self.shm)[start:start + self.slot_bytes])

    def _free_slot(self) -> int:
        """A slot neither holding a block sent nor lent to a read (`has_room` is true)."""
        return next(s for s in range(SLOTS) if s not in self.pending and s not in self.lent)

    def submit(self, data: bytes | memoryview, nlines: int, fmt: AccessFormat | None = None,
               slot: Slot | None = None) -> None:
        """Hand one block of whole lines to the worker (`has_room` must be true), copied
        into a free slot, or read into `slot` already; with `fmt` it parses the block's
        candidate lines too."""
        if len(data) > self.slot_bytes:
            raise WorkerError(f"a block of {len(data)} bytes does not fit a slot")
        if slot is not None:
            index = slot.index
            slot.release()
        else:
            index = self._free_slot()
            start = index * self.slot_bytes
            self.shm[start:start + len(data)] = data
        self._send(index, len(data), nlines, fmt)

    def _send(self, slot: int, length: int, nlines: int, fmt: AccessFormat | None) -> None:
        try:
            try:
                self.jobs.send((slot, length, nlines, fmt))
            except (pickle.PicklingError, TypeError, AttributeError):
                # a format that cannot travel (a time parser made on the fly): the worker
                # scans, the watcher parses (`send` pickles before it writes anything)
                self.jobs.send((slot, length, nlines, None))
        except OSError:
            raise self._gone() from None
        self.pending.append(slot)

    def done(self) -> bool:
        """True when the oldest block's result is there (never blocks)."""
        return bool(self.pending) and self._answered(0)

    def result(self, timeout: float) -> ChunkResult:
        """The oldest block's result, waiting at most `timeout` seconds for it."""
        if not self._answered(timeout):
            raise WorkerError(f"scan worker gave no result within {timeout:.0f} s")
        self.pending.popleft()
        answer = self._recv()
        if not isinstance(answer, ChunkResult):
            raise WorkerError(f"scan worker failed: {answer}")
        return answer

    def _answered(self, timeout: float) -> bool:
        try:
            return self.results.poll(timeout)
        except OSError:
            raise self._gone() from None

    def _recv(self) -> object:
        try:
            return self.results.recv()
        except (EOFError, OSError):
            raise self._gone() from None

    def _gone(self) -> WorkerError:
        """The error for a child that closed its pipes: how it ended, when it has."""
        try:
            code = self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return WorkerError(f"scan worker (pid {self.pid}) stopped answering")
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return WorkerError(f"scan worker (pid {self.pid}) {how}")

    def close(self) -> None:
        """Stop the child (closing its pipes ends it) and free the shared memory."""
        self.jobs.close()
        self.results.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2)  # at most the block it is scanning
        if self.proc.returncode is None:  # hung, or stopped
            self.proc.kill()
            self.proc.wait(timeout=5)
        with contextlib.suppress(BufferError):  # a block still read into a slot: the
            self.shm.close()  # memory goes with the last view of it


class Slot:
    """A worker's slot lent to read one block into (`follow.ReadBuffer`): submitted with the
    block, which then travels without a copy, or released unused."""

    def __init__(self, worker: ScanWorker, index: int, view: memoryview) -> None:
        self.worker, self.index, self.view = worker, index, view

    def release(self) -> None:
        self.worker.lent.discard(self.index)


def serve(fd: int, slot_bytes: int) -> None:
    """The child: scan each block named on stdin, answer on stdout, until stdin closes."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # sent to the whole group
        signal.signal(sig, signal.SIG_IGN)  # (Ctrl-C, systemd): the watcher then closes our pipe
    shm = mmap.mmap(fd, SLOTS * slot_bytes)
    jobs, results = Connection(0, writable=False), Connection(1, readable=False)
    sys.stdout = sys.stderr  # nothing but answers may reach the result pipe
    try:
        results.send("ready")
    except OSError:  # the watcher stopped (closed our pipes) before we were ready
        return
    while True:
        try:
            slot, length, nlines, fmt = jobs.recv()
        except (EOFError, OSError):
            return
        start = slot * slot_bytes
        answer: object
        try:  # in place: the slot is the watcher's again only once this answer is read
            with memoryview(shm) as whole:
                answer = scan_chunk(whole[start:start + length], nlines, fmt)
        except Exception as exc:  # a bug must not stop the watcher: it scans inline instead
            answer = f"{type(exc).__name__}: {exc}"
        try:
            results.send(answer)
        except OSError:  # the watcher stopped listening
            return
