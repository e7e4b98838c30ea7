"""`relayguard logs` on logs written by real Apache and Postfix under traffic this test drives.

Each scenario starts the real daemons (tests/servers), sends a known mix of visitors, proxy
abuse and refused attempts from distinct 127.0.5.x clients, stops the daemons, and then
asserts the analysis reports exactly those counts, clients and first/last times.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from relayguard.logs.analyze import LogOptions, analyse
from tests.logs.smtp_sink import smtp_sink
from tests.servers import PROXY_MODULES, apache, http_canary, http_get, tcp_canary
from tests.servers.http import connect
from tests.servers.postfix import postfix

pytestmark = pytest.mark.server

OPEN, RESTRICTED, ORIGIN = "127.0.5.10", "127.0.5.11", "127.0.5.12"
WEB, MX = "127.0.5.60", "127.0.5.61"
VISITORS = ("127.0.5.21", "127.0.5.22")
SPAMMERS = {"127.0.5.31": 3, "127.0.5.32": 2}  # CONNECT-to-25 sessions each
BROWSER = "127.0.5.41"
SCANNER = "127.0.5.51"
INDEX = "<html>" + "relayguard origin page " * 40 + "</html>\n"
ORIGIN_INDEX = "<html>another site's own home page</html>\n"


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(t)))


def _smtp_through_tunnel(proxy: tuple[str, int], client: str, target: str) -> bytes:
    """CONNECT target through the proxy and speak a little SMTP in the tunnel."""
    with connect(*proxy, client) as s:
        s.sendall(f"CONNECT {target} HTTP/1.0\r\n\r\n".encode())
        head = s.recv(4096)
        if b" 200 " not in head.split(b"\r\n")[0] + b" ":
            return head
        if b"\r\n220 " not in head:
            s.recv(4096)  # the MX banner, unless it came with the proxy's answer
        s.sendall(b"EHLO spam.test\r\nQUIT\r\n")
        s.recv(4096)
        return head


def _wait_log(read: Any, needle: str, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read().count(needle) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"log never showed {count} x {needle!r}:\n{read()[-3000:]}")


@pytest.fixture(scope="module")
def web_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Drive the three Apaches; return copies of their access logs and the test's clock."""
    out: dict[str, Any] = {}
    keep = tmp_path_factory.mktemp("weblogs")
    with http_canary(WEB) as web, tcp_canary(MX, 25) as mx, apache(
        OPEN, 18080, "ProxyRequests On\nAllowCONNECT 25 443\n", modules=PROXY_MODULES,
        index_html=INDEX,
    ) as open_proxy, apache(
        RESTRICTED, 18081,
        "ProxyRequests On\nAllowCONNECT 25 443\n<Proxy \"*\">\n    Require ip 10.9.9.9\n"
        "</Proxy>\n", modules=PROXY_MODULES, index_html=INDEX,
    ) as restricted, apache(ORIGIN, 18082, "", index_html=ORIGIN_INDEX) as origin:
        out["t0"] = time.time()
        out["web_port"] = web.port
        for proxy in (open_proxy, restricted, origin):
            for v in VISITORS:
                for path in ("/", "/index.html", "/"):
                    assert http_get(proxy.host, proxy.port, path, source=v).status == 200
        # spam: CONNECT to port 25 through each proxy
        out["smtp_first"] = time.time()
        for client, n in SPAMMERS.items():
            for _ in range(n):
                _smtp_through_tunnel(open_proxy.address, client, f"{MX}:25")
                _smtp_through_tunnel(restricted.address, client, f"{MX}:25")
                _smtp_through_tunnel(origin.address, client, f"{MX}:25")
        out["smtp_last"] = time.time()
        assert len(mx.hits) == sum(SPAMMERS.values()), "only the open proxy may reach the MX"
        # proxy browsing through the open proxy: the home pages of two other sites
        for url in (f"http://{WEB}:{web.port}/", f"http://{ORIGIN}:18082/"):
            reply = http_get(open_proxy.host, open_proxy.port, url, source=BROWSER)
            assert reply.status == 200 and reply.body != INDEX.encode()
        # the same kind of requests against the restricted proxy and the plain Apache
        for page in ("/page-a", "/a-much-longer-page-name-b"):
            url = f"http://{WEB}:{web.port}{page}"
            http_get(restricted.host, restricted.port, url, source=BROWSER)
            http_get(origin.host, origin.port, url, source=BROWSER)
        http_get(origin.host, origin.port, f"http://{WEB}:{web.port}/", source=BROWSER)
        assert len(web.hits) == 1, "only the open proxy may reach the web canary"
        # a refused CONNECT to a port outside AllowCONNECT
        _smtp_through_tunnel(open_proxy.address, SCANNER, f"{MX}:22")
        out["t1"] = time.time()
        for name, d, n in (("open", open_proxy, 14), ("restricted", restricted, 13),
                           ("origin", origin, 15)):
            _wait_log(lambda d=d: d.log("access"), "\n", n)
            dest = keep / f"{name}-access.log"
            shutil.copy(d.logs["access"], dest)
            out[name] = dest
    return out


