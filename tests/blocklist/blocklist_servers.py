"""Real DNS servers for blocklist tests, on 127.0.6.0/24 only (rbldnsd x2, dnslib, silent).

- `rbl_good` (127.0.6.1): rbldnsd serving the catalogue's zone names with listings, several
  codes per IP, bitmask domain zones, IPv6 (ip6trie/ip6tset), reputation-good values, one
  code per catalogue entry (so every decoded code is exercised) and an uncatalogued zone.
- `rbl_bad` (127.0.6.2): rbldnsd serving a refusing Spamhaus (127.255.255.254 for
  everything), a wildcarded dead list (127.0.0.2 for everything) and an empty zone.
- `faults` (127.0.6.3): dnslib (UDP and TCP) for what rbldnsd cannot do: SERVFAIL, NODATA,
  answers outside 127/8, slow answers (timeouts), NXDOMAIN for the test point, truncated UDP
  replies (answered over TCP), plus A/AAAA for hostnames.
- `silent` (127.0.6.4): a UDP socket that never answers.
Nothing here talks to anything but these loopback servers.
"""

from __future__ import annotations

import collections
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from relayguard.blocklist.zones import ZONES, ZoneKind, ZoneStatus

GOOD_IP, BAD_IP, FAULT_IP, SILENT_IP = "127.0.6.1", "127.0.6.2", "127.0.6.3", "127.0.6.4"
CLIENT_IP = "127.0.6.10"  # where relayguard's queries come from (--source)


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def catalogue_code_ip(zone_index: int, code_index: int) -> str:
    """The address that carries catalogue zone #zone_index's code #code_index in rbl_good."""
    return f"11.{100 + zone_index}.{code_index}.1"


def catalogue_code_domain(code_index: int) -> str:
    return f"code{code_index}.catalogue.example"


# ---- rbldnsd ------------------------------------------------------------------------------

GOOD_IP4 = """\
:127.0.0.2:Listed by {zone}, see http://lookup.example/?ip=$
127.0.0.2
11.22.33.44 :127.0.0.2:SBL123 spam operation
11.22.33.44 :127.0.0.4:XBL: open proxy seen on $
11.22.33.45 :127.0.0.10:PBL: dynamic range
11.0.0.99 :127.0.0.99:strange code
11.0.0.255 :127.255.255.255:Excessive number of queries
"""
DRONEBL_IP4 = """\
:127.0.0.2:DroneBL listing
127.0.0.2
11.22.33.44 :127.0.0.9:HTTP proxy on port 80
"""
SIMPLE_IP4 = """\
:127.0.0.2:Listed by {zone}
127.0.0.2
"""
IP6_TRIE = """\
:127.0.0.4:IPv6 exploited host
::ffff:7f00:2 :127.0.0.2:test point
2a01:4f8:1::/48
"""
S5H_IP6 = """\
:127.0.0.2:s5h IPv6 listing
2a01:4f8:1:2
"""
S5H_IP6_TEST = """\
:127.0.0.2:test point
::ffff:7f00:2
"""
DBL = """\
:127.0.1.2:DBL listing $
test
dbltest.com
phish.example :127.0.1.4:phishing
abused.example :127.0.1.102:abused legit spam
xn--bcher-kva.example :127.0.1.2:IDN spam domain
mail.example.test :127.0.1.2:hostname listed
"""
SURBL = """\
:127.0.0.2:SURBL $
test.surbl.org :127.0.0.254:test
shop.example :127.0.0.136:PH and CR
"""
URIBL = """\
:127.0.0.2:URIBL $
test.uribl.com :127.0.0.14:test
spam.example :127.0.0.2:black
"""
REP = """\
:127.0.0.2:rep
127.0.0.2 :127.0.0.16:test point
11.22.33.46 :127.0.0.17:good sender
11.22.33.47 :127.0.0.11:very bad sender
"""
CUSTOM = """\
:127.0.0.2:custom list
127.0.0.2
11.22.33.44 :127.0.0.3:custom listing
"""

REFUSING = """\
:127.255.255.254:Error: open resolver; see https://www.spamhaus.org/returnc/pub/
0.0.0.0/1
128.0.0.0/1
"""
WILDCARD = """\
:127.0.0.2:listed (domain expired, wildcarded)
0.0.0.0/1
128.0.0.0/1
"""


def _catalogue_datasets() -> list[tuple[str, str, str]]:
    """(zone, type, data): every catalogued code, one address or domain per code."""
    out = []
    for zi, zone in enumerate(ZONES):
        if zone.status is not ZoneStatus.LIVE:
            continue
        if zone.kind is ZoneKind.IP and zone.codes:
            lines = ["127.0.0.2 :127.0.0.2:test point"]
            lines += [f"{catalogue_code_ip(zi, ci)} :{value}:code {value}"
                      for ci, value in enumerate(zone.codes)]
            out.append((zone.name, "ip4set", "\n".join(lines) + "\n"))
        if zone.kind is ZoneKind.DOMAIN and (zone.codes or zone.bits):
            values = list(zone.codes) or [f"127.0.0.{bit}" for bit in zone.bits]
            lines = [f"{zone.positive_test} :127.0.0.2:test point"]
            lines += [f"{catalogue_code_domain(ci)} :{value}:code {value}"
                      for ci, value in enumerate(values)]
            out.append((zone.name, "dnset", "\n".join(lines) + "\n"))
    return out


