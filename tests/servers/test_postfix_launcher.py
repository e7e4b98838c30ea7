"""The Postfix launcher starts a real MTA whose relay policy is the test's config."""

from __future__ import annotations

import socket

import pytest

from tests.servers.base import port_open
from tests.servers.postfix import postfix

pytestmark = pytest.mark.server

HOST = "127.0.4.41"
CLIENT = "127.0.4.99"


def smtp_session(host: str, port: int, commands: list[str]) -> list[str]:
    """Send each command and return the last line of every reply, banner first."""
    out: list[str] = []
    with socket.create_connection((host, port), timeout=5,
                                  source_address=(CLIENT, 0)) as s, s.makefile("rwb") as f:

        def reply() -> str:
            for _ in range(100):
                line = f.readline().decode()
                if line[3:4] != "-":
                    return line.strip()
            raise AssertionError("endless reply")

        out.append(reply())
        for c in commands:
            f.write(c.encode() + b"\r\n")
            f.flush()
            out.append(reply())
    return out


RELAY = ["EHLO scanner.test", "MAIL FROM:<a@scanner.test>", "RCPT TO:<b@foreign.test>", "QUIT"]


def test_stock_postfix_refuses_to_relay_for_a_stranger() -> None:
    with postfix(HOST, 2525) as mta:
        replies = smtp_session(HOST, 2525, RELAY)
        assert replies[0].startswith("220 mx.relayguard.test"), mta.diagnostics()
        # Stock relay policy is defer_unauth_destination: a temporary refusal.
        assert replies[3].startswith("454 4.7.1"), replies
        assert "Relay access denied" in mta.wait_log("mail", "Relay access denied")
    assert not port_open(HOST, 2525)


def test_mynetworks_covering_the_client_is_an_open_relay() -> None:
    with postfix(HOST, 2526, "mynetworks = 127.0.0.0/8\n") as mta:
        replies = smtp_session(HOST, 2526, RELAY)
        assert replies[3].startswith("250 2.1.5"), (replies, mta.diagnostics())