def _incidents(report: Any) -> dict[str, dict[str, Any]]:
    incs = report.stats["incidents"]
    by_kind = {i["kind"]: i for i in incs}
    assert len(by_kind) == len(incs), incs
    return by_kind


def test_open_apache_proxy_incidents_exact(web_logs: dict[str, Any]) -> None:
    report = analyse([str(web_logs["open"])])
    assert report.stats["lines"] == 14 and report.stats["unparsed"] == 0
    inc = _incidents(report)
    assert set(inc) == {"proxy-smtp", "proxy-http", "proxy-connect"}
    smtp = inc["proxy-smtp"]
    assert smtp["events"] == 5 and smtp["outcomes"] == {"relayed": 5}
    assert smtp["verdict"] == "relayed"
    assert smtp["clients"] == [["127.0.5.31", 3], ["127.0.5.32", 2]] or \
        smtp["clients"] == [("127.0.5.31", 3), ("127.0.5.32", 2)]
    assert [tuple(d) for d in smtp["destinations"]] == [(f"{MX}:25", 5)]
    assert smtp["smtp_destinations"] == 1
    assert _iso(web_logs["smtp_first"]) <= smtp["first_seen"] <= smtp["last_seen"] \
        <= _iso(web_logs["smtp_last"] + 1)
    http = inc["proxy-http"]
    # both home pages differ from the proxy's own home page: relayed
    assert http["events"] == 2 and http["outcomes"] == {"relayed": 2}
    assert [tuple(c) for c in http["clients"]] == [(BROWSER, 2)]
    assert sorted(d for d, _ in http["destinations"]) == sorted(
        [f"{ORIGIN}:18082", f"{WEB}:{web_logs['web_port']}"])
    refused = inc["proxy-connect"]
    assert refused["events"] == 1 and refused["outcomes"] == {"refused": 1}
    assert refused["statuses"] == {"403": 1}
    rules = sorted((f.rule, f.severity.label, f.confidence.label) for f in report.findings)
    assert rules == [("LOGS-PROXY-HTTP", "high", "likely"), ("LOGS-PROXY-SCAN", "low", "likely"),
                     ("LOGS-PROXY-SMTP", "critical", "likely")]
    story = next(n for n in report.notes if n.startswith("proxy-smtp:"))
    assert "5 event(s)" in story and "relayed (relayed 5)" in story
    assert "127.0.5.31 (3), 127.0.5.32 (2)" in story and "1 SMTP destination(s)" in story
    smtp_finding = next(f for f in report.findings if f.rule == "LOGS-PROXY-SMTP")
    assert smtp_finding.category.value == "proxy-abuse"
    assert smtp_finding.location.path == str(web_logs["open"])
    assert smtp_finding.location.line == 7  # after 6 visitor lines
    assert all(e.kind == "log" for e in smtp_finding.evidence)


