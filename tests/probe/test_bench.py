"""bench/probe_bench.py's own plumbing (the benchmark itself is not a test): it says clearly
when nmap is missing, and its nmap invocation can really see an open SOCKS proxy on loopback
(proxy.pattern plus a loopback DNS answer for nmap's own lookup of the test URL)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.servers.microsocks import microsocks

BENCH = Path(__file__).resolve().parents[2] / "bench" / "probe_bench.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("probe_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_nmap_is_a_clear_message_not_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--http", "1", "--socks", "0",
                           "--smtp", "0"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": str(tmp_path)})
    assert done.returncode == 1
    assert "nmap and rbldnsd not installed" in done.stderr and "--skip-nmap" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.server
@pytest.mark.skipif(os.geteuid() != 0 or not (shutil.which("nmap") and shutil.which("rbldnsd")),
                    reason="needs root (ports 53 and 80), nmap and rbldnsd")
def test_the_benchmarks_nmap_run_reports_an_open_socks_proxy() -> None:
    bench = _bench()
    address = "127.0.4.85"
    with tempfile.TemporaryDirectory() as tmp, microsocks(address, 1080):
        Path(tmp).chmod(0o755)
        (Path(tmp) / "dns").mkdir()
        with bench.origin(), bench.origin_dns(Path(tmp) / "dns"):
            targets = Path(tmp) / "targets.txt"
            targets.write_text(address + "\n")
            _, found = bench.run_nmap(targets, Path(tmp) / "nmap.xml")
    assert found == {(address, 1080, "socks-open-proxy")}


def test_the_benchmark_spreads_a_few_hundred_targets_over_several_slash_24s() -> None:
    addrs = _bench().target_addresses(400)
    assert len(set(addrs)) == 400
    assert addrs[0] == "127.0.20.10"
    assert {a.rsplit(".", 1)[0] for a in addrs} == {"127.0.20", "127.0.21"}
    assert all(10 <= int(a.rsplit(".", 1)[1]) <= 249 for a in addrs)


@pytest.mark.server
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (port 80)")
def test_the_origin_serves_a_burst_of_proxies_without_dropping_connections() -> None:
    # With socketserver's backlog of 5 a burst like this waited out SYN retries (1 s, 3 s),
    # and nmap, which fetches the origin through every proxy, looked several times slower.
    import asyncio

    bench = _bench()

    async def fetch() -> bytes:
        reader, writer = await asyncio.open_connection(bench.ORIGIN, 80)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        body = await reader.read()
        writer.close()
        return body

    async def burst() -> list[bytes]:
        async with asyncio.timeout(10):
            return await asyncio.gather(*(fetch() for _ in range(300)))

    with bench.origin():
        started = time.monotonic()
        bodies = asyncio.run(burst())
        elapsed = time.monotonic() - started
    assert all(bench.MARKER.encode() in b for b in bodies)
    assert elapsed < 0.9, elapsed  # no connection waited out a 1 s SYN retry
