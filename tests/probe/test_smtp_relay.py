"""SMTP relay probing beyond RCPT: opt-in delivery to the canary, and relaying behind STARTTLS.

Real Postfix instances on 127.0.4.4x; the probe comes from 127.0.4.99. With
`confirm_delivery` the relay is `confirmed` only when Postfix really delivered the one test
message to the canary's port 25 (127.0.4.5:25).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from relayguard.findings import Confidence, Report
from relayguard.probe.context import ProbeOptions
from relayguard.probe.runner import run_probe
from relayguard.probe.targets import Target
from tests.servers.base import wait_port
from tests.servers.postfix import postfix

pytestmark = pytest.mark.server

SCANNER = "127.0.4.99"
OPEN = "mynetworks = 127.0.0.0/8\n"


def probe(host: str, port: int, canary: str, **kw: object) -> Report:
    options = ProbeOptions(timeout=3.0, source=SCANNER, canary_host=canary, **kw)  # type: ignore[arg-type]
    return asyncio.run(run_probe([Target(host, port)], options))


def test_confirm_delivery_sends_one_message_and_the_canary_receives_it() -> None:
    with postfix("127.0.4.43", 2525, OPEN) as mta:
        report = probe("127.0.4.43", 2525, "127.0.4.5", confirm_delivery=True)
        (f,) = report.findings
        assert f.rule == "PROBE-SMTP-RELAY"
        assert f.confidence is Confidence.CONFIRMED, (f, mta.log("mail"))
        assert "a test message reached the canary" in f.title
        notes = [e.text for e in f.evidence if e.kind == "note"]
        assert any("canary smtp listener on port 25 received nonce" in n for n in notes)
        # Exactly one message was queued and it went to the canary.
        log = mta.wait_log("mail", "status=sent")
        assert log.count("status=sent") == 1, log
        assert "relay=127.0.4.5[127.0.4.5]:25" in log


def test_without_confirm_delivery_no_data_is_ever_sent() -> None:
    with postfix("127.0.4.44", 2525, OPEN) as mta:
        report = probe("127.0.4.44", 2525, "127.0.4.6")
        (f,) = report.findings
        assert f.confidence is Confidence.LIKELY
        log = mta.wait_log("mail", "disconnect from")
        assert "disconnect from" in log
        assert "status=sent" not in log
        assert "data=" not in log  # Postfix logs data=N/M only if DATA came


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d: Path = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=mx.relayguard.test", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem")], check=True, capture_output=True, timeout=60)
    return {"key.pem": (d / "key.pem").read_text(), "cert.pem": (d / "cert.pem").read_text()}


def test_relay_behind_mandatory_starttls_is_found_inside_tls(tls_files: dict[str, str]) -> None:
    conf = (OPEN + "smtpd_tls_cert_file = ${config_directory}/cert.pem\n"
            "smtpd_tls_key_file = ${config_directory}/key.pem\n"
            "smtpd_tls_security_level = encrypt\n")
    with postfix("127.0.4.45", 2525, conf, files=tls_files) as mta:
        report = probe("127.0.4.45", 2525, "127.0.4.7")
        assert report.errors == (), (report.errors, mta.diagnostics())
        (f,) = report.findings
        assert f.category.value == "open-smtp-relay"
        assert "(inside STARTTLS)" in f.title
        transcripts = "\n".join(e.text for e in f.evidence if e.kind == "transcript")
        assert "TLS established" in transcripts
        assert "530" in transcripts  # plaintext MAIL was refused: STARTTLS first


def test_confirm_delivery_uses_starttls_when_the_relay_was_found_inside_it(
        tls_files: dict[str, str]) -> None:
    conf = (OPEN + "smtpd_tls_cert_file = ${config_directory}/cert.pem\n"
            "smtpd_tls_key_file = ${config_directory}/key.pem\n"
            "smtpd_tls_security_level = encrypt\n")
    with postfix("127.0.4.65", 2525, conf, files=tls_files) as mta:
        report = probe("127.0.4.65", 2525, "127.0.4.66", confirm_delivery=True)
        (f,) = report.findings
        assert "(inside STARTTLS)" in f.title
        assert f.confidence is Confidence.CONFIRMED, ([e.text for e in f.evidence],
                                                      mta.log("mail"))
        delivery = [e.text for e in f.evidence if "--confirm-delivery" in e.text]
        assert len(delivery) == 1 and "TLS established" in delivery[0], delivery
        log = mta.wait_log("mail", "status=sent")
        assert log.count("status=sent") == 1, log
        assert "relay=127.0.4.66[127.0.4.66]:25" in log


def test_stock_postfix_behind_starttls_is_not_a_relay(tls_files: dict[str, str]) -> None:
    conf = ("smtpd_tls_cert_file = ${config_directory}/cert.pem\n"
            "smtpd_tls_key_file = ${config_directory}/key.pem\n"
            "smtpd_tls_security_level = may\n")
    with postfix("127.0.4.46", 2525, conf, files=tls_files):
        report = probe("127.0.4.46", 2525, "127.0.4.8")
        assert report.findings == ()
        assert report.errors == ()


def test_open_relay_on_an_smtps_port_is_found_by_implicit_tls(
        tls_files: dict[str, str]) -> None:
    conf = (OPEN + "smtpd_tls_cert_file = ${config_directory}/cert.pem\n"
            "smtpd_tls_key_file = ${config_directory}/key.pem\n")
    smtps = "4650 inet n - n - - smtpd -o smtpd_tls_wrappermode=yes\n"
    with postfix("127.0.4.48", 2525, conf, files=tls_files, master_cf_extra=smtps) as mta:
        wait_port("127.0.4.48", 4650)  # the launcher waited for 2525 only
        report = probe("127.0.4.48", 4650, "127.0.4.16")
        assert report.errors == (), (report.errors, mta.diagnostics())
        assert report.stats["services"] == {"smtps": 1}
        (f,) = report.findings
        assert f.rule == "PROBE-SMTP-RELAY"
        assert any("connect 127.0.4.48:4650 (TLS)" in e.text
                   for e in f.evidence if e.kind == "transcript")


def _pipelined_tricks(transcripts: str) -> int:
    """How many tricks went out as one write: RSET, MAIL FROM and RCPT TO sent with no
    reply between them."""
    lines = transcripts.splitlines()
    return sum(1 for a, b, c in zip(lines, lines[1:], lines[2:], strict=False)
               if a == "> RSET" and b.startswith("> MAIL FROM:") and c.startswith("> RCPT TO:"))


@pytest.mark.parametrize(("address", "canary", "extra", "pipelined"), [
    ("127.0.4.90", "127.0.4.92", "", True),
    ("127.0.4.91", "127.0.4.93", "smtpd_discard_ehlo_keywords = pipelining\n", False),
])
def test_tricks_are_pipelined_only_when_the_mta_offers_it(address: str, canary: str,
                                                          extra: str, pipelined: bool) -> None:
    with postfix(address, 2525, OPEN + extra) as mta:
        report = probe(address, 2525, canary)
        log = mta.wait_log("mail", "disconnect from", count=report.stats["connections"])
    assert report.errors == ()
    (f,) = report.findings
    assert f.confidence is Confidence.LIKELY and "20/20 relay tricks accepted" in f.title
    transcripts = "\n".join(e.text for e in f.evidence if e.kind == "transcript")
    assert _pipelined_tricks(transcripts) == (20 if pipelined else 0)
    # Three sessions of up to eight tricks, the first on the connection whose banner
    # identified the port (so it is read once, and no session is spent on the server name).
    assert report.stats["connections"] == 3
    assert log.count("]: connect from unknown[127.0.4.99]") == 3
    first = next(e.text for e in f.evidence if e.kind == "transcript")
    assert first.count("# connect ") == 1 and "\n< 220 " in first and "> EHLO " in first
    # Postfix names any client that talks ahead of a reply it must wait for.
    assert "improper command pipelining" not in log


def test_an_mta_that_greets_late_and_punishes_early_talkers_is_still_found() -> None:
    # Postfix's anti-zombie recipe: wait a second before the greeting and reject clients that
    # talk first. The identifying HTTP request goes out before that greeting; the port must
    # still be SMTP, and the relay checks (which wait for the banner) must still work.
    late = ("smtpd_delay_reject = no\n"
            "smtpd_client_restrictions = sleep 1, reject_unauth_pipelining\n")
    with postfix("127.0.4.86", 2525, OPEN + late) as mta:
        report = probe("127.0.4.86", 2525, "127.0.4.97")
        # One disconnect per connection the probe made, so every warning is in the log.
        log = mta.wait_log("mail", "disconnect from unknown[127.0.4.99]",
                           count=report.stats["connections"])
    assert report.errors == ()
    assert report.stats["services"] == {"smtp": 1}
    (f,) = report.findings
    assert f.rule == "PROBE-SMTP-RELAY" and f.confidence is Confidence.LIKELY
    # The one early request (identification) was seen; the relay sessions waited their turn.
    assert log.count("warning: non-SMTP command") == 1, log
    assert "improper command pipelining" not in log