def test_restricted_apache_proxy_is_a_refused_scan(web_logs: dict[str, Any]) -> None:
    report = analyse([str(web_logs["restricted"])])
    inc = _incidents(report)
    assert set(inc) == {"proxy-smtp", "proxy-http"}
    assert inc["proxy-smtp"]["outcomes"] == {"refused": 5}
    assert inc["proxy-smtp"]["statuses"] == {"403": 5}
    assert inc["proxy-http"]["outcomes"] == {"refused": 2}
    assert [(f.rule, f.severity.label) for f in report.findings] == \
        [("LOGS-PROXY-SCAN", "low"), ("LOGS-PROXY-SCAN", "low")]


def test_plain_apache_answering_absolute_uri_is_served_locally(web_logs: dict[str, Any]) -> None:
    """Apache without mod_proxy: `GET http://other/` -> its own index (200, local size)."""
    report = analyse([str(web_logs["origin"])])
    assert report.stats["lines"] == 15  # + the open proxy's relayed GET /
    inc = _incidents(report)
    assert inc["proxy-http"]["events"] == 3
    # "/" answered 200 with the local index; the other two paths 404 locally
    assert inc["proxy-http"]["outcomes"] == {"local": 1, "refused": 2}
    assert inc["proxy-smtp"]["outcomes"] == {"refused": 5}
    assert inc["proxy-smtp"]["statuses"] == {"405": 5}
    assert not [f for f in report.findings if f.rule != "LOGS-PROXY-SCAN"]


def test_fast_and_line_paths_agree_on_real_logs(web_logs: dict[str, Any]) -> None:
    for name in ("open", "restricted", "origin"):
        fast = analyse([str(web_logs[name])])
        slow = analyse([str(web_logs[name])], LogOptions(fast=False))
        strip = [{k: v for k, v in i.items()} for i in fast.stats["incidents"]]
        assert strip == slow.stats["incidents"], name
        assert [f.to_dict() for f in fast.findings] == [f.to_dict() for f in slow.findings]


# ---------------------------------------------------------------------------------------------
# Postfix

MTA_OPEN, MTA_CLOSED = "127.0.5.40", "127.0.5.42"
SINK_OK, SINK_BLOCK, SINK_GREET = "127.0.5.62", "127.0.5.63", "127.0.5.65"
SPAM_CLIENT, PROBE_CLIENT = "127.0.5.34", "127.0.5.35"
VICTIMS = ("victim1.test", "victim2.test", "victim3.test")
BLOCKERS = ("blocked1.test", "blocked2.test")
GREET_BLOCKER = "greetblock.test"  # its MX refuses at the greeting: 554 … blocked using …


def _smtp(host: str, port: int, source: str, rcpts: list[str]) -> list[str]:
    """One SMTP session with a message to `rcpts`; returns the last line of every reply."""
    with socket.create_connection((host, port), timeout=10,
                                  source_address=(source, 0)) as s, s.makefile("rwb") as f:

        def reply() -> str:
            for _ in range(100):
                line = f.readline().decode()
                if line[3:4] != "-":
                    return line.strip()
            raise AssertionError("endless reply")

        out = [reply()]
        cmds = ["EHLO spam.test", "MAIL FROM:<bulk@spam.test>", *(f"RCPT TO:<{r}>" for r in rcpts)]
        for c in cmds:
            f.write(c.encode() + b"\r\n")
            f.flush()
            out.append(reply())
        if any(r.startswith("250") for r in out[3:]):
            f.write(b"DATA\r\n")
            f.flush()
            out.append(reply())
            f.write(b"Subject: cheap\r\n\r\nbuy\r\n.\r\n")
            f.flush()
            out.append(reply())
        f.write(b"QUIT\r\n")
        f.flush()
        out.append(reply())
        return out