GOOD_DATASETS: list[tuple[str, str, str]] = [
    ("zen.spamhaus.org", "ip4set", GOOD_IP4),
    ("zen.spamhaus.org", "ip6trie", IP6_TRIE),
    ("bl.spamcop.net", "ip4tset", SIMPLE_IP4),
    ("dnsbl.dronebl.org", "ip4set", DRONEBL_IP4),
    ("psbl.surriel.com", "ip4tset", SIMPLE_IP4),
    ("bl.mailspike.net", "ip4set", SIMPLE_IP4),
    ("all.s5h.net", "ip4set", SIMPLE_IP4),
    ("all.s5h.net", "ip6tset", S5H_IP6),
    ("all.s5h.net", "ip6trie", S5H_IP6_TEST),
    ("dnsbl-1.uceprotect.net", "ip4set", SIMPLE_IP4),
    ("dnsbl-2.uceprotect.net", "ip4set", SIMPLE_IP4 + "11.22.33.0/24\n"),
    ("dbl.spamhaus.org", "dnset", DBL),
    ("multi.surbl.org", "dnset", SURBL),
    ("multi.uribl.com", "dnset", URIBL),
    ("rep.mailspike.net", "ip4set", REP),
    ("custom.bl.test", "ip4set", CUSTOM),
    ("clean.bl.test", "ip4set", SIMPLE_IP4),
    *_catalogue_datasets(),
]

BAD_DATASETS: list[tuple[str, str, str]] = [
    ("zen.spamhaus.org", "ip4set", REFUSING),
    ("dnsbl.ahbl.org", "ip4set", WILDCARD),
    ("wild.bl.test", "ip4set", WILDCARD),
    ("dnsbl.njabl.org", "ip4set", ""),
    ("clean.bl.test", "ip4set", SIMPLE_IP4),
    ("clean2.bl.test", "ip4set", SIMPLE_IP4),
]


@dataclass
class Rbldnsd:
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path

    @property
    def resolver(self) -> str:
        return f"{self.host}:{self.port}"


def _query(host: str, port: int, name: str) -> dns.message.Message | None:
    try:
        return dns.query.udp(dns.message.make_query(name, "A"), host, port=port, timeout=0.3,
                             source=CLIENT_IP)
    except Exception:
        return None


def start_rbldnsd(host: str, datasets: list[tuple[str, str, str]]) -> Rbldnsd:
    """rbldnsd in the foreground (-n) as user rbldns, zones from files in a fresh dir."""
    if shutil.which("rbldnsd") is None:
        pytest.fail("rbldnsd is not installed (scripts/install-test-deps installs it)")
    workdir = Path(tempfile.mkdtemp(prefix="rg-rbldnsd-", dir="/tmp"))
    os.chmod(workdir, 0o755)  # rbldnsd reads the files as user rbldns
    args = []
    for i, (zone, kind, data) in enumerate(datasets):
        fname = f"z{i}.{kind}"
        (workdir / fname).write_text(data.replace("{zone}", zone))
        os.chmod(workdir / fname, 0o644)
        args.append(f"{zone}:{kind}:{fname}")
    port = free_udp_port(host)
    user = ["-u", "rbldns"] if os.geteuid() == 0 else []
    log = open(workdir / "rbldnsd.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        ["rbldnsd", "-n", *user, "-b", f"{host}/{port}", "-w", str(workdir), "-t", "60",
         *args], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    probe_zone = datasets[0][0]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _query(host, port, f"1.0.0.127.{probe_zone}") is not None:
            return Rbldnsd(host, port, proc, workdir)
        time.sleep(0.05)
    stop_rbldnsd(Rbldnsd(host, port, proc, workdir))
    pytest.fail("rbldnsd did not start: " + (workdir / "rbldnsd.log").read_text())
    raise AssertionError  # unreachable


def stop_rbldnsd(server: Rbldnsd) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=5)
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def rbl_good() -> Iterator[Rbldnsd]:
    server = start_rbldnsd(GOOD_IP, GOOD_DATASETS)
    try:
        yield server
    finally:
        stop_rbldnsd(server)


@pytest.fixture(scope="session")
def rbl_bad() -> Iterator[Rbldnsd]:
    server = start_rbldnsd(BAD_IP, BAD_DATASETS)
    try:
        yield server
    finally:
        stop_rbldnsd(server)


# ---- dnslib faults -------------------------------------------------------------------------

SLOW_SECONDS = 1.2  # longer than the 0.4 s client timeout the tests use


