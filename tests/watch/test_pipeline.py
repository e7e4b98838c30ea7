"""A backlog scanned by the worker process (watch/pipeline.py) counts exactly what inline
scanning counts, and a checkpoint taken with blocks in flight covers only fed lines, so a
crash then a restart neither loses nor repeats a line.

The backlog is the real elastic Apache log (from /work/shared/data/real-logs) four times, a
month apart, with proxy requests spliced in, stamped like the real line before them: ~9.5 MB,
three 4 MiB reads, each big enough for the worker.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from relayguard.watch import daemon
from relayguard.watch.config import parse_config
from relayguard.watch.daemon import Watcher, status
from relayguard.watch.pipeline import PIPELINE_MIN_BYTES
from tests.watch.helpers import REPO, ground_truth, proxy_events, state, wait_until, watcher

ELASTIC = REPO.parent / "shared/data/real-logs/apache-elastic-2015/apache_logs.gz"


def _backlog(path: Path, months: tuple[str, ...] = ("May", "Jun", "Jul", "Aug")) -> Path:
    """The real log once per month in `months`; after every 97th line a CONNECT to port 25
    (relayed-looking 200 or refused 405, seven clients) or an absolute-URI GET."""
    real = gzip.decompress(ELASTIC.read_bytes()).splitlines(keepends=True)
    out: list[bytes] = []
    n = 0
    for month in months:
        for i, line in enumerate(real):
            line = line.replace(b"/May/2015:", f"/{month}/2015:".encode())
            out.append(line)
            if i % 97:
                continue
            n += 1
            stamp = line[line.find(b"["):line.find(b"]") + 1].decode()
            if n % 3 == 0:
                req, status_size = f"GET http://shop{n % 11}.example.net/cart HTTP/1.1", \
                    f"200 {5120 + n % 13}"
            else:
                req = f"CONNECT mx{n}.victim.example:25 HTTP/1.1"
                status_size = "200 -" if n % 2 else "405 226"
            out.append(f'203.0.113.{n % 7} - - {stamp} "{req}" {status_size} "-" "-"\n'.encode())
    path.write_bytes(b"".join(out))
    return path


def _config(tmp_path: Path, log: Path, name: str, extra: str = "") -> Path:
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(f'[watch]\nfiles = ["{log}"]\nstart = "beginning"\nline_digest = true\n'
                   f'state = "{tmp_path / name}.sqlite"\n{extra}[alerts]\nstdout = true\n')
    return cfg


def _watcher(cfg: Path, worker: bool) -> tuple[Watcher, io.StringIO]:
    out = io.StringIO()
    w = Watcher(parse_config(cfg.read_text()), stdout=out)
    w.pipeline.use_worker = worker
    if worker:  # started and ready before the first block, so every block can go to it
        assert wait_until(w.pipeline.ready_worker, 20, 0.01), "no scan worker could start"
    return w, out


def test_the_worker_counts_exactly_what_inline_scanning_counts(tmp_path: Path) -> None:
    log = _backlog(tmp_path / "access.log")
    assert log.stat().st_size > 2 * 4 * 1024 * 1024  # three reads, each >= PIPELINE_MIN_BYTES
    lines, connects, digest = ground_truth([log])
    docs = {}
    for name, worker in (("inline", False), ("worker", True)):
        w, _out = _watcher(_config(tmp_path, log, name), worker)
        w.run(once=True)
        if worker:
            assert w.pipeline.scanned_by_worker >= 2
            assert w.pipeline.read_into_worker >= 1  # once the format is known: no copy
            assert w.pipeline.worker is None  # stopped with the watcher
        else:
            assert w.pipeline.scanned_by_worker == 0
        docs[name] = status(str(tmp_path / f"{name}.sqlite"))
    inline, by_worker = docs["inline"], docs["worker"]
    assert inline["lines"] == lines and inline["line_digest"] == digest
    assert proxy_events(inline, "proxy-smtp") == connects
    assert {i["kind"] for i in inline["incidents"]} >= {"proxy-smtp", "proxy-http"}
    # the alerts depend on how many lines each review saw (an incident can look alarming
    # half-way through a backlog), which varies from run to run: not compared
    for doc in docs.values():
        del doc["alerts_created"], doc["alerts_pending"]
    assert by_worker == inline  # counters, every incident with its samples, positions


def _saved(db: Path) -> tuple[int, int]:
    """(lines the saved detectors counted, lines before the saved offset) of one file."""
    with sqlite3.connect(db) as conn:
        (offset,) = conn.execute("SELECT offset FROM positions").fetchone()
    return int(status(str(db))["lines"]), offset


def _step_until_busy(w: Watcher) -> bool:
    for _ in range(10):
        w.step()
        if w.pipeline.busy:
            return True
    return False


def test_a_checkpoint_with_blocks_in_flight_covers_only_fed_lines(tmp_path: Path) -> None:
    """Checkpoint while the worker holds blocks, read more, then die without a shutdown:
    the saved offset ends exactly at the lines the saved detectors counted, and a restart
    reads every line once."""
    log = _backlog(tmp_path / "access.log", ("May", "Jun", "Jul", "Aug", "Sep", "Oct"))
    truth = ground_truth([log])
    cfg = _config(tmp_path, log, "state", "checkpoint_interval = 3600\n")
    w1, _out = _watcher(cfg, worker=True)
    w1.start()
    assert _step_until_busy(w1), "no block was in flight"
    w1.checkpoint()
    counted, offset = _saved(tmp_path / "state.sqlite")
    assert 0 < counted < truth[0]
    assert log.read_bytes()[:offset].count(b"\n") == counted
    # more blocks read and in flight (a step whose review alerts checkpoints, and drains)
    assert _step_until_busy(w1)
    assert w1.followers[str(log)].positions()[0].offset > offset
    # the crash: the process is gone with its worker, nothing is drained or saved
    assert w1.pipeline.worker is not None
    w1.pipeline.worker.close()
    w1.dispatcher.stop()
    w1.db.close()
    w1.lock.release()  # as the kernel does for a process that died
    w2, _out = _watcher(cfg, worker=True)
    w2.run(once=True)
    doc = status(str(tmp_path / "state.sqlite"))
    assert (doc["lines"], doc["line_digest"]) == (truth[0], truth[2])
    assert proxy_events(doc, "proxy-smtp") == truth[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie has exited already
        return fh.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.parametrize("kill", ["group", "watcher"])
def test_kill9_mid_backlog_then_restart_reads_every_line_once(tmp_path: Path,
                                                              kill: str) -> None:
    """A real watcher process scanning a growing backlog with its worker is killed with -9
    while lines keep coming (its whole process group, or the watcher alone: the worker then
    ends by itself), then restarted: every line counted once, none lost."""
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    months = ("May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    data = _backlog(tmp_path / "src.log", months).read_bytes()
    total = data.count(b"\n")
    cfg = _config(tmp_path, log, "state", "poll_interval = 0.05\ncheckpoint_interval = 0.05\n")
    db = tmp_path / "state.sqlite"
    args = ["--config", str(cfg), "--state", str(db)]

    def append() -> None:  # 2 MiB pieces (cut anywhere) every 40 ms: a steady backlog
        with open(log, "ab") as fh:
            for start in range(0, len(data), 2 * PIPELINE_MIN_BYTES):
                fh.write(data[start:start + 2 * PIPELINE_MIN_BYTES])
                fh.flush()
                time.sleep(0.04)

    writer = threading.Thread(target=append, daemon=True)
    with watcher(tmp_path, args, "first") as w1:
        assert wait_until(lambda: db.exists() and state(db).get("lines") == 0, 20)
        writer.start()
        started = wait_until(lambda: "worker process (pid " in w1.stderr(), 20, 0.005)
        wait_until(lambda: state(db)["lines"] > total // 3, 20, 0.005)  # checkpoints came
        if kill == "group":
            w1.kill9()
        else:
            os.kill(w1.proc.pid, signal.SIGKILL)
            w1.proc.wait(timeout=10)
        assert started, w1.stderr()
        pid = int(w1.stderr().split("worker process (pid ")[1].split(")")[0])
        assert wait_until(lambda: not _alive(pid), 10), "the scan worker outlived the watcher"
    writer.join(30)
    assert not writer.is_alive() and log.stat().st_size == len(data)
    assert total // 3 < state(db)["lines"] < total  # killed mid-way
    truth = ground_truth([log])
    with watcher(tmp_path, args, "second") as w2:
        assert wait_until(lambda: state(db).get("lines") == truth[0], 60), w2.stderr()
        assert w2.terminate() == 0, w2.stderr()
    doc = state(db)
    assert (doc["lines"], doc["line_digest"]) == (truth[0], truth[2])
    assert proxy_events(doc, "proxy-smtp") == truth[1]
    assert "Traceback" not in w1.stderr() + w2.stderr()


@pytest.mark.parametrize("how", ["cannot-start", "exits-at-once", "killed-mid-backlog",
                                 "hung-mid-backlog", "killed-with-blocks-read-into-it"])
def test_without_a_working_worker_every_line_is_scanned_here(
        tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """No interpreter to start (sandbox), a worker that exits at once, one killed (OOM) or
    one hung (stopped) with blocks in flight: the watcher says so, scans in its own process
    and counts every line once."""
    log = _backlog(tmp_path / "access.log")
    truth = ground_truth([log])
    cfg = _config(tmp_path, log, "state")
    caplog.set_level("INFO", logger="relayguard.watch")
    if how in ("cannot-start", "exits-at-once"):
        monkeypatch.setattr("sys.executable", str(tmp_path / "no-python") if
                            how == "cannot-start" else "/bin/false")
    monkeypatch.setattr("relayguard.watch.pipeline.RESULT_TIMEOUT", 1.0)
    w, _out = _watcher(cfg, worker=False)
    w.pipeline.use_worker = True  # started on the first big block
    w.start()
    if how.startswith(("killed", "hung")):
        assert wait_until(w.pipeline.ready_worker, 20, 0.01)
        assert w.pipeline.worker is not None
        # stopped before it is handed blocks: a scan takes milliseconds, and a worker that
        # answered them all before the signal would leave nothing in flight to lose
        os.kill(w.pipeline.worker.pid, signal.SIGSTOP)
        assert _step_until_busy(w)
        if how == "killed-with-blocks-read-into-it":  # the blocks live in its memory
            for _ in range(10):
                if w.pipeline.read_into_worker:
                    break
                w.step()
            assert w.pipeline.read_into_worker
        if how.startswith("killed"):
            os.kill(w.pipeline.worker.pid, signal.SIGKILL)
    for _ in range(100):
        if not w.step() and not w.pipeline.busy:
            break
    w.shutdown()
    doc = status(str(tmp_path / "state.sqlite"))
    assert (doc["lines"], doc["line_digest"]) == (truth[0], truth[2])
    assert proxy_events(doc, "proxy-smtp") == truth[1]
    assert w.pipeline.worker is None and not w.pipeline.use_worker
    assert "scanning in this process" in caplog.text
    assert {"killed-mid-backlog": "killed by signal 9",
            "killed-with-blocks-read-into-it": "killed by signal 9",
            "hung-mid-backlog": "gave no result within 1 s"}.get(how, "") in caplog.text


def test_a_format_that_cannot_be_pickled_is_parsed_by_the_watcher() -> None:
    """The worker is handed the format to parse candidates with; one that cannot travel to it
    (a time parser made on the fly) leaves the parsing to the watcher, nothing fails."""
    import dataclasses

    from relayguard.logs.formats import APACHE_FORMATS, compile_apache
    from relayguard.watch.scanworker import ScanWorker

    fmt = dataclasses.replace(compile_apache(APACHE_FORMATS["combined"]),
                              time_parser=lambda text: 0.0)
    data = (b'203.0.113.9 - - [01/Mar/2026:10:00:00 +0000] "CONNECT mx.example.net:25 '
            b'HTTP/1.1" 200 - "-" "-"\n') * 3
    worker = ScanWorker(1 << 16)
    try:
        assert wait_until(worker.check_ready, 20)
        worker.submit(data, 3, fmt)
        worker.submit(data, 3, compile_apache(APACHE_FORMATS["combined"]))
        unparsed, parsed = worker.result(20), worker.result(20)
    finally:
        worker.close()
    assert unparsed.fields is None and len(unparsed.candidates) == 3
    assert parsed.fields is not None and len(parsed.fields) == 3


def test_a_backlog_is_reviewed_at_most_every_interval_and_once_it_is_read(
        tmp_path: Path, monkeypatch) -> None:
    """While blocks are in flight incidents are reviewed at most every BACKLOG_REVIEW (a review
    of every block cost a tenth of the reading), and at once when the backlog is read: the
    same incidents and alerts come out, the middle of a backlog just is not reviewed."""
    monkeypatch.setattr(daemon, "BACKLOG_REVIEW", 3600.0)
    log = _backlog(tmp_path / "access.log", ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul",
                                             "Aug", "Sep", "Oct", "Nov", "Dec"))
    w, out = _watcher(_config(tmp_path, log, "limited"), True)
    reviews: list[bool] = []
    review = w.review
    monkeypatch.setattr(w, "review", lambda now, force=False: (
        reviews.append(w.pipeline.busy), review(now, force))[1])
    w.run(once=True)
    assert w.pipeline.scanned_by_worker >= 2
    # in the backlog only the first review (the last one was never), then one once it is read
    assert reviews.count(True) <= 1 and reviews[-1] is False
    alerts = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {a["incident"]["kind"] for a in alerts} >= {"proxy-smtp", "proxy-http"}
    assert status(str(tmp_path / "limited.sqlite"))["lines"] == w.engine.counters.lines > 0


def test_the_scan_worker_keeps_its_blocks_memory_and_starts_without_ctypes() -> None:
    """The worker copies each block out of its slot: glibc is told (by the variables it reads
    at start) to keep that memory, as the watcher tells it with mallopt; and the worker does not
    load ctypes for it (its start, before which blocks are scanned here, is a tenth shorter)."""
    from relayguard.logs.follow import KEEP_BLOCKS_ENV
    from relayguard.watch.scanworker import ScanWorker

    worker = ScanWorker(1 << 16)
    try:
        assert wait_until(worker.check_ready, 20)
        environ = Path(f"/proc/{worker.pid}/environ").read_bytes().split(b"\0")
        maps = Path(f"/proc/{worker.pid}/maps").read_text()
    finally:
        worker.close()
    for name, value in KEEP_BLOCKS_ENV.items():
        assert f"{name}={value}".encode() in environ
    assert "_ctypes" not in maps  # the C part of ctypes is a shared object of its own


STOPPED_AT_ONCE = """
import sys
sys.path.insert(0, sys.argv[1])
from relayguard.watch.scanworker import ScanWorker
for _ in range(5):
    ScanWorker(1 << 16).close()  # the watcher done before its worker said it is ready
"""


def test_a_worker_stopped_before_it_is_ready_ends_quietly() -> None:
    """A watcher that ends (a `--once` run, a restart) while its worker is still starting
    closes the worker's pipes: the worker's "ready" then meets a closed pipe, which must end
    it quietly, not print a traceback into the watcher's log (seen in a CI run)."""
    proc = subprocess.run([sys.executable, "-c", STOPPED_AT_ONCE, str(REPO)],
                          capture_output=True, text=True, timeout=120, check=True)
    assert "Traceback" not in proc.stderr, proc.stderr