@pytest.fixture(scope="module")
def mail_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keep = tmp_path_factory.mktemp("maillogs")
    transport = "".join(f"{d} smtp:[{SINK_OK}]:2526\n" for d in VICTIMS) + \
        "".join(f"{d} smtp:[{SINK_BLOCK}]:2526\n" for d in BLOCKERS) + \
        f"{GREET_BLOCKER} smtp:[{SINK_GREET}]:2526\n"
    open_cf = ("mynetworks = 127.0.0.1/32\n"
               "smtpd_relay_restrictions = permit_mynetworks, "
               "check_client_access cidr:$config_directory/clients.cidr, "
               "reject_unauth_destination\n"
               "transport_maps = texthash:$config_directory/transport\n")
    with smtp_sink(SINK_OK, 2526) as ok, smtp_sink(SINK_BLOCK, 2526, blocklisted=True), \
            smtp_sink(SINK_GREET, 2526, greeting_block=True) as greet, \
            postfix(MTA_OPEN, 2525, open_cf, files={"clients.cidr": "127.0.5.0/24 OK\n",
                                                     "transport": transport}) as mta_open, \
            postfix(MTA_CLOSED, 2525, "mynetworks = 127.0.0.1/32\n") as mta_closed:
        out["t0"] = time.time()
        # the spammer: 3 messages to the accepting MXes, 2 to MXes that say we are listed at
        # RCPT, 1 to an MX that says so in its greeting (Postfix defers: skip_5xx_greeting)
        for i, dom in enumerate((*VICTIMS, *BLOCKERS, GREET_BLOCKER)):
            replies = _smtp(MTA_OPEN, 2525, SPAM_CLIENT, [f"user{i}@{dom}"])
            assert replies[-2].startswith("250 2.0.0"), (replies, mta_open.diagnostics())
        # the closed MTA: 3 relay attempts refused (stock defer_unauth_destination: 454)
        for dom in VICTIMS:
            replies = _smtp(MTA_CLOSED, 2525, PROBE_CLIENT, [f"x@{dom}"])
            assert replies[3].startswith("454 4.7.1"), replies
        out["t1"] = time.time()
        _wait_log(lambda: mta_open.log("mail"), "status=", 6 + 2)  # + 2 bounce notices
        assert greet.sessions >= 1
        _wait_log(lambda: mta_closed.log("mail"), "Relay access denied", 3)
        assert ok.messages == 3
        for name, d in (("open", mta_open), ("closed", mta_closed)):
            dest = keep / f"{name}-maillog"
            shutil.copy(d.logs["mail"], dest)
            out[name] = dest
    return out


def test_open_postfix_relay_and_blocklist_bounces_exact(mail_logs: dict[str, Any]) -> None:
    report = analyse([str(mail_logs["open"])])
    inc = _incidents(report)
    assert set(inc) == {"smtp-relayed", "smtp-blocklist-bounce"}
    relayed = inc["smtp-relayed"]
    assert relayed["client"] == SPAM_CLIENT
    assert relayed["events"] == 6 and relayed["messages"] == 6
    assert relayed["foreign_domains"] == 6
    assert relayed["outcomes"] == {"relayed": 3, "refused": 2, "unknown": 1}
    assert sorted(d for d, _ in relayed["destinations"]) == sorted(
        (*VICTIMS, *BLOCKERS, GREET_BLOCKER))
    # syslog stamps are this machine's local time, read as such: true UTC instants
    assert _iso(mail_logs["t0"]) <= relayed["first_seen"] <= relayed["last_seen"] \
        <= _iso(mail_logs["t1"] + 5)
    bounce = inc["smtp-blocklist-bounce"]
    # 2 refused at RCPT (bounced), 1 at the greeting (`refused to talk to me`, deferred)
    assert bounce["events"] == 3 and bounce["lists"] == {"zen.spamhaus.org": 3}
    assert bounce["statuses"] == {"bounced": 2, "deferred": 1}
    assert [tuple(d) for d in bounce["destinations"]] == [
        (f"{SINK_BLOCK}[{SINK_BLOCK}]", 2), (f"{SINK_GREET}[{SINK_GREET}]", 1)]
    mail = report.stats["mail"]
    # 3 sent + 2 bounced for the spammer, 2 non-delivery notices (to spam.test, unresolvable)
    assert [tuple(x) for x in mail["outbound_by_sender"]] == [("bulk@spam.test", 5), ("<>", 2)]
    assert mail["inbound_blocklist_rejects"] == 0 and mail["authenticated_users"] == []
    got = sorted((f.rule, f.category.value, f.confidence.label) for f in report.findings)
    assert got == [("LOGS-SMTP-BLOCKLISTED", "blocklisted", "likely"),
                   ("LOGS-SMTP-RELAYED", "relay-abuse", "confirmed")]


