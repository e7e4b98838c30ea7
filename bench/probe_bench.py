#!/usr/bin/env python3
"""Benchmark `relayguard probe` against nmap's open-proxy / open-relay scripts on loopback.

Starts real daemons on a few hundred loopback addresses (default 400: 127.0.20.10 and up,
over as many /24s as it takes) — one Apache open forward proxy listening on N addresses
(:8080), M open microsocks (:1080), one open-relay Postfix on K addresses (:25) — then probes
every address on ports 25,1080,8080 with
`nmap -Pn -n -sT --script http-open-proxy,socks-open-proxy,smtp-open-relay` and with
relayguard twice: its defaults, and the flags a user would pass for a loopback lab (printed).
Each tool runs --runs times, interleaved; medians are compared. nmap's test URL points at a
loopback origin (proxy.url) whose page carries a marker nmap must see (proxy.pattern:
socks-open-proxy says "open" only on a content match), and nmap's own DNS lookup of that URL's
host goes to a loopback rbldnsd (--dns-servers), so nothing leaves the machine and nmap's
SOCKS check can succeed at all. Prints wall times, the findings of each, whether relayguard
found at least everything nmap found, and the ratios.

    sudo python3 bench/probe_bench.py [--http 320 --socks 40 --smtp 40 --runs 5]

Needs root (Postfix addresses on lo, canary on ports 25/80/443, DNS on port 53), nmap and
rbldnsd. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import PROXY_MODULES, apache  # noqa: E402
from tests.servers.microsocks import microsocks  # noqa: E402
from tests.servers.postfix import ensure_loopback_address, postfix  # noqa: E402

SCANNER = "127.0.4.99"
CANARY = "127.0.4.3"  # relayguard's canary (80, 443, 25, 465, 587)
ORIGIN = "127.0.4.4"  # nmap's proxy.url target
ORIGIN_DNS = "127.0.4.5"  # answers nmap's own lookup of ORIGIN (NSE ignores IP literals)
MARKER = "rgbenchorigin"  # in the origin's page; nmap's proxy.pattern (no Lua magic chars)
PORTS = "25,1080,8080"
# Targets: 127.0.20.10 and up, 240 to a /24 (.10-.249), over 127.0.20.0-127.0.29.255 — a range
# no test uses (tests take 127.0.0-11.x; 127.0.4.200+ is the launcher tests'), so a benchmark
# run next to the test suite never collides with a test's daemon.
TARGET_NETS = range(20, 30)
PER_NET = range(10, 250)
MAX_TARGETS = len(TARGET_NETS) * len(PER_NET)

T = TypeVar("T")
NMAP_OPEN = {
    "http-open-proxy": re.compile(r"Potentially OPEN proxy", re.I),
    "socks-open-proxy": re.compile(r"status: open", re.I),
    "smtp-open-relay": re.compile(r"Server is an open relay", re.I),
}
FAMILY = {
    "http-open-proxy": {"open-http-proxy", "open-connect-proxy"},
    "socks-open-proxy": {"open-socks-proxy"},
    "smtp-open-relay": {"open-smtp-relay"},
}


class _Origin(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{MARKER} ok\n".encode()
        self.send_response(200)
        # Also in a header: nmap matches only the first chunk it receives, which may be the
        # head alone.
        self.send_header("X-Bench", MARKER)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


class _OriginServer(http.server.ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a few hundred proxies fetching at once then
    # overflow it, and the kernel's SYN retries (1 s, 3 s, ...) made nmap look slower than it is.
    request_queue_size = 1024


@contextlib.contextmanager
def origin() -> object:
    """nmap's test page on ORIGIN:80 (relayguard needs none: it uses its own canary)."""
    server = _OriginServer((ORIGIN, 80), _Origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def origin_dns(workdir: Path) -> object:
    """rbldnsd on ORIGIN_DNS:53 answering `ORIGIN A ORIGIN`: nmap's SOCKS check resolves the
    proxy.url host with its own DNS client, which would otherwise ask the system's resolver
    (off this machine) about an IP literal and give up."""
    zone = workdir / "origin.generic"
    zone.write_text(f"@ A {ORIGIN}\n")
    zone.chmod(0o644)
    workdir.chmod(0o755)
    log = workdir / "rbldnsd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["rbldnsd", "-n", "-u", "rbldns", "-b", f"{ORIGIN_DNS}/53",
                                 "-w", str(workdir), f"{ORIGIN}:generic:{zone.name}"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if "started" in log.read_text() or proc.poll() is not None:
                break
            time.sleep(0.05)
        if proc.poll() is not None or "started" not in log.read_text():
            sys.exit(f"rbldnsd did not start on {ORIGIN_DNS}:53: {log.read_text()[-500:]}")
        yield proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        proc.kill()


def target_addresses(count: int) -> list[str]:
    """`count` target addresses, filling 127.0.20.10-249 first, then 127.0.21.x, …"""
    return [f"127.0.{net}.{host}" for net in TARGET_NETS for host in PER_NET][:count]


def missing_tools(skip_nmap: bool) -> str | None:
    """What this benchmark needs and this machine lacks, as one line to print; else None."""
    wanted = [] if skip_nmap else ["nmap", "rbldnsd"]
    missing = [tool for tool in wanted if shutil.which(tool) is None]
    if not missing:
        return None
    return (f"{' and '.join(missing)} not installed (apt-get install {' '.join(missing)}); "
            "or pass --skip-nmap to time relayguard alone")


def busy_seconds() -> float:
    """CPU seconds this machine has spent busy since boot, on all CPUs (/proc/stat: all but
    idle and iowait)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Cpu(NamedTuple):
    """Where the CPU time of one run went: the scanner process itself (and its threads), and
    everything else — the daemons answering it (Apache, microsocks, Postfix, the origin page,
    rbldnsd) on an otherwise idle machine."""

    scanner: float
    servers: float

    @classmethod
    def measure(cls, run: Callable[[], T]) -> tuple[T, Cpu]:
        busy, kids = busy_seconds(), os.times()
        out = run()
        kids_after = os.times()
        scanner = (kids_after.children_user - kids.children_user
                   + kids_after.children_system - kids.children_system)
        return out, cls(scanner, max(0.0, busy_seconds() - busy - scanner))


def run_relayguard(targets_file: Path, timeout: float, flags: Sequence[str] = ()
                   ) -> tuple[float, set[tuple[str, int, str]]]:
    """One `relayguard probe` run over the targets (its default settings plus `flags`): wall
    seconds (process start to exit, imports included) and its findings."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "relayguard", "probe", "--targets-file", str(targets_file),
         "--ports", PORTS, "--source-address", SCANNER, "--canary-host", CANARY,
         "--timeout", str(timeout), *flags, "--format", "json"],
        capture_output=True, text=True, timeout=1800, cwd=ROOT)
    elapsed = time.monotonic() - started
    try:  # exit 2 with a report = some checks ended in error entries: counted, shown below
        doc = json.loads(done.stdout)
    except json.JSONDecodeError:
        sys.exit(f"relayguard failed ({done.returncode}): {done.stderr[-2000:]}")
    found = {(f["location"]["host"], f["location"]["port"], f["category"])
             for f in doc["findings"]}
    if doc["errors"]:
        print(f"  relayguard errors: {len(doc['errors'])}, e.g. {doc['errors'][0]}")
    return elapsed, found


