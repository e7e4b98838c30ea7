"""Agreement with reality: a real Squid on 127.0.7.1 is asked, from the untrusted 127.0.7.250,
for GET and CONNECT to a canary's ports 80, 443 and 25; what it really relays must be what
the audit of the very same config says. Then the audit's own edits are applied and the
restarted Squid must relay nothing."""

from __future__ import annotations

import ipaddress
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from relayguard.audit.base import AuditOptions
from relayguard.audit.squid import SquidAuditor
from tests.audit.proxytools import (
    OUTSIDE,
    Canaries,
    apply_edits,
    audited_verdicts,
    canaries,
    http_proxy_verdicts,
)
from tests.servers import free_port
from tests.servers.base import Daemon, run_daemon
from tests.servers.squid import STOCK_ACCESS, squid

pytestmark = pytest.mark.server
HOST = "127.0.7.1"
CANARY = "127.0.7.21"
KEYS = ["GET 80", "GET 25", "CONNECT 443", "CONNECT 25"]
AUDITOR = SquidAuditor()
OUT = AuditOptions(outside_client=ipaddress.ip_address(OUTSIDE))

SCENARIOS = {
    # name: (http_access section, rules the audit must report above info)
    "allow-all-bare": ("http_access allow all\n",
                       {"SQUID-OPEN-HTTP-ACCESS", "SQUID-OPEN-CONNECT", "SQUID-SAFE-PORTS-SMTP",
                        "SQUID-TO-LOCALHOST"}),
    "stock-allow-all": (STOCK_ACCESS.replace("http_access allow localhost\n",
                                             "http_access allow all\n"),
                        {"SQUID-OPEN-HTTP-ACCESS", "SQUID-OPEN-CONNECT", "SQUID-TO-LOCALHOST"}),
    "stock": (STOCK_ACCESS, set()),
    "implicit-allow": ("acl blocked src 10.0.0.0/8\nhttp_access deny blocked\n",
                       {"SQUID-IMPLICIT-ALLOW", "SQUID-SAFE-PORTS-SMTP", "SQUID-TO-LOCALHOST"}),
    "trusted-only": ("acl trusted src 127.0.7.1/32\nhttp_access allow trusted\n"
                     "http_access deny all\n", set()),
    "get-method-only": ("acl getonly method GET\nhttp_access allow getonly\n"
                        "http_access deny all\n",
                        {"SQUID-OPEN-HTTP-ACCESS", "SQUID-SAFE-PORTS-SMTP",
                         "SQUID-TO-LOCALHOST"}),
    "auth-required": ("auth_param basic program /usr/lib/squid/basic_fake_auth\n"
                      "acl authed proxy_auth REQUIRED\nhttp_access deny !authed\n"
                      "http_access allow all\n", set()),
    "connect-443-only": ("acl SSL_ports port 443\nhttp_access allow CONNECT SSL_ports\n"
                         "http_access deny all\n", {"SQUID-OPEN-CONNECT", "SQUID-TO-LOCALHOST"}),
}


@pytest.fixture(scope="module")
def canary() -> Iterator[Canaries]:
    with canaries(CANARY) as c:
        yield c


@pytest.mark.parametrize("name", SCENARIOS)
def test_audit_verdict_matches_real_squid(name: str, canary: Canaries, tmp_path: Path) -> None:
    access, expected_rules = SCENARIOS[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"rg-audit-squid-{name}-"))  # unique: parallel runs
    port = free_port(HOST)
    try:
        with squid(HOST, port, access, workdir=workdir) as d:
            result = AUDITOR.audit(d.config, OUT)
            assert result.errors == []
            real = http_proxy_verdicts(HOST, port, canary)
            assert audited_verdicts(result, KEYS) == real, d.diagnostics()
        above_info = {f.rule for f in result.findings if f.severity > 0}
        assert above_info == expected_rules
        if not any(real.values()):
            return
        # --fix: apply every finding's edits, restart, and the stranger gets nothing.
        apply_edits([e for f in result.findings for e in f.edits])
        fixed = AUDITOR.audit(d.config, OUT)
        assert not any(fixed.facts["outside_verdicts"].values())
        ok, out = AUDITOR.config_test(d.config) or (True, "")
        assert ok, out
        daemon = Daemon(name="squid", host=HOST, port=port, workdir=workdir, config=d.config,
                        logs=d.logs)
        with run_daemon(daemon, ["squid", "-N", "-d", "1", "-f", str(d.config)], timeout=20):
            after = http_proxy_verdicts(HOST, port, canary)
        assert not any(after.values()), (after, d.config.read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