def test_closed_postfix_relay_attempts_refused(mail_logs: dict[str, Any]) -> None:
    report = analyse([str(mail_logs["closed"])])
    inc = _incidents(report)
    assert set(inc) == {"smtp-relay-denied"}
    denied = inc["smtp-relay-denied"]
    assert denied["events"] == 3 and [tuple(c) for c in denied["clients"]] == [(PROBE_CLIENT, 3)]
    assert sorted(d for d, _ in denied["destinations"]) == sorted(VICTIMS)
    assert [(f.rule, f.severity.label) for f in report.findings] == \
        [("LOGS-SMTP-RELAY-DENIED", "low")]


MTA_BACKUP, PRIMARY, SENDER = "127.0.5.45", "127.0.5.68", "127.0.5.39"
HOSTED = ("hosted-a.test", "hosted-b.test", "hosted-c.test", "hosted-d.test")


def test_backup_mx_relaying_for_its_relay_domains_is_not_abuse(tmp_path: Path) -> None:
    """A real Postfix as backup MX: relay_domains, handed to the primary through the `relay`
    transport. Outside mail for those domains is its job (no LOGS-SMTP-RELAYED), while a
    foreign domain is still refused (a relay attempt)."""
    hosted = ", ".join(HOSTED)
    main_cf = (f"relay_domains = {hosted}\n"
               "transport_maps = texthash:$config_directory/transport\n")
    transport = "".join(f"{d} relay:[{PRIMARY}]:2526\n" for d in HOSTED)
    with smtp_sink(PRIMARY, 2526) as primary, \
            postfix(MTA_BACKUP, 2525, main_cf, files={"transport": transport}) as mta:
        for i, dom in enumerate(HOSTED):
            replies = _smtp(MTA_BACKUP, 2525, SENDER, [f"user{i}@{dom}"])
            assert replies[-2].startswith("250 2.0.0"), (replies, mta.diagnostics())
        refused = _smtp(MTA_BACKUP, 2525, SENDER, ["x@elsewhere.test"])
        assert refused[3].startswith("454 4.7.1"), refused
        _wait_log(lambda: mta.log("mail"), "status=sent", len(HOSTED))
        assert primary.messages == len(HOSTED)
        log = tmp_path / "maillog"
        shutil.copy(mta.logs["mail"], log)
    assert log.read_text().count("postfix/relay/smtp[") >= len(HOSTED)
    report = analyse([str(log)])
    assert {i["kind"] for i in report.stats["incidents"]} == {"smtp-relay-denied"}
    assert [f.rule for f in report.findings] == ["LOGS-SMTP-RELAY-DENIED"]
    assert report.stats["mail"]["sent"] == len(HOSTED)


MTA_SCREEN, SCREENED = "127.0.5.43", "127.0.5.36"


def test_postscreen_rejects_are_inbound_rejects(tmp_path: Path) -> None:
    """A real postscreen in front of smtpd refusing a denylisted client: an inbound reject
    (our server refusing someone), counted as such and never read as "we are blocklisted".
    Its DNSBL variant (`… blocked using zen.spamhaus.org`) needs a DNS server postscreen's
    dnsblog would ask, which loopback-only tests cannot point it at; test_detectors has it."""
    main_cf = ("postscreen_access_list = permit_mynetworks, cidr:$config_directory/ps.cidr\n"
               "postscreen_denylist_action = enforce\n")
    master = ("2527 inet n - n - 1 postscreen\nsmtpd pass - - n - - smtpd\n"
              "dnsblog unix - - n - 0 dnsblog\ntlsproxy unix - - n - 0 tlsproxy\n")
    with postfix(MTA_SCREEN, 2525, main_cf, files={"ps.cidr": f"{SCREENED}/32 reject\n"},
                 master_cf_extra=master) as mta:
        replies = _smtp(MTA_SCREEN, 2527, SCREENED, ["me@mx.relayguard.test"])
        assert replies[3].startswith("550 5.3.2"), (replies, mta.diagnostics())
        _wait_log(lambda: mta.log("mail"), "postscreen", 3)
        _wait_log(lambda: mta.log("mail"), "NOQUEUE: reject: RCPT", 1)
        log = tmp_path / "maillog"
        shutil.copy(mta.logs["mail"], log)
    report = analyse([str(log)])
    assert report.stats["mail"]["rejects"] == 1
    assert report.stats["mail"]["inbound_blocklist_rejects"] == 0
    assert report.stats["incidents"] == [] and report.findings == ()


