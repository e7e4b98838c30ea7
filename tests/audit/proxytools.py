"""Shared test machinery for the stand-alone proxy auditors (Squid, tinyproxy, Privoxy, Dante,
microsocks): fixture files that state their expected findings, edit application for the
fix check, and real relay attempts through a running daemon to a loopback canary.

Fixture files start with comment lines:
    # expect: RULE-ID@LINE RULE-ID@LINE     findings that must be reported (rule and line)
    # expect-not: RULE-ID RULE-ID           rules that must not be reported
    # outside: default                      audit for an Internet client instead of OUTSIDE
`@DIR@` in a fixture is replaced by the directory it is copied to; sibling files that are not
fixtures (e.g. Privoxy `*.action`) are copied along.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from relayguard.audit.base import AuditOptions, Auditor, AuditResult
from relayguard.audit.fix import apply_edits as fix_apply
from relayguard.audit.fix import edits_by_path
from relayguard.catalogue import rule_by_id
from relayguard.findings import Edit, Severity
from tests.servers import http_canary, tcp_canary
from tests.servers.socks import socks5_connect

OUTSIDE = "127.0.7.250"  # the untrusted client every agreement test connects from
FIXTURE_SUFFIXES = (".conf", ".service", ".cfg")


@dataclass(frozen=True)
class Expectation:
    must: tuple[tuple[str, int], ...]
    must_not: tuple[str, ...]
    outside: str | None


def expectation(text: str) -> Expectation:
    must: list[tuple[str, int]] = []
    must_not: list[str] = []
    outside: str | None = OUTSIDE
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        m = re.match(r"#\s*(expect|expect-not|outside):\s*(.*)$", line)
        if not m:
            continue
        key, value = m.group(1), m.group(2).split()
        if key == "expect":
            for item in value:
                rule, _, ln = item.partition("@")
                must.append((rule, int(ln)))
        elif key == "expect-not":
            must_not += value
        else:
            outside = None if value == ["default"] else value[0]
    return Expectation(tuple(must), tuple(must_not), outside)


def fixture_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in FIXTURE_SUFFIXES)


def install_fixture(fixture: Path, tmp: Path, name: str) -> Path:
    """Copy `fixture` to tmp/name (with @DIR@ replaced) plus its non-fixture siblings."""
    for sib in fixture.parent.iterdir():
        if sib.is_file() and sib.suffix not in FIXTURE_SUFFIXES:
            shutil.copy(sib, tmp / sib.name)
    target = tmp / name
    target.write_text(fixture.read_text(encoding="utf-8").replace("@DIR@", str(tmp)),
                      encoding="utf-8")
    return target


def options_for(exp: Expectation) -> AuditOptions:
    client = ipaddress.ip_address(exp.outside) if exp.outside else None
    return AuditOptions(outside_client=client)


def apply_edits(edits: list[Edit]) -> None:
    """Apply edits to their files exactly as `--fix --write` does (relayguard.audit.fix), but
    without the verification, so a test can judge an edit the pipeline would refuse."""
    for path, group in edits_by_path(edits).items():
        text = Path(path).read_text(encoding="utf-8")
        Path(path).write_text(fix_apply(text, group), encoding="utf-8")


def check_fixture(auditor: Auditor, fixture: Path, tmp: Path, name: str) -> None:
    """Audit one fixture: exact expected rule@line, config test, and the fix closes it."""
    exp = expectation(fixture.read_text(encoding="utf-8"))
    assert exp.must or exp.must_not, f"{fixture.name} states no expectation"
    target = install_fixture(fixture, tmp, name)
    result = auditor.audit(target, options_for(exp))
    assert result.errors == [], result.errors
    got = {(f.rule, f.location.line) for f in result.findings}
    for rule, line in exp.must:
        assert (rule, line) in got, f"{fixture.name}: expected {rule} at line {line}, got {got}"
    rules = {f.rule for f in result.findings}
    for rule in exp.must_not:
        assert rule not in rules, f"{fixture.name}: {rule} must not fire, got {got}"
    for f in result.findings:
        rule = rule_by_id(f.rule)
        assert rule is not None and f.severity <= rule.severity, \
            f"{f.rule} reported {f.severity.label}, above its catalogue {rule and rule.severity}"
        assert f.location.path == str(target)
        assert f.evidence, f"{f.rule} has no evidence"
        assert f.fix, f"{f.rule} has no fix text"
    verdict = auditor.config_test(target)
    if verdict is not None:
        assert verdict[0], f"{fixture.name} rejected by the daemon's config test:\n{verdict[1]}"
    for rule, _ in exp.must:
        finding = next(f for f in result.findings if f.rule == rule)
        if finding.severity <= Severity.INFO:
            continue
        assert finding.edits, f"{rule} offers no edit"
        patched_dir = tmp / f"fixed-{rule}"
        patched_dir.mkdir()
        patched = install_fixture(fixture, patched_dir, name)
        again = auditor.audit(patched, options_for(exp))
        edits = list(next(f for f in again.findings if f.rule == rule).edits)
        apply_edits(edits)
        after = auditor.audit(patched, options_for(exp))
        assert after.errors == [], after.errors
        assert rule not in {f.rule for f in after.findings}, \
            f"{rule} still fires after its edits:\n{patched.read_text()}"
        verdict = auditor.config_test(patched)
        if verdict is not None:
            assert verdict[0], f"patched {fixture.name} rejected:\n{verdict[1]}"


def no_finding_above_info(result: AuditResult) -> None:
    bad = [(f.rule, str(f.location), f.title) for f in result.findings
           if f.severity > Severity.INFO]
    assert bad == [], bad
    assert result.errors == [], result.errors


# ---------------------------------------------------------------------------------------------
# Talking to a real daemon

@dataclass
class Canaries:
    """Third-party targets on one loopback address: HTTP on 80 and 443, an SMTP banner on 25."""

    host: str
    web: object
    tls: object
    smtp: object

    def for_port(self, port: int) -> object:
        return {80: self.web, 443: self.tls, 25: self.smtp}[port]


@contextlib.contextmanager
def canaries(host: str, wait: float = 90.0) -> Iterator[Canaries]:
    """The canaries on their real ports (Squid treats 25 and 443 specially). Another run of
    the same tests may hold them: wait for it (bounded) instead of failing."""
    deadline = time.monotonic() + wait
    while True:
        try:
            stack = contextlib.ExitStack()
            web = stack.enter_context(http_canary(host, 80))
            tls = stack.enter_context(http_canary(host, 443))
            smtp = stack.enter_context(tcp_canary(host, 25))
            break
        except PermissionError:
            stack.close()
            pytest.skip("the canaries need ports 25, 80 and 443: run as root")
        except OSError:
            stack.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
    with stack:
        yield Canaries(host, web, tls, smtp)


def read_until(s: socket.socket, until: bytes, timeout: float) -> bytes:
    """What `s` sends until `until` shows up, it closes, or `timeout` passes (bounded)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while until not in buf and len(buf) < 65536:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        s.settimeout(remaining)
        try:
            chunk = s.recv(4096)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        buf += chunk
    return buf