def run_nmap(targets_file: Path, out: Path) -> tuple[float, set[tuple[str, int, str]]]:
    started = time.monotonic()
    done = subprocess.run(
        ["nmap", "-Pn", "-n", "-sT", "-p", PORTS, "-iL", str(targets_file),
         "--dns-servers", ORIGIN_DNS,
         "--script", "http-open-proxy,socks-open-proxy,smtp-open-relay",
         "--script-args", f"proxy.url=http://{ORIGIN}/,proxy.pattern={MARKER},"
         "smtp-open-relay.domain=relayguard.invalid",
         "-oX", str(out)],
        capture_output=True, text=True, timeout=3600)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"nmap failed: {done.stderr[-2000:]}")
    found: set[tuple[str, int, str]] = set()
    for host in ET.parse(out).getroot().iter("host"):
        addr = host.find("address").get("addr")  # type: ignore[union-attr]
        for port in host.iter("port"):
            for script in port.iter("script"):
                pattern = NMAP_OPEN.get(script.get("id", ""))
                if pattern and pattern.search(script.get("output", "")):
                    found.add((str(addr), int(port.get("portid", 0)), script.get("id", "")))
    return elapsed, found


@contextlib.contextmanager
def lab(http: int, socks: int, smtp: int, with_dns: bool) -> Iterator[Path]:
    """Start the daemons on `http + socks + smtp` target addresses (in that order), the
    origin and, for nmap, the DNS answer; yield the targets file. Everything stops on exit."""
    addrs = target_addresses(http + socks + smtp)
    http_addrs, socks_addrs, smtp_addrs = addrs[:http], addrs[http:http + socks], \
        addrs[http + socks:]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        Path(tmp).chmod(0o755)  # rbldnsd reads its zone as user rbldns
        stack.enter_context(origin())  # type: ignore[arg-type]
        if with_dns:
            dns_dir = Path(tmp) / "dns"
            dns_dir.mkdir()
            stack.enter_context(origin_dns(dns_dir))  # type: ignore[arg-type]
        if http_addrs:
            stack.enter_context(apache(http_addrs[0], 8080, "ProxyRequests On\n",
                                       modules=PROXY_MODULES,
                                       extra_listen=[(a, 8080) for a in http_addrs[1:]]))
        for a in socks_addrs:
            stack.enter_context(microsocks(a, 1080))
        if smtp_addrs:
            for a in smtp_addrs:
                ensure_loopback_address(a)
            stack.enter_context(postfix(smtp_addrs[0], 25, (
                f"inet_interfaces = {', '.join(smtp_addrs)}\nmynetworks = 127.0.0.0/8\n"
                # Measure the scanners, not Postfix's arrival-rate throttle (1 s pauses) nor
                # its reverse DNS lookup of the client: that query leaves loopback for the
                # machine's resolver, which under a few hundred lookups answers some only
                # after its 5 s timeout, so both scanners would time sessions out on it.
                "in_flow_delay = 0\nsmtpd_peername_lookup = no\n")))
        targets = Path(tmp) / "targets.txt"
        targets.write_text("\n".join(addrs) + "\n")
        yield targets


