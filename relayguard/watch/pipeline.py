"""Feeding batches to the engine in the order they were read, big ones scanned on a second core.

A backlog (batches of at least PIPELINE_MIN_BYTES of an access log the fast path reads) runs as
a pipeline: while a worker process (scanworker.py) scans block N, the watcher reads block N+1
and feeds the detectors the result of block N-1. When the worker already holds SLOTS blocks
the watcher scans the next one itself, so both cores stay busy whichever is slower (the
watcher's own share, reading and the detectors, is about the worker's, so the worker holds
three: with two it ran dry while the watcher scanned, ~15 % slower). Blocks are fed
strictly in read order and at most MAX_QUEUED are read but not yet fed, so memory stays
bounded. Small batches (the steady state: a few lines at a time) are fed at once when nothing
is in flight, so alert latency does not grow. `drain()` feeds everything in flight; the daemon
calls it before each checkpoint, so saved positions never cover a line the detectors have not
seen. Without a worker (none can be started: sandbox, limits; or it died) every batch is
scanned in this process, as `scan_plain_file` falls back for `logs`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from relayguard.logs.fastpath import ChunkResult, scan_chunk
from relayguard.logs.follow import READ_BYTES, Batch
from relayguard.watch.engine import Engine, FileFormat
from relayguard.watch.scanworker import SLOTS, ScanWorker, Slot, WorkerError

log = logging.getLogger("relayguard.watch")

PIPELINE_MIN_BYTES = 1 << 20  # smaller batches are fed at once (latency before throughput)
MAX_QUEUED = SLOTS + 1  # batches read but not fed: SLOTS at the worker, one scanned here
RESULT_TIMEOUT = 30.0  # a worker this late on one block (~15 ms of work) is taken for hung
WORKER_IDLE_STOP = 60.0  # a worker with no block for this long is stopped (memory back)


@dataclass
class _Entry:
    batch: Batch
    fmt: FileFormat
    scanned: ChunkResult | None = None  # None: the engine scans it when it is fed
    at_worker: bool = False


def own(batch: Batch) -> None:
    """A batch read into a worker's slot, given its own bytes (the slot goes back): for a
    block the worker will not scan after all."""
    if isinstance(batch.buffer, Slot):
        batch.data, buffer, batch.buffer = batch.as_bytes(), batch.buffer, None
        buffer.release()


class Pipeline:
    """Ordered feeding of one engine, with an optional scan worker (see module docstring)."""

    def __init__(self, engine: Engine, use_worker: bool = True) -> None:
        self.engine = engine
        self.use_worker = use_worker  # turned off for good once a worker failed
        self.worker: ScanWorker | None = None
        self.queue: deque[_Entry] = deque()
        self.last_job = 0.0
        self.scanned_by_worker = 0  # blocks handed to a worker (tests look at it)
        self.read_into_worker = 0  # of which read straight into its slot

    @property
    def busy(self) -> bool:
        return bool(self.queue)

    def reader(self, fmt: FileFormat | None) -> Callable[[int], Slot | None] | None:
        """For the follower of a file in `fmt`: a free worker slot to read a big block into
        (it then reaches the worker without the copy `submit` makes), or None."""
        if fmt is None or self.engine.fast_access(fmt) is None:
            return None
        return self._lend

    def _lend(self, size: int) -> Slot | None:
        if size < PIPELINE_MIN_BYTES:
            return None
        worker = self.ready_worker()
        return worker.lend() if worker is not None else None

    def feed(self, batch: Batch, fmt: FileFormat) -> None:
        """Take one batch: fed now when nothing is in flight and it is small, else queued
        behind the batches in flight (scanned meanwhile by the worker or here)."""
        if self.queue:
            self.collect(keep=MAX_QUEUED - 1)  # room for this one; frees worker slots
        entry = _Entry(batch, fmt)
        big = len(batch.data) >= PIPELINE_MIN_BYTES and self.engine.fast_access(fmt) is not None
        worker = self.ready_worker() if big else None
        slot = batch.buffer if isinstance(batch.buffer, Slot) else None
        if slot is not None and (worker is None or slot.worker is not worker):
            own(batch)  # read into a slot but not for the worker after all: a copy here
            slot = None
        if big:
            if worker is not None and (slot is not None or worker.has_room()):
                self._submit(worker, entry)  # (a slot read into is that worker's room)
            elif self.queue:  # the worker is full: this core scans the next block
                entry.scanned = scan_chunk(batch.as_bytes(), batch.lines)
        if not self.queue and not entry.at_worker:
            self.engine.feed(batch, fmt, entry.scanned)
            return
        self.queue.append(entry)
        self.collect()

    def collect(self, keep: int = MAX_QUEUED) -> int:
        """Feed the finished batches at the head of the queue, waiting for unfinished ones
        while more than `keep` are in flight (`keep=0`: everything). Returns lines fed."""
        fed = 0
        while self.queue:
            head = self.queue[0]
            if head.at_worker and (len(self.queue) > keep or self._done()):
                head.scanned = self._result()  # None once the worker failed: scanned here
                head.at_worker = False
            if head.at_worker:
                break
            self.queue.popleft()
            self.engine.feed(head.batch, head.fmt, head.scanned)
            fed += head.batch.lines
        if self.worker is not None and not self.queue and \
                time.monotonic() - self.last_job >= WORKER_IDLE_STOP:
            log.info("scan worker (pid %d) stopped: no backlog for %.0f s", self.worker.pid,
                     WORKER_IDLE_STOP)
            self._stop_worker()
        return fed

    def drain(self) -> int:
        """Feed every batch in flight (before a checkpoint, at shutdown)."""
        return self.collect(keep=0)

    def close(self) -> None:
        self.drain()
        self._stop_worker()

    # -- the worker --------------------------------------------------------------------------
    def ready_worker(self) -> ScanWorker | None:
        """The worker when it can take blocks; started on the first backlog (blocks are
        scanned here until it is ready, so a start never delays anything)."""
        if self.worker is None:
            if not self.use_worker:
                return None
            try:
                self.worker = ScanWorker(READ_BYTES)  # a batch is at most one read
            except OSError as exc:
                log.info("%s; scanning in this process", exc)
                self.use_worker = False
                return None
            self.last_job = time.monotonic()
        was_ready = self.worker.ready
        try:
            ready = self.worker.check_ready()
        except WorkerError as exc:
            self._fail(exc)
            return None
        if ready and not was_ready:
            log.info("backlog: scanning blocks in a worker process (pid %d)", self.worker.pid)
        return self.worker if ready else None

    def _submit(self, worker: ScanWorker, entry: _Entry) -> None:
        batch = entry.batch
        slot = batch.buffer if isinstance(batch.buffer, Slot) else None
        try:
            worker.submit(batch.data, batch.lines, self.engine.fast_access(entry.fmt), slot)
        except WorkerError as exc:
            own(batch)
            self._fail(exc)
            return
        entry.at_worker = True
        self.last_job = time.monotonic()
        self.scanned_by_worker += 1
        self.read_into_worker += slot is not None

    def _done(self) -> bool:
        """True when the worker's oldest block is finished (or the worker failed)."""
        if self.worker is None:
            return True
        try:
            return self.worker.done()
        except WorkerError as exc:
            self._fail(exc)
            return True

    def _result(self) -> ChunkResult | None:
        """The worker's oldest block's result; None (the engine scans it) once it failed."""
        if self.worker is None:
            return None
        try:
            return self.worker.result(RESULT_TIMEOUT)
        except WorkerError as exc:
            self._fail(exc)
            return None

    def _fail(self, exc: WorkerError) -> None:
        """A worker that died, hung or failed: its blocks are scanned here, and every later
        one too (a crash loop of workers would cost more than it saves)."""
        log.warning("%s; scanning in this process from now on", exc)
        for entry in self.queue:
            entry.at_worker = False
            own(entry.batch)
        self.use_worker = False
        self._stop_worker()

    def _stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None