def test_web_and_mail_logs_together_tell_one_story(web_logs: dict[str, Any],
                                                   mail_logs: dict[str, Any],
                                                   tmp_path: Path) -> None:
    report = analyse([str(web_logs["open"]), str(mail_logs["open"])])
    assert report.stats["by_format"] == {"combined": 14, "postfix": report.stats["parsed"] - 14}
    kinds = {i["kind"] for i in report.stats["incidents"]}
    assert kinds == {"proxy-smtp", "proxy-http", "proxy-connect", "smtp-relayed",
                     "smtp-blocklist-bounce"}


# ---------------------------------------------------------------------------------------------
# Squid: a forward proxy by design, so only SMTP targets matter

SQUID_OPEN, SQUID_STOCK = "127.0.5.13", "127.0.5.14"
SQUID_MX = "127.0.5.64"


@pytest.fixture(scope="module")
def squid_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.servers.squid import STOCK_ACCESS, squid

    out: dict[str, Any] = {}
    keep = tmp_path_factory.mktemp("squidlogs")
    with http_canary(WEB) as web, tcp_canary(SQUID_MX, 25) as mx, \
            squid(SQUID_OPEN, 3128, "http_access allow all\n") as open_sq, \
            squid(SQUID_STOCK, 3128, STOCK_ACCESS + "") as stock_sq:
        for sq in (open_sq, stock_sq):
            for client in SPAMMERS:
                _smtp_through_tunnel(sq.address, client, f"{SQUID_MX}:25")
            http_get(sq.host, sq.port, f"http://{WEB}:{web.port}/page-a", source=BROWSER)
        assert len(mx.hits) == 2  # only the open Squid tunnels to port 25
        for name, d in (("open", open_sq), ("stock", stock_sq)):
            _wait_log(lambda d=d: d.log("access"), "\n", 4)
            dest = keep / f"squid-{name}-access.log"
            shutil.copy(d.logs["access"], dest)
            out[name] = dest
    return out


def test_squid_logs_tunnels_to_smtp_and_ignores_ordinary_proxying(
        squid_logs: dict[str, Any]) -> None:
    opened = analyse([str(squid_logs["open"])])
    # + the launcher's readiness probe: `NONE_NONE/000 0 - error:transaction-end-before-headers`
    assert opened.stats["by_format"] == {"squid": 4}
    inc = _incidents(opened)
    assert set(inc) == {"proxy-smtp"}  # browsing through a proxy is its job
    assert inc["proxy-smtp"]["outcomes"] == {"relayed": 2}
    assert sorted(c for c, _ in inc["proxy-smtp"]["clients"]) == sorted(SPAMMERS)
    assert [f.rule for f in opened.findings] == ["LOGS-PROXY-SMTP"]
    stock = analyse([str(squid_logs["stock"])])
    assert stock.stats["by_format"] == {"squid": 4}
    inc = _incidents(stock)
    assert set(inc) == {"proxy-smtp"}
    assert inc["proxy-smtp"]["outcomes"] == {"refused": 2}
    assert inc["proxy-smtp"]["statuses"] == {"403": 2}
    assert [(f.rule, f.severity.label) for f in stock.findings] == [("LOGS-PROXY-SCAN", "low")]
