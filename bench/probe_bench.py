#!/usr/bin/env python3
"""Benchmark `relayguard probe` against nmap's open-proxy / open-relay scripts on loopback.

Starts real daemons on many 127.0.4.x addresses — one Apache open forward proxy listening on
N addresses (:8080), M open microsocks (:1080), one open-relay Postfix on K addresses (:25) —
then probes every address on ports 25,1080,8080 twice: with relayguard, and with
`nmap -Pn -n -sT --script http-open-proxy,socks-open-proxy,smtp-open-relay`. nmap's test URL
is pointed at a loopback origin (proxy.url) whose page carries a marker nmap must see
(proxy.pattern: socks-open-proxy says "open" only on a content match), and nmap's own DNS
lookup of that URL's host goes to a loopback rbldnsd (--dns-servers), so nothing leaves the
machine and nmap's SOCKS check can succeed at all. Prints wall times, the findings of each,
whether relayguard found at least everything nmap found, and the ratio.

    sudo python3 bench/probe_bench.py [--http 120 --socks 20 --smtp 10]

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
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

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
FIRST = 100  # targets are 127.0.4.100 and up

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


@contextlib.contextmanager
def origin() -> object:
    server = http.server.ThreadingHTTPServer((ORIGIN, 80), _Origin)
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


def missing_tools(skip_nmap: bool) -> str | None:
    """What this benchmark needs and this machine lacks, as one line to print; else None."""
    wanted = [] if skip_nmap else ["nmap", "rbldnsd"]
    missing = [tool for tool in wanted if shutil.which(tool) is None]
    if not missing:
        return None
    return (f"{' and '.join(missing)} not installed (apt-get install {' '.join(missing)}); "
            "or pass --skip-nmap to time relayguard alone")


def run_relayguard(targets_file: Path, timeout: float) -> tuple[float, set[tuple[str, int, str]]]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "relayguard", "probe", "--targets-file", str(targets_file),
         "--ports", PORTS, "--source-address", SCANNER, "--canary-host", CANARY,
         "--timeout", str(timeout), "--concurrency", "128", "--format", "json"],
        capture_output=True, text=True, timeout=1800, cwd=ROOT)
    elapsed = time.monotonic() - started
    if done.returncode not in (0, 1):
        sys.exit(f"relayguard failed ({done.returncode}): {done.stderr[-2000:]}")
    doc = json.loads(done.stdout)
    found = {(f["location"]["host"], f["location"]["port"], f["category"])
             for f in doc["findings"]}
    if doc["errors"]:
        print(f"relayguard errors: {len(doc['errors'])}, e.g. {doc['errors'][0]}")
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--http", type=int, default=120, help="addresses with an open Apache proxy")
    ap.add_argument("--socks", type=int, default=20, help="addresses with an open microsocks")
    ap.add_argument("--smtp", type=int, default=10, help="addresses with an open-relay Postfix")
    ap.add_argument("--timeout", type=float, default=5.0, help="relayguard --timeout")
    ap.add_argument("--skip-nmap", action="store_true", help="time relayguard only")
    args = ap.parse_args()
    missing = missing_tools(args.skip_nmap)
    if missing:
        sys.exit(missing)
    if os.geteuid() != 0:
        sys.exit("run as root (Postfix addresses on lo, canary ports 25/80/443)")
    total = args.http + args.socks + args.smtp
    if FIRST + total > 255:
        sys.exit(f"at most {255 - FIRST} addresses fit in 127.0.4.{FIRST}-254")
    addrs = [f"127.0.4.{FIRST + i}" for i in range(total)]
    http_addrs = addrs[:args.http]
    socks_addrs = addrs[args.http:args.http + args.socks]
    smtp_addrs = addrs[args.http + args.socks:]

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        Path(tmp).chmod(0o755)  # rbldnsd reads its zone as user rbldns
        stack.enter_context(origin())  # type: ignore[arg-type]
        if not args.skip_nmap:
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
                # Measure the scanners, not Postfix's arrival-rate throttle (1 s pauses).
                "in_flow_delay = 0\n")))
        targets = Path(tmp) / "targets.txt"
        targets.write_text("\n".join(addrs) + "\n")
        print(f"{len(addrs)} addresses x ports {PORTS} = {3 * len(addrs)} host:port checks; "
              f"open: {len(http_addrs)} HTTP proxy, {len(socks_addrs)} SOCKS5, "
              f"{len(smtp_addrs)} SMTP relay")
        rg_time, rg = run_relayguard(targets, args.timeout)
        print(f"relayguard: {rg_time:7.2f} s, {len(rg)} findings on "
              f"{len({(h, p) for h, p, _ in rg})} host:ports")
        if args.skip_nmap:
            return
        nm_time, nm = run_nmap(targets, Path(tmp) / "nmap.xml")
        print(f"nmap:       {nm_time:7.2f} s, {len(nm)} findings on "
              f"{len({(h, p) for h, p, _ in nm})} host:ports")

    missed = sorted((h, p, s) for h, p, s in nm
                    if not FAMILY[s] & {c for hh, pp, c in rg if (hh, pp) == (h, p)})
    smtp_via = len({(h, p) for h, p, c in rg if c == "smtp-via-proxy"})
    print(f"relayguard also reports smtp-via-proxy on {smtp_via} host:ports "
          "(nmap has no such check)")
    print("relayguard found everything nmap found" if not missed
          else f"relayguard MISSED {len(missed)} of nmap's findings, e.g. {missed[:3]}")
    print(f"ratio: relayguard is {nm_time / rg_time:.1f}x faster than nmap "
          f"(goal: >= 10x)")


if __name__ == "__main__":
    main()
