#!/usr/bin/env python3
"""Benchmark `relayguard watch` against `fail2ban-server` on the same growing access log.

Two figures per tool, both while a writer appends to a real file:
- sustained throughput: N combined-format lines (1 % of them CONNECT to port 25) appended as
  fast as the writer can, after a warm-up of N/10 such lines the tool has read (so that what
  is measured is the tool following a busy log, not its start); time from the first write
  until the tool has read every line (relayguard: `lines_read_total` on its metrics endpoint;
  fail2ban: `Total failed` of a jail whose filter matches the CONNECT lines, i.e. it has
  parsed up to the last one);
- alert latency: over a steady background of ordinary lines, one relaying CONNECT line at a
  time; time from its write() to the alert (relayguard: the JSON line on its stdout;
  fail2ban: its ban action, maxretry = 1, writing a timestamp). Median and p99.

`watch` scans appended blocks of 1 MiB or more in a worker process on the second core,
started at the first such block (~0.07 s; blocks are scanned inline until it is ready) and
stopped after a minute without one: the warm-up starts it, as a busy log keeps it running.
`--cold` measures without the warm-up, the worker's start included (on 5M lines, ~0.6 s,
about a tenth of the run). The end of each run is found by polling (relayguard
every 50 ms, fail2ban every 0.1 s plus a client start) and put midway between the last
"not yet" and the first "done". Runs on loopback/tmp only. fail2ban is optional
(`apt-get install -y fail2ban`, or scripts/install-bench-deps); without it only relayguard's
figures are printed. Throughput runs `--rounds` times per tool, alternating, and the medians
are compared. Usage:
    python bench/watch_bench.py [--lines 5000000] [--f2b-lines 300000] [--rounds 3] [--samples 40]
                                [--cold] [--no-fail2ban]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.9.40"
TS_FMT = "%d/%b/%Y:%H:%M:%S +0000"


def stamp(t: float) -> str:
    return time.strftime(TS_FMT, time.gmtime(t))


def ordinary(i: int, t: float) -> str:
    return (f"10.{i % 200}.{i % 250}.{i % 251 + 1} - - [{stamp(t)}] \"GET /page/{i} HTTP/1.1\" "
            f"200 {512 + i % 900} \"-\" \"Mozilla/5.0 (bench)\"\n")


def connect_line(i: int, t: float) -> str:
    return (f"203.0.{i // 250 % 250}.{i % 250 + 1} - - [{stamp(t)}] \"CONNECT mx{i}.victim.example"
            f":25 HTTP/1.1\" 200 - \"-\" \"-\"\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) so far of process `pid` itself and of its descendants
    (the watcher's scan worker, fail2ban's threads are its own), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")

    def own(p: int) -> float:
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            return 0.0
        return (int(fields[11]) + int(fields[12])) / tick

    def children(p: int) -> list[int]:
        out: list[int] = []
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    out += [int(c) for c in fh.read().split()]
        except OSError:
            pass
        return out

    kids, todo = 0.0, children(pid)
    for _ in range(10_000):  # bounded walk of the tree
        if not todo:
            break
        c = todo.pop()
        kids += own(c)
        todo += children(c)
    return own(pid), kids


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


# ---------------------------------------------------------------------------------------------
# relayguard

class Relayguard:
    def __init__(self, work: Path, log: Path, latency: bool) -> None:
        self.port = free_port()
        cfg = work / "watch.toml"
        cfg.write_text(
            "[watch]\npoll_interval = 0.25\nstart = \"beginning\"\ncheckpoint_interval = 1\n"
            "[incidents]\nupdate_interval = 3600\nquiet = 36000\n"
            f"[alerts]\nstdout = true\nbatch_window = {0 if latency else 0.2}\n")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relayguard", "watch", str(log), "-c", str(cfg),
             "--state", str(work / f"state-{time.monotonic_ns()}.sqlite"),
             "--metrics", f"{HOST}:{self.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, bufsize=0,
            start_new_session=True)
        self.alert_times: list[float] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.lines_read()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("relayguard watch did not start")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for _line in self.proc.stdout:
            self.alert_times.append(time.time())

    def lines_read(self) -> int:
        url = f"http://{HOST}:{self.port}/metrics"
        text = urllib.request.urlopen(url, timeout=2).read().decode()
        for ln in text.splitlines():
            if ln.startswith("relayguard_watch_lines_read_total "):
                return int(float(ln.split()[1]))
        return 0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# ---------------------------------------------------------------------------------------------
# fail2ban

FILTER = r"""[Definition]
failregex = ^<HOST> \S+ \S+ \[\] "CONNECT [^ "]+:(?:25|465|587) HTTP/1\.[01]"
datepattern = %%d/%%b/%%Y:%%H:%%M:%%S %%z
"""
ACTION = """[Definition]
actionstart =
actionstop =
actioncheck =
actionban = echo "<ip>" >> {bans}
actionunban =
"""


class Fail2ban:
    def __init__(self, work: Path, log: Path, maxretry: int) -> None:
        self.dir = work / f"f2b-{time.monotonic_ns()}"
        (self.dir / "filter.d").mkdir(parents=True)
        (self.dir / "action.d").mkdir()
        self.sock = self.dir / "f2b.sock"
        self.bans = self.dir / "bans"
        self.bans.write_text("")
        (self.dir / "fail2ban.conf").write_text(
            f"[Definition]\nloglevel = WARNING\nlogtarget = {self.dir}/f2b.log\n"
            f"socket = {self.sock}\npidfile = {self.dir}/f2b.pid\ndbfile = :memory:\n")
        (self.dir / "filter.d" / "rg-connect.conf").write_text(FILTER)
        (self.dir / "action.d" / "rg-record.conf").write_text(ACTION.format(bans=self.bans))
        (self.dir / "jail.conf").write_text(
            f"[DEFAULT]\nbackend = auto\n[rg-connect]\nenabled = true\nfilter = rg-connect\n"
            f"logpath = {log}\nmaxretry = {maxretry}\nfindtime = 315360000\n"
            f"bantime = 3600\naction = rg-record\n")
        self.proc = subprocess.Popen(
            ["fail2ban-server", "-f", "-x", "-c", str(self.dir), "-s", str(self.sock),
             "-p", str(self.dir / "f2b.pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.failed() is not None:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("fail2ban-server did not start: " +
                           (self.dir / "f2b.log").read_text(errors="replace")[-500:])

    def failed(self) -> int | None:
        res = subprocess.run(["fail2ban-client", "-s", str(self.sock), "status", "rg-connect"],
                             capture_output=True, text=True, timeout=30, check=False)
        for ln in res.stdout.splitlines():
            if "Total failed:" in ln:
                return int(ln.rsplit(":", 1)[1])
        return None

    def stop(self) -> None:
        subprocess.run(["fail2ban-client", "-s", str(self.sock), "stop"],
                       capture_output=True, timeout=30, check=False)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# ---------------------------------------------------------------------------------------------
# the two measurements

def lines(start: int, stop: int, base: float) -> tuple[list[bytes], int]:
    """Lines start..stop-1 of a throughput run in blocks of 2,000, and how many are CONNECTs."""
    block: list[str] = []
    blocks: list[bytes] = []
    connects = 0
    for i in range(start, stop):
        if i % 100 == 99:
            block.append(connect_line(i, base + i / 1000))
            connects += 1
        else:
            block.append(ordinary(i, base + i / 1000))
        if len(block) == 2000:
            blocks.append("".join(block).encode())
            block = []
    if block:
        blocks.append("".join(block).encode())
    return blocks, connects


def throughput(work: Path, n: int, tool: str, timeout: float, warm: int
               ) -> tuple[float, float, str] | None:
    """(lines/s, writer lines/s, where the CPU went) for reading n freshly appended lines,
    after `warm` lines it has read."""
    log = work / f"tp-{tool}.log"
    log.write_text("")
    base = time.time() - 3600
    warm_blocks, warm_connects = lines(0, warm, base)
    blocks, connects = lines(warm, warm + n, base)
    t_ref: Relayguard | Fail2ban
    if tool == "relayguard":
        t_ref = Relayguard(work, log, latency=False)

        def read(want: int, _connects: int) -> bool:
            return t_ref.lines_read() >= want  # type: ignore[union-attr]
    else:
        t_ref = Fail2ban(work, log, maxretry=10**9)

        def read(_want: int, connects: int) -> bool:
            return (t_ref.failed() or 0) >= connects  # type: ignore[union-attr]

    def done() -> bool:
        return read(warm + n, warm_connects + connects)
    try:
        with open(log, "ab") as fh:
            if warm:
                fh.write(b"".join(warm_blocks))
                fh.flush()
                deadline = time.monotonic() + timeout
                while not read(warm, warm_connects):
                    if time.monotonic() > deadline:
                        return None
                    time.sleep(0.1)
                time.sleep(0.5)  # (a worker started by the warm-up's last block is ready)
            cpu0 = tree_cpu(t_ref.proc.pid)
            t0 = time.monotonic()
            writer0 = time.thread_time()
            for b in blocks:
                fh.write(b)
                fh.flush()
        t_written = time.monotonic() - t0
        writer = time.thread_time() - writer0
        # the moment the last line was read lies after the start of the last poll that said
        # "not yet" and before the end of the first that said "done": take the middle. Polls
        # cost the tools time (each is an HTTP request to the watcher's metrics thread, which
        # takes the GIL: at 10 ms intervals relayguard read ~10 % fewer lines/s; fail2ban's
        # cost a client start, ~0.2 s), so they come every 50 ms and 0.1 s
        deadline = t0 + timeout
        last_miss = t0
        while True:
            asked = time.monotonic()
            if done():
                break
            last_miss = asked
            if asked > deadline:
                return None
            time.sleep(0.05 if tool == "relayguard" else 0.1)
        elapsed = (last_miss + time.monotonic()) / 2 - t0
        cpu1 = tree_cpu(t_ref.proc.pid)
        own, kids = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        # both figures include the polls' share (a metrics request, a client start)
        where = (f"CPU in the run: {tool} {own:.2f} s" +
                 (f", its scan worker {kids:.2f} s" if tool == "relayguard" else
                  f", its children {kids:.2f} s" if kids else "") +
                 f", the writer {writer:.2f} s; wall {elapsed:.2f} s on "
                 f"{os.cpu_count()} CPUs")
        return n / elapsed, n / max(t_written, 1e-9), where
    finally:
        t_ref.stop()


def latency(work: Path, samples: int, tool: str, background: int) -> list[float]:
    """Seconds from writing one relaying line to the tool's alert, `samples` times."""
    log = work / f"lat-{tool}.log"
    log.write_text("")
    t_ref: Relayguard | Fail2ban
    if tool == "relayguard":
        t_ref = Relayguard(work, log, latency=True)

        def alerts() -> int:
            return len(t_ref.alert_times)  # type: ignore[union-attr]
    else:
        t_ref = Fail2ban(work, log, maxretry=1)

        def alerts() -> int:
            return len(t_ref.bans.read_text().splitlines())  # type: ignore[union-attr]
    stop = threading.Event()
    lock = threading.Lock()
    fh = open(log, "ab", buffering=0)  # noqa: SIM115 - closed below

    def noise() -> None:
        i = 0
        while not stop.is_set():
            t = time.time()
            with lock:
                fh.write("".join(ordinary(i + k, t) for k in range(background // 20)).encode())
            i += background // 20
            time.sleep(0.05)

    bg = threading.Thread(target=noise, daemon=True)
    bg.start()
    out: list[float] = []
    try:
        time.sleep(1.0)
        # relayguard: each sample opens a new incident (log time 2 h after the last one);
        # fail2ban: each sample is a new address (a banned one is not banned again)
        base = time.time() - samples * 7200 - 3600
        for k in range(samples):
            before = alerts()
            t = base + k * 7200 if tool == "relayguard" else time.time()
            line = connect_line(10_000 + k, t).encode()
            with lock:
                t0 = time.time()
                fh.write(line)
            deadline = time.monotonic() + 10
            while alerts() == before and time.monotonic() < deadline:
                time.sleep(0.002)
            if alerts() == before:
                print(f"  {tool}: no alert within 10 s for sample {k}", file=sys.stderr)
                continue
            got = t_ref.alert_times[-1] if tool == "relayguard" else time.time()  # type: ignore[union-attr]
            out.append(got - t0)
            time.sleep(0.2)
    finally:
        stop.set()
        bg.join(5)
        fh.close()
        t_ref.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=5_000_000)
    ap.add_argument("--f2b-lines", type=int, default=300_000,
                    help="fail2ban gets fewer lines (it is slow); rates are per second")
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--background", type=int, default=2000, help="ordinary lines/s meanwhile")
    ap.add_argument("--rounds", type=int, default=3,
                    help="throughput runs per tool, alternating; the median is compared "
                         "(one run on this VM varies by a quarter)")
    ap.add_argument("--cold", action="store_true",
                    help="no warm-up: the first lines a tool sees are the measured ones")
    ap.add_argument("--no-fail2ban", action="store_true")
    args = ap.parse_args()
    samples = min(args.samples, 50)  # an incident kind holds at most 50 incidents
    have_f2b = not args.no_fail2ban and shutil.which("fail2ban-server") is not None
    work = Path(tempfile.mkdtemp(prefix="rg-watch-bench-"))
    try:
        print(f"relayguard watch vs fail2ban-server  ({os.cpu_count()} CPUs)")
        tools = [("relayguard", args.lines, 300)] + \
            ([("fail2ban", args.f2b_lines, 600)] if have_f2b else [])
        runs: dict[str, list[tuple[float, float, str]]] = {name: [] for name, _, _ in tools}
        for _ in range(max(1, args.rounds)):
            for name, n, timeout in tools:  # alternating: a slow spell of the VM hits both
                got = throughput(work, n, name, timeout, 0 if args.cold else n // 10)
                if got is not None:
                    runs[name].append(got)
        medians: dict[str, float] = {}
        for name, n, _ in tools:
            got = sorted(runs[name])
            if not got:
                print(f"throughput  {name + ':':<11} timeout")
                continue
            mid = got[len(got) // 2]  # the median run (of an odd number), with its CPU split
            medians[name] = mid[0]
            print(f"throughput  {name + ':':<11} {mid[0]:>12,.0f} lines/s  median of "
                  f"{len(got)} ({', '.join(f'{r[0]:,.0f}' for r in runs[name])}; {n:,} lines"
                  + ("" if args.cold else f" after {n // 10:,} warm-up")
                  + (f"; writer {mid[1]:,.0f} lines/s" if name == "relayguard" else "")
                  + f")\n            {mid[2]}")
        if len(medians) == 2:
            print(f"            ratio:      {medians['relayguard'] / medians['fail2ban']:>12.1f}"
                  " x (medians)")
        for tool in ("relayguard", "fail2ban") if have_f2b else ("relayguard",):
            lat = latency(work, samples, tool, args.background)
            if lat:
                print(f"latency     {tool + ':':<11} median {statistics.median(lat) * 1000:7.1f} ms"
                      f"   p99 {percentile(lat, 0.99) * 1000:7.1f} ms   ({len(lat)} samples, "
                      f"{args.background} background lines/s)")
            else:
                print(f"latency     {tool}: no alerts")
        if args.no_fail2ban:
            print("fail2ban: skipped (--no-fail2ban)")
        elif not have_f2b:
            print("fail2ban-server not installed (apt-get install -y fail2ban): no comparison")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