class FaultResolver:
    """Answers per zone: correct RFC 5782 test points, then one kind of fault for targets."""

    TEST_POS = "2.0.0.127."
    TEST_NEG = "1.0.0.127."
    TEST6_POS = "2.0.0.0.0.0.f.7.f.f.f.f." + "0." * 20  # ::ffff:7f00:2 in nibbles

    def __init__(self) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.closing = threading.Event()  # set at teardown: slow answers return at once

    def resolve(self, request, handler):  # type: ignore[no-untyped-def]
        from dnslib import AAAA, QTYPE, RCODE, RR, A

        qname = str(request.q.qname).lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.hits[qname] += 1
        reply = request.reply()

        def a(value: str) -> None:
            if qtype == "A":
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(value), ttl=60))

        hosts = {"mail.example.test.": {"A": ["11.22.33.44", "10.0.0.5"],
                                        "AAAA": ["2a01:4f8:1:2::25"]},
                 "v6only.example.test.": {"AAAA": ["2a01:4f8:1:2::26"]},
                 "mapped.example.test.": {"AAAA": ["::ffff:b16:212c"]}}  # 11.22.33.44
        if qname in hosts:
            for value in hosts[qname].get(qtype, []):
                rdata = A(value) if qtype == "A" else AAAA(value)
                reply.add_answer(RR(request.q.qname, getattr(QTYPE, qtype), rdata=rdata,
                                    ttl=60))
            return reply
        if qname == "broken.example.test.":
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        zone = next((z for z in ("servfail", "nodata", "hijack", "slow", "nxall", "hijackall",
                                 "good", "dom", "trunc") if qname.endswith(f".{z}.faults.test.")),
                    None)
        if zone is None:
            reply.header.rcode = RCODE.REFUSED
            return reply
        if zone == "trunc" and handler.protocol == "udp":
            reply.header.tc = 1  # "too big for UDP": the answer is only given over TCP
            return reply
        if zone == "nxall":
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if zone == "hijackall":
            a("198.51.100.7")
            return reply
        if zone == "dom":
            if qname.startswith("test.") or qname.startswith("mail.example.test."):
                a("127.0.1.2")
            else:
                reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if zone == "good" and qname.startswith(self.TEST6_POS):
            a("127.0.0.2")
            return reply
        if qname.startswith(self.TEST_POS):
            a("127.0.0.2")
            return reply
        if qname.startswith(self.TEST_NEG):
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if zone in ("good", "trunc"):
            if qname.startswith("44.33.22.11."):
                a("127.0.0.2")
            else:
                reply.header.rcode = RCODE.NXDOMAIN
        elif zone == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
        elif zone == "hijack":
            a("198.51.100.7")
        elif zone == "slow":
            self.closing.wait(SLOW_SECONDS)
            reply.header.rcode = RCODE.NXDOMAIN
        # "nodata": NOERROR and no records
        return reply


@dataclass
class Faults:
    resolver: str
    handler: FaultResolver


@pytest.fixture(scope="session")
def faults() -> Iterator[Faults]:
    from dnslib.server import DNSLogger, DNSServer

    handler = FaultResolver()
    port = free_udp_port(FAULT_IP)
    servers = [DNSServer(handler, address=FAULT_IP, port=port, tcp=tcp,
                         logger=DNSLogger(logf=lambda s: None)) for tcp in (False, True)]
    for server in servers:
        server.start_thread()
    try:
        yield Faults(f"{FAULT_IP}:{port}", handler)
    finally:
        handler.closing.set()
        time.sleep(0.1)  # let in-flight slow answers go out before the socket closes
        for server in servers:
            server.stop()
            server.server.server_close()


@pytest.fixture(scope="session")
def silent() -> Iterator[str]:
    """A bound UDP socket that reads nothing and answers nothing: every query times out."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((SILENT_IP, 0))
    try:
        yield f"{SILENT_IP}:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture(autouse=True)
def _no_system_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that forgets --resolver must fail loudly, never ask the system's resolver."""
    import relayguard.cli.blocklist as cli

    def refuse() -> list[object]:
        raise AssertionError("blocklist test ran without --resolver")

    monkeypatch.setattr(cli, "_system_resolvers", refuse)


def rcode_of(host: str, port: int, name: str) -> str:
    msg = _query(host, port, name)
    return "timeout" if msg is None else dns.rcode.to_text(msg.rcode())


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str

    @property
    def doc(self) -> dict:  # type: ignore[type-arg]
        import json

        return json.loads(self.stdout)


def run_cli(*args: str) -> CliRun:
    """`relayguard blocklist ARGS` in-process; tests always pass --resolver themselves."""
    from click.testing import CliRunner

    from relayguard.cli import app

    if "--source" not in args:
        args = (*args, "--source", CLIENT_IP)  # stay inside our loopback range
    result = CliRunner().invoke(app, ["blocklist", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliRun(result.exit_code, result.stdout, result.stderr)


def findings_by(doc: dict) -> dict[tuple[str, str, str], dict]:  # type: ignore[type-arg]
    """{(rule, target, zone): finding} from a JSON report (zone read from the title)."""
    out = {}
    for f in doc["findings"]:
        zone = f["title"].split(" is listed on ", 1)[1].split(":", 1)[0]
        out[(f["rule"], f["location"]["host"], zone)] = f
    return out
