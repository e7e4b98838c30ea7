"""`mynetworks` may hold loopback, the host's own addresses and its private LANs; any other
public range lets strangers relay, and is reported by size (POSTFIX-MYNETWORKS-PUBLIC below a
/16, POSTFIX-MYNETWORKS-OPEN from a /16 up).

The real Postfix proves a /17 trusts hosts that are not this one: a test client allowed to use
XCLIENT claims an address inside 45.0.0.0/17 and its RCPT to a foreign domain is accepted,
outside it is refused; after `--fix --write` and a restart the inside address is refused too.
"""

from __future__ import annotations

import ipaddress
import shutil
import smtplib
import tempfile
import time
from pathlib import Path

import pytest

from relayguard.audit.base import AuditOptions
from relayguard.audit.postfix import PostfixAuditor
from relayguard.findings import Severity
from tests.audit.fixcli import fix_write, restarted
from tests.servers.postfix import postfix

STRANGER = "127.0.11.250"
OPTIONS = AuditOptions(outside_client=ipaddress.ip_address(STRANGER))
BASE = "compatibility_level = 3.6\nmyhostname = mx.relayguard.test\n"


@pytest.mark.parametrize(("lines", "expected"), [
    ("mynetworks = 127.0.0.0/8 45.0.0.0/17\n", ("POSTFIX-MYNETWORKS-PUBLIC", Severity.HIGH)),
    ("mynetworks = 127.0.0.0/8 45.0.0.0/24\n", ("POSTFIX-MYNETWORKS-PUBLIC", Severity.HIGH)),
    ("mynetworks = 127.0.0.0/8 45.0.0.0/25\n", ("POSTFIX-MYNETWORKS-PUBLIC", Severity.MEDIUM)),
    ("mynetworks = 127.0.0.0/8 45.0.0.9\n", ("POSTFIX-MYNETWORKS-PUBLIC", Severity.LOW)),
    ("mynetworks = 127.0.0.0/8 45.0.0.0/16\n", ("POSTFIX-MYNETWORKS-OPEN", Severity.CRITICAL)),
    ("mynetworks = [::1]/128 [2a00:1450::]/48\n", ("POSTFIX-MYNETWORKS-PUBLIC", Severity.HIGH)),
    ("mynetworks = [::1]/128 [2a00:1450::]/32\n", ("POSTFIX-MYNETWORKS-OPEN", Severity.CRITICAL)),
    ("mynetworks = 127.0.0.0/8 10.0.0.0/8 192.168.0.0/16 100.64.0.0/10 [fd00::]/8\n", None),
    # the host's own address (it binds to it) is what mynetworks_style = host trusts
    ("inet_interfaces = 45.0.0.9\nmynetworks = 127.0.0.0/8 45.0.0.9/32\n", None),
    # documentation ranges are placeholders, nobody's hosts
    ("mynetworks = 127.0.0.0/8 192.0.2.0/24\n", None),
])
def test_public_ranges_by_size(tmp_path: Path, lines: str,
                               expected: tuple[str, Severity] | None) -> None:
    (tmp_path / "main.cf").write_text(BASE + lines)
    result = PostfixAuditor().audit(tmp_path, AuditOptions(
        outside_client=ipaddress.ip_address("198.51.100.7"), root=tmp_path))
    got = [(f.rule, f.severity) for f in result.findings]
    assert got == ([expected] if expected else []), [f.title for f in result.findings]
    for f in result.findings:
        [edit] = f.edits
        flagged = lines.split()[-1]
        assert len(edit.new) == 1 and flagged not in edit.new[0], edit  # dropped, rest kept
        assert edit.new[0].split()[2] == lines.split()[2], edit


XCLIENT_HOST = "127.0.11.251"  # the test's own client, allowed to claim other addresses


def rcpt_as(host: str, port: int, addr: str) -> int:
    """RCPT to a foreign domain after XCLIENT ADDR=addr: what Postfix answers. A session cut
    before any answer (smtpd still being spawned on a loaded machine) is no verdict: retry."""
    for attempt in range(3):
        try:
            with smtplib.SMTP(host, port, timeout=10, source_address=(XCLIENT_HOST, 0)) as s:
                s.ehlo("client.outside.example")
                code, _ = s.docmd("XCLIENT", f"ADDR={addr}")
                assert code == 220, code
                s.ehlo("client.outside.example")
                s.mail("someone@outside.example")
                return s.rcpt("victim@relay-target.example")[0]
        except smtplib.SMTPServerDisconnected:
            if attempt == 2:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


@pytest.mark.server
@pytest.mark.skipif(shutil.which("postfix") is None, reason="postfix not installed")
def test_a_public_slash_17_relays_for_its_hosts_until_fixed() -> None:
    host, port = "127.0.11.23", 2527
    workdir = Path(tempfile.mkdtemp(prefix="rg-audit-pf-public-"))
    main = (f"mynetworks = 127.0.0.1/32 45.0.0.0/17\n"
            f"smtpd_authorized_xclient_hosts = {XCLIENT_HOST}/32\n")
    try:
        with postfix(host, port, main, workdir=workdir) as mta:
            conf_dir = Path(str(mta.extra["conf_dir"]))
            assert rcpt_as(host, port, "45.0.0.9") == 250, mta.diagnostics()
            assert rcpt_as(host, port, "45.0.128.9") in (454, 554), mta.diagnostics()
            result = PostfixAuditor().audit(conf_dir, OPTIONS)
            assert [(f.rule, f.severity) for f in result.findings] == [
                ("POSTFIX-MYNETWORKS-PUBLIC", Severity.HIGH)]
            doc = fix_write(conf_dir, outside=STRANGER)
            assert "-mynetworks = 127.0.0.1/32 45.0.0.0/17" in doc["stats"]["fixes"][0]["diff"]
        with restarted(mta) as again:
            assert rcpt_as(host, port, "45.0.0.9") in (454, 554), again.diagnostics()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
