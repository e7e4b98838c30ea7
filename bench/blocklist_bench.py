"""Benchmark: `relayguard blocklist` vs pydnsbl on 1,000 addresses x the default IP zone set.

Everything runs against a local rbldnsd on 127.0.6.20 (started here, stopped at the end);
nothing touches a public resolver. Prints wall times and their ratio, each tool's listings
against the ground truth, and what each tool says about a refusing list (Spamhaus-style
127.255.255.254 for every query) and a wildcarded dead list (127.0.0.2 for everything).

The two tools run alternately, their order swapped every repeat, and the figures that count
are the medians (the machine is shared; the best run is printed for reference).

    pip install pydnsbl   # bench only, not a relayguard dependency
    python bench/blocklist_bench.py [--addresses 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query

from relayguard.blocklist.check import HealthCache, check
from relayguard.blocklist.dnsclient import DnsClient, Nameserver
from relayguard.blocklist.names import parse_target
from relayguard.blocklist.report import build_report
from relayguard.blocklist.zones import Zone, ZoneKind, lookup, zone_set

HOST = "127.0.6.20"
CLIENT = "127.0.6.21"
REFUSING = "refusing.bench.test"
DEAD = "dnsbl.ahbl.org"


def addresses(n: int) -> list[str]:
    return [f"11.{30 + i // 65000}.{(i // 250) % 260 % 256}.{i % 250 + 1}" for i in range(n)]


def ground_truth(addrs: list[str], zones: list[str]) -> dict[str, set[str]]:
    """Which address each zone lists: a different stride per zone, a few per cent each."""
    strides = [37, 53, 41, 61, 29, 71, 47, 43, 59, 67]
    return {z: {a for i, a in enumerate(addrs) if i % strides[k % len(strides)] == 0}
            for k, z in enumerate(zones)}


def start_rbldnsd(workdir: Path, truth: dict[str, set[str]]) -> tuple[subprocess.Popen[bytes],
                                                                       int]:
    args = []
    for i, (zone, listed) in enumerate(truth.items()):
        lines = [":127.0.0.2:listed $", "127.0.0.2", *sorted(listed)]
        (workdir / f"z{i}").write_text("\n".join(lines) + "\n")
        args.append(f"{zone}:ip4set:z{i}")
    for name, code in ((REFUSING, "127.255.255.254"), (DEAD, "127.0.0.2")):
        (workdir / name).write_text(f":{code}:everything\n0.0.0.0/1\n128.0.0.0/1\n")
        args.append(f"{name}:ip4set:{name}")
    for f in workdir.iterdir():
        f.chmod(0o644)
    workdir.chmod(0o755)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    user = ["-u", "rbldns"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(["rbldnsd", "-n", *user, "-b", f"{HOST}/{port}", "-w",
                             str(workdir), "-t", "300", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = f"1.0.0.127.{next(iter(truth))}"
    for _ in range(100):
        try:
            dns.query.udp(dns.message.make_query(probe, "A"), HOST, port=port, timeout=0.2)
            return proc, port
        except Exception:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    sys.exit("rbldnsd did not start")


def run_relayguard(addrs: list[str], zones: tuple[Zone, ...], port: int
                   ) -> tuple[float, dict[str, set[str]], dict[str, int]]:
    """Wall time (self-tests included, fresh cache), listings per zone, verdict counts."""
    # relayguard's default concurrency (64); only the per-zone rate limit is off (the CLI's
    # default 20 queries/s per zone is politeness towards real lists, not a speed limit).
    client = DnsClient([Nameserver(HOST, port)], timeout=2.0, retries=1, concurrency=64,
                       rate=0, deadline=300, source=CLIENT)
    start = time.perf_counter()
    result = check([parse_target(a) for a in addrs], zones, client, health_cache=HealthCache())
    report = build_report(result, [f"{HOST}:{port}"])
    elapsed = time.perf_counter() - start
    listed: dict[str, set[str]] = {z.name: set() for z in zones}
    for t in result.targets:
        for r in t.lists:
            if r.state.value == "listed":
                listed[r.zone.name].add(t.value)
    return elapsed, listed, report.stats["summary"]


def run_pydnsbl(addrs: list[str], zones: list[str], port: int
                ) -> tuple[float, dict[str, set[str]], int]:
    """pydnsbl with its aiodns resolver pointed at the local rbldnsd (never the system one)."""
    import aiodns
    from pydnsbl import DNSBLIpChecker
    from pydnsbl.providers import Provider

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        checker = DNSBLIpChecker(providers=[Provider(z) for z in zones], timeout=2, tries=2,
                                 loop=loop)
        checker._resolver = aiodns.DNSResolver(nameservers=[HOST], udp_port=port,
                                               tcp_port=port, timeout=2, tries=2, loop=loop,
                                               local_ip=CLIENT)
        start = time.perf_counter()
        results = checker.bulk_check(addrs)
        elapsed = time.perf_counter() - start
    finally:
        loop.close()
    listed: dict[str, set[str]] = {z: set() for z in zones}
    for res in results:
        for host in res.detected_by:
            listed[host].add(res.addr)
    return elapsed, listed, sum(1 for r in results if r.blacklisted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    if shutil.which("rbldnsd") is None:
        sys.exit("rbldnsd is not installed (apt-get install rbldnsd)")
    missing = [m for m in ("pydnsbl", "aiodns") if importlib.util.find_spec(m) is None]
    if missing:  # checked now, not after minutes of the relayguard pass
        sys.exit(f"{', '.join(missing)} not installed: the comparison needs it "
                 "(pip install pydnsbl; a bench-only dependency, not relayguard's)")
    zones = tuple(z for z in zone_set("default") if z.kind is ZoneKind.IP)
    names = [z.name for z in zones]
    addrs = addresses(opts.addresses)
    truth = ground_truth(addrs, names)
    workdir = Path(tempfile.mkdtemp(prefix="rg-bench-", dir="/tmp"))
    proc, port = start_rbldnsd(workdir, truth)
    try:
        print(f"{len(addrs)} addresses x {len(names)} default IP zones "
              f"({', '.join(names)}) on rbldnsd {HOST}:{port}; {opts.repeat} runs each, "
              f"alternating; load average before: {os.getloadavg()[0]:.2f} on "
              f"{os.cpu_count()} CPUs")
        rg_times, py_times = [], []
        for i in range(opts.repeat):
            for tool in ("relayguard", "pydnsbl") if i % 2 == 0 else ("pydnsbl", "relayguard"):
                if tool == "relayguard":
                    t_rg, rg_listed, _summary = run_relayguard(addrs, zones, port)
                    rg_times.append(t_rg)
                else:
                    t_py, py_listed, _count = run_pydnsbl(addrs, names, port)
                    py_times.append(t_py)
        m_rg, m_py = statistics.median(rg_times), statistics.median(py_times)
        print(f"  relayguard: median {m_rg:.3f} s (best {min(rg_times):.3f}; includes RFC 5782 "
              "self-tests and TXT lookups for listings)")
        print(f"  pydnsbl:    median {m_py:.3f} s (best {min(py_times):.3f})")
        print(f"  ratio pydnsbl/relayguard: median {m_py / m_rg:.2f}x, best "
              f"{min(py_times) / min(rg_times):.2f}x (>1: relayguard faster)")
        for tool, got in (("relayguard", rg_listed), ("pydnsbl", py_listed)):
            wrong = sum(len(got[z] ^ truth[z]) for z in names)
            print(f"  {tool}: {sum(len(v) for v in got.values())} listings, "
                  f"{wrong} differ from the ground truth ({sum(map(len, truth.values()))})")

        print(f"\ncorrectness: {len(addrs)} addresses on a refusing list ({REFUSING}: "
              f"127.255.255.254 for all) and a dead wildcard list ({DEAD}: 127.0.0.2 for all)")
        bad_zones = (Zone.generic(REFUSING), lookup(DEAD) or Zone.generic(DEAD))
        for label, zone in zip(("refusing", "dead"), bad_zones, strict=True):
            _t, rg_bad, summary = run_relayguard(addrs, (zone,), port)
            _t, _py_bad, count = run_pydnsbl(addrs, [zone.name], port)
            print(f"  {label:8} pydnsbl: {count} of {len(addrs)} reported BLACKLISTED "
                  f"(wrong: the list says nothing about them)")
            print(f"  {label:8} relayguard: {len(rg_bad[zone.name])} listed, "
                  f"{summary['inconclusive']} inconclusive (list unusable after its "
                  "self-test), 0 clean claimed" if not summary["clean"] else
                  f"  {label:8} relayguard: {summary}")
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