# The two relayguard configurations timed: its defaults (polite enough for the Internet), and
# what a user would pass for a loopback lab of their own servers: more connections at once in
# total (the per-host cap stays), and a shorter wait before a silent port counts as
# client-first.
CONFIGS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "loopback lab": ("--banner-wait", "0.02", "--concurrency", "256"),
}
Found = set[tuple[str, int, str]]


def missed_by(rg: Found, nm: Found) -> list[tuple[str, int, str]]:
    """nmap's findings for which relayguard reported no category of the same family."""
    reported: defaultdict[tuple[str, int], set[str]] = defaultdict(set)
    for h, p, c in rg:
        reported[h, p].add(c)
    return sorted((h, p, s) for h, p, s in nm if not FAMILY[s] & reported[h, p])


def _summary(name: str, times: list[float], found: list[Found]) -> str:
    same = "" if all(f == found[0] for f in found) else " (findings DIFFER between runs)"
    return (f"{name:<26} median {statistics.median(times):6.2f} s  (runs: "
            f"{', '.join(f'{t:.2f}' for t in times)}), {len(found[0])} findings on "
            f"{len({(h, p) for h, p, _ in found[0]})} host:ports{same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--http", type=int, default=320, help="addresses with an open Apache proxy")
    ap.add_argument("--socks", type=int, default=40, help="addresses with an open microsocks")
    ap.add_argument("--smtp", type=int, default=40, help="addresses with an open-relay Postfix")
    ap.add_argument("--runs", type=int, default=5, help="runs of each tool (median reported)")
    ap.add_argument("--timeout", type=float, default=5.0, help="relayguard --timeout")
    ap.add_argument("--skip-nmap", action="store_true", help="time relayguard only")
    args = ap.parse_args()
    missing = missing_tools(args.skip_nmap)
    if missing:
        sys.exit(missing)
    if os.geteuid() != 0:
        sys.exit("run as root (Postfix addresses on lo, canary ports 25/80/443)")
    total = args.http + args.socks + args.smtp
    if not 0 < total <= MAX_TARGETS:
        sys.exit(f"between 1 and {MAX_TARGETS} addresses (127.0.20-29.10-249)")
    if not 1 <= args.runs <= 50:
        sys.exit("--runs: between 1 and 50")

    times: dict[str, list[float]] = {name: [] for name in ("nmap", *CONFIGS)}
    found: dict[str, list[Found]] = {name: [] for name in times}
    cpus: dict[str, list[Cpu]] = {name: [] for name in times}
    with lab(args.http, args.socks, args.smtp, not args.skip_nmap) as targets:
        print(f"{total} addresses x ports {PORTS} = {3 * total} host:port checks; "
              f"open: {args.http} HTTP proxy, {args.socks} SOCKS5, {args.smtp} SMTP relay")
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
              "(the scanners and the daemons share them)")
        for name, flags in CONFIGS.items():
            print(f"relayguard {name}: relayguard probe {' '.join(flags) or '(no tuning flags)'}")
        # Interleaved rounds, so a burst of load elsewhere on the machine hits every tool.
        for _ in range(args.runs):
            if not args.skip_nmap:
                (t, f), cpu = Cpu.measure(
                    lambda: run_nmap(targets, targets.with_name("nmap.xml")))
                times["nmap"].append(t)
                found["nmap"].append(f)
                cpus["nmap"].append(cpu)
            for name, flags in CONFIGS.items():
                (t, f), cpu = Cpu.measure(
                    lambda flags=flags: run_relayguard(targets, args.timeout, flags))
                times[name].append(t)
                found[name].append(f)
                cpus[name].append(cpu)

    for name in times:
        if times[name]:
            print(_summary("nmap" if name == "nmap" else f"relayguard {name}", times[name],
                           found[name]))
    ncpu = os.cpu_count() or 1
    print(f"CPU seconds per run (medians): the scanner itself / everything else, i.e. the "
          f"daemons answering it; on {ncpu} CPUs no run can take less than their sum / {ncpu}")
    for name, runs in cpus.items():
        if runs:
            own = statistics.median(c.scanner for c in runs)
            servers = statistics.median(c.servers for c in runs)
            print(f"  {'nmap' if name == 'nmap' else f'relayguard {name}':<26} "
                  f"{own:5.2f} / {servers:5.2f}   floor {(own + servers) / ncpu:5.2f} s")
    if args.skip_nmap:
        return
    rg = found["defaults"][0]
    smtp_via = len({(h, p) for h, p, c in rg if c == "smtp-via-proxy"})
    print(f"relayguard also reports smtp-via-proxy on {smtp_via} host:ports "
          "(nmap has no such check)")
    nm_time = statistics.median(times["nmap"])
    for name in CONFIGS:
        missed = [m for rg_f, nm_f in zip(found[name], found["nmap"], strict=True)
                  for m in missed_by(rg_f, nm_f)]
        print(f"relayguard {name} found everything nmap found" if not missed
              else f"relayguard {name} MISSED {len(missed)} of nmap's findings over "
                   f"{args.runs} runs, e.g. {missed[:3]}")
        ratio = nm_time / statistics.median(times[name])
        print(f"ratio ({name}): relayguard is {ratio:.2f}x "
              f"{'faster' if ratio >= 1 else 'as fast as'} nmap (goal: >= 10x)")


if __name__ == "__main__":
    main()