def http_proxy_verdicts(host: str, port: int, c: Canaries,
                        source: str = OUTSIDE) -> dict[str, bool]:
    """What the proxy really does for `source`: GET 80, GET 25, CONNECT 443, CONNECT 25."""
    out: dict[str, bool] = {}
    for method, target_port in (("GET", 80), ("GET", 25), ("CONNECT", 443), ("CONNECT", 25)):
        nonce = f"rg{uuid.uuid4().hex[:12]}"
        canary = c.for_port(target_port)
        with socket.create_connection((host, port), timeout=5,
                                      source_address=(source, 0)) as s:
            if method == "GET":
                s.sendall(f"GET http://{c.host}:{target_port}/{nonce} HTTP/1.1\r\n"
                          f"Host: {c.host}:{target_port}\r\nConnection: close\r\n\r\n"
                          .encode())
                read_until(s, b"\r\n\r\n", 1.5)
            else:
                s.sendall(f"CONNECT {c.host}:{target_port} HTTP/1.1\r\n"
                          f"Host: {c.host}:{target_port}\r\n\r\n".encode())
                head = read_until(s, b"\r\n\r\n", 5.0)
                if head.split(b" ", 2)[1:2] == [b"200"]:
                    payload = (f"GET /{nonce} HTTP/1.0\r\n\r\n" if target_port != 25
                               else f"EHLO {nonce}\r\n")
                    with contextlib.suppress(OSError):
                        s.sendall(payload.encode())
                        read_until(s, b"\r\n", 1.0)
        out[f"{method} {target_port}"] = bool(canary.wait_for(nonce, timeout=0.5))
    return out


def socks_verdicts(host: str, port: int, c: Canaries, source: str = OUTSIDE,
                   **auth: str) -> dict[str, bool]:
    """What a SOCKS5 server really does for `source` (no credentials unless given)."""
    out: dict[str, bool] = {}
    for target_port in (443, 25):
        nonce = f"rg{uuid.uuid4().hex[:12]}"
        canary = c.for_port(target_port)
        try:
            code, s = socks5_connect(host, port, c.host, target_port, source=source, **auth)
        except (OSError, IndexError):  # reset or closed during negotiation: refused
            code, s = -1, None
        if code == 0 and s is not None:
            with s:
                s.sendall((f"GET /{nonce} HTTP/1.0\r\n\r\n" if target_port != 25
                           else f"EHLO {nonce}\r\n").encode())
                read_until(s, b"\r\n", 1.0)
        out[f"SOCKS {target_port}"] = bool(canary.wait_for(nonce, timeout=0.5))
    return out


def audited_verdicts(result: AuditResult, keys: list[str]) -> dict[str, bool]:
    verdicts = result.facts["outside_verdicts"]
    return {k: verdicts[k] for k in keys}
