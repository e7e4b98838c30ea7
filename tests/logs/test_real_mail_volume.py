"""A compromised SASL account on a real Postfix: authenticated, so never an open relay, yet
it sends to a hundred domains at once. `relayguard logs` must say so (LOGS-SMTP-SENDER-VOLUME),
and stay quiet about the ordinary user next to it."""

from __future__ import annotations

import base64
import shutil
import socket
import time
from pathlib import Path

import pytest

from relayguard.logs.analyze import analyse
from tests.logs.sasl_standin import dovecot_auth
from tests.logs.smtp_sink import smtp_sink
from tests.servers.postfix import postfix

pytestmark = pytest.mark.server

MTA, SINK, AUTH = "127.0.5.46", "127.0.5.74", "127.0.5.75"
CLIENT = "127.0.5.47"
USERS = {"alice": "stolen-pw", "bob": "bobs-pw"}
BURST = [f"u{i}@target{i}.test" for i in range(120)]


def _submit(source: str, user: str, password: str, rcpts: list[str]) -> list[str]:
    """AUTH PLAIN then one message to `rcpts`; the last line of every reply."""
    with socket.create_connection((MTA, 2525), timeout=10,
                                  source_address=(source, 0)) as s, s.makefile("rwb") as f:

        def send(line: str) -> str:
            if line:
                f.write(line.encode() + b"\r\n")
                f.flush()
            for _ in range(100):
                got = f.readline().decode()
                if got[3:4] != "-":
                    return got.strip()
            raise AssertionError("endless reply")

        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        out = [send(""), send("EHLO client.test"), send(f"AUTH PLAIN {token}")]
        if not out[-1].startswith("235"):
            send("QUIT")
            return out
        out.append(send(f"MAIL FROM:<{user}@mx.relayguard.test>"))
        out += [send(f"RCPT TO:<{r}>") for r in rcpts]
        out.append(send("DATA"))
        out.append(send("Subject: hi\r\n\r\nhello\r\n."))
        out.append(send("QUIT"))
        return out


def test_compromised_account_mailing_a_hundred_domains(tmp_path: Path) -> None:
    main_cf = ("smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\n"
               f"smtpd_sasl_path = inet:{AUTH}:12345\n"
               f"relayhost = [{SINK}]:2526\n")
    with dovecot_auth(AUTH, 12345, USERS) as auth, smtp_sink(SINK, 2526) as sink, \
            postfix(MTA, 2525, main_cf) as mta:
        for rcpts in (["friend@one.test"], ["colleague@two.test"]):
            replies = _submit(CLIENT, "bob", USERS["bob"], rcpts)
            assert replies[-2].startswith("250 2.0.0"), (replies, mta.diagnostics())
        assert _submit(CLIENT, "alice", "guess", ["x@y.test"])[2].startswith("535")
        replies = _submit(CLIENT, "alice", USERS["alice"], BURST)
        assert replies[-2].startswith("250 2.0.0"), (replies, mta.diagnostics())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(sink.rcpts) < len(BURST) + 2:
            time.sleep(0.2)
        assert len(sink.rcpts) == len(BURST) + 2
        assert ("alice", True) in auth.attempts and ("alice", False) in auth.attempts
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and mta.log("mail").count("status=sent") < 122:
            time.sleep(0.2)
        log = tmp_path / "maillog"
        shutil.copy(mta.logs["mail"], log)
    assert "sasl_username=alice" in log.read_text()
    report = analyse([str(log)])
    incidents = {i["kind"]: i for i in report.stats["incidents"]}
    assert set(incidents) == {"smtp-sender-volume", "smtp-sasl-failures"}
    burst = incidents["smtp-sender-volume"]
    assert (burst["sender"], burst["authenticated"]) == ("alice", True)
    assert burst["events"] == 120 and burst["foreign_domains"] == 120
    assert burst["reasons"] == ["120 foreign domains within an hour"]
    assert [tuple(c) for c in burst["clients"]] == [(CLIENT, 120)]
    assert burst["outcomes"] == {"relayed": 120}
    users = {u["user"]: (u["deliveries"], u["domains"])
             for u in report.stats["mail"]["authenticated_users"]}
    assert users == {"alice": (120, "120"), "bob": (2, "2")}
    (finding,) = [f for f in report.findings if f.rule == "LOGS-SMTP-SENDER-VOLUME"]
    assert finding.category.value == "relay-abuse" and finding.confidence.label == "likely"
    assert "authenticated user alice" in finding.title
    assert not [f for f in report.findings if f.rule == "LOGS-SMTP-RELAYED"]
