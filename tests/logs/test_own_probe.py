"""relayguard's own probes in the logs it later reads: a real Apache open proxy is probed by
the real prober, then abused by a spammer; `logs` must tell the spammer's story alone and
count the probe's requests apart (they carry its User-Agent), never hide them."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from relayguard import PROBE_USER_AGENT
from relayguard.logs.analyze import LogOptions, analyse
from relayguard.probe.context import ProbeOptions
from relayguard.probe.runner import run_probe
from relayguard.probe.targets import Target
from tests.logs.test_real_servers import _smtp_through_tunnel, _wait_log
from tests.servers import PROXY_MODULES, apache, tcp_canary

pytestmark = pytest.mark.server

PROXY, SCANNER, CANARY, SPAMMER, MX = ("127.0.5.80", "127.0.5.81", "127.0.5.82", "127.0.5.83",
                                        "127.0.5.84")
PORT = 18090
_PROXY_REQUEST = re.compile(r'"(CONNECT \S+|[A-Z]+ [a-zA-Z][a-zA-Z0-9+.-]*://\S*) HTTP/1\.[01]"')


@pytest.fixture(scope="module")
def probed_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keep = tmp_path_factory.mktemp("ownprobe") / "access.log"
    with tcp_canary(MX, 25), apache(PROXY, PORT, "ProxyRequests On\nAllowCONNECT 25 443\n",
                                    modules=PROXY_MODULES) as proxy:
        report = asyncio.run(run_probe([Target(PROXY, PORT)], ProbeOptions(
            timeout=3.0, source=SCANNER, canary_host=CANARY)))
        assert "smtp-via-proxy" in {f.category.value for f in report.findings}
        for _ in range(2):
            _smtp_through_tunnel(proxy.address, SPAMMER, f"{MX}:25")
        _wait_log(lambda: proxy.log("access"), SPAMMER, 2)
        shutil.copy(proxy.logs["access"], keep)
    return keep


@pytest.mark.parametrize("fast", [True, False])
def test_own_probe_requests_are_counted_apart_not_as_abuse(probed_log: Path,
                                                           fast: bool) -> None:
    lines = probed_log.read_text().splitlines()
    ours = [ln for ln in lines if ln.endswith(f'"{PROBE_USER_AGENT}"')]
    ours_proxy = [ln for ln in ours if _PROXY_REQUEST.search(ln)]
    assert ours_proxy and all(ln.startswith(f"{SCANNER} ") for ln in ours)
    report = analyse([str(probed_log)], LogOptions(fast=fast))
    incidents: dict[str, dict[str, Any]] = {i["kind"]: i for i in report.stats["incidents"]}
    assert set(incidents) == {"proxy-smtp"}, incidents  # the spammer's, nothing of ours
    smtp = incidents["proxy-smtp"]
    assert smtp["events"] == 2 and [tuple(c) for c in smtp["clients"]] == [(SPAMMER, 2)]
    own = report.stats["own_probe_requests"]
    assert own["requests"] == len(ours_proxy) and own["clients"] == [SCANNER]
    note = next(n for n in report.notes if "relayguard's probe" in n)
    assert f"{len(ours_proxy)} proxy request(s)" in note and SCANNER in note
    assert "disguised" in note  # what to think if no probe ran then
