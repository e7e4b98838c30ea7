"""Squid rules: evaluate `http_access` the way Squid does and report what a stranger gets.

Squid checks `http_access` lines in order; the first line whose ACLs all match decides;
when none matches, the opposite of the last line applies; with no line at all, deny.
ACLs on one line are ANDed, lines of one ACL name ORed. We ask that list, for an outside
client, about `GET http://third-party/`, `CONNECT third-party:443` and both methods to the
SMTP ports, and about 127.0.0.1 (the local MTA) — the verdicts become findings and the
`proxy_paths` fact.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from relayguard.audit.addresses import (
    LOOPBACK,
    PROBE_PORTS,
    SMTP_PORTS,
    THIRD_PARTY,
    IPNetwork,
    is_local_net,
    listener_reachable,
    outside_client,
    parse_net,
    proxy_path,
    representatives,
    who_uses,
)
from relayguard.audit.base import AuditOptions, IPAddress
from relayguard.audit.squid import BUILTIN_ACLS, AccessRule, Acl, HttpPort, SquidConfig
from relayguard.catalogue import Rule
from relayguard.digits import is_digits
from relayguard.findings import Category, Confidence, Edit, Evidence, Finding, Severity

REF = "https://www.squid-cache.org/Doc/config/"
_HEAD = "http_port 3128\nacl SSL_ports port 443\nacl Safe_ports port 80 443 1025-65535\n"
_SAFE = "http_access deny !Safe_ports\nhttp_access deny CONNECT !SSL_ports\n"

OPEN_HTTP = Rule(
    id="SQUID-OPEN-HTTP-ACCESS", server="squid", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.HIGH,
    title="Squid forwards requests for clients on the Internet",
    description="The first `http_access` line that matches a request from an outside client "
                "(no credentials, address outside every trusted network) is an `allow`, so "
                "Squid fetches any URL for anyone who can reach its port.",
    why="An open HTTP proxy is found by scanners within hours and used to hide the origin "
        "of abuse: fraud, scraping, spam sign-ups — all logged as coming from your address.",
    fix="Allow only your own networks and end the list with a deny:\n"
        "acl localnet src 192.168.0.0/16\nhttp_access allow localnet\nhttp_access deny all",
    reference=REF + "http_access/",
    bad=_HEAD + _SAFE + "http_access allow all\n",
    good=_HEAD + _SAFE + "acl localnet src 192.168.0.0/16\nhttp_access allow localnet\n"
                         "http_access deny all\n",
)
OPEN_CONNECT = Rule(
    id="SQUID-OPEN-CONNECT", server="squid", category=Category.OPEN_CONNECT_PROXY,
    severity=Severity.HIGH,
    title="Squid opens CONNECT tunnels for clients on the Internet",
    description="An outside client gets `CONNECT host:443` allowed by `http_access`: an "
                "opaque TLS tunnel to any host.",
    why="Tunnels carry anything (logins, credential stuffing, C2 traffic) and Squid cannot "
        "see inside them; your address takes the blame.",
    fix="Restrict `http_access allow` to your networks and end with `http_access deny all`.",
    reference=REF + "http_access/",
    bad=_HEAD + "http_access deny !Safe_ports\nhttp_access allow CONNECT SSL_ports\n"
                "http_access deny all\n",
    good=_HEAD + _SAFE + "http_access allow localhost\nhttp_access deny all\n",
)
IMPLICIT_ALLOW = Rule(
    id="SQUID-IMPLICIT-ALLOW", server="squid", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.HIGH,
    title="Squid's implicit last rule allows what no http_access line matched",
    description="The last `http_access` line is a `deny` of something narrower than `all`; "
                "Squid then applies the opposite (`allow`) to every request no line matched.",
    why="An admin who writes only denies believes everything else is refused; Squid "
        "allows it, which turns the proxy into an open one.",
    fix="End the list with `http_access deny all`.",
    reference=REF + "http_access/",
    bad=_HEAD + _SAFE + "acl blocked src 192.0.2.0/24\nhttp_access deny blocked\n",
    good=_HEAD + _SAFE + "acl blocked src 192.0.2.0/24\nhttp_access deny blocked\n"
                         "http_access deny all\n",
)
SAFE_PORTS_SMTP = Rule(
    id="SQUID-SAFE-PORTS-SMTP", server="squid", category=Category.SMTP_VIA_PROXY,
    severity=Severity.CRITICAL,
    title="Squid lets clients reach SMTP ports (25/465/587) on other hosts",
    description="`Safe_ports`/`SSL_ports` include an SMTP port, or the `deny !Safe_ports` / "
                "`deny CONNECT !SSL_ports` lines are missing or come after the `allow`, so "
                "`CONNECT mx.example:25` (or `GET http://mx.example:25/`) is relayed.",
    why="This is how open proxies send spam: the mail leaves from your address, which "
        "then lands on DNS blocklists and your own mail stops being delivered.",
    fix="Keep SMTP ports out of Safe_ports/SSL_ports and deny them first:\n"
        "acl SMTP_ports port 25 465 587\nhttp_access deny SMTP_ports",
    reference=REF + "http_access/",
    bad="http_port 3128\nacl SSL_ports port 443 25\nacl Safe_ports port 80 443 25\n" + _SAFE
        + "http_access allow all\n",
    good=_HEAD + _SAFE + "http_access allow localhost\nhttp_access deny all\n",
)
IMPLICIT_RULES = (OPEN_HTTP, OPEN_CONNECT, IMPLICIT_ALLOW, SAFE_PORTS_SMTP)
LOCALNET_BROAD = Rule(
    id="SQUID-LOCALNET-BROAD", server="squid", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.HIGH,
    title="An ACL that Squid allows covers (much of) the Internet",
    description="A `src` ACL used in an `http_access allow` line contains `0.0.0.0/0`, `::/0`, "
                "`all`, a very wide prefix, or host names (reverse DNS, which the client "
                "controls).",
    why="`localnet` is meant to be the LAN; when it covers the Internet the proxy is open "
        "even though the rule list looks right.",
    fix="List only your real LAN ranges in the ACL, e.g. `acl localnet src 192.168.0.0/16`.",
    reference=REF + "acl/",
    bad=_HEAD + _SAFE + "acl localnet src 0.0.0.0/0\nhttp_access allow localnet\n"
                        "http_access deny all\n",
    good=_HEAD + _SAFE + "acl localnet src 10.0.0.0/8\nhttp_access allow localnet\n"
                         "http_access deny all\n",
)
XFF_TRUST_ALL = Rule(
    id="SQUID-XFF-TRUST-ALL", server="squid", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.HIGH,
    title="Squid takes the client address from anyone's X-Forwarded-For",
    description="`follow_x_forwarded_for allow` matches outside clients, and "
                "`acl_uses_indirect_client` is on (default): `src` ACLs then see whatever "
                "address the client writes into X-Forwarded-For. Same for "
                "`proxy_protocol_access allow` on a `require-proxy-header` port: the PROXY "
                "header sets the client address.",
    why="A stranger sends `X-Forwarded-For: 192.168.1.10` and passes `allow localnet`: the "
        "IP-based access list no longer protects anything.",
    fix="Trust X-Forwarded-For only from your load balancer: "
        "`follow_x_forwarded_for allow <lb-acl>` and `follow_x_forwarded_for deny all`.",
    reference=REF + "follow_x_forwarded_for/",
    bad=_HEAD + _SAFE + "follow_x_forwarded_for allow all\nhttp_access allow localhost\n"
                        "http_access deny all\n",
    good=_HEAD + _SAFE + "follow_x_forwarded_for deny all\nhttp_access allow localhost\n"
                         "http_access deny all\n",
)
INTERCEPT_EXPOSED = Rule(
    id="SQUID-INTERCEPT-EXPOSED", server="squid", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.HIGH,
    title="An intercepting Squid port is reachable from outside",
    description="`http_port … intercept` (or `transparent`/`tproxy`) listens on every "
                "address or a public one; such a port forwards by the Host header.",
    why="Intercept ports are meant to receive only NAT-redirected LAN traffic; reached "
        "directly they relay to whatever host the client names.",
    fix="Bind the intercept port to the LAN or loopback address the NAT rule targets, "
        "e.g. `http_port 127.0.0.1:3129 intercept`.",
    reference=REF + "http_port/",
    bad=_HEAD + "http_port 3129 intercept\n" + _SAFE + "http_access allow localhost\n"
                                                       "http_access deny all\n",
    good=_HEAD + "http_port 127.0.0.1:3129 intercept\n" + _SAFE + "http_access allow localhost\n"
                                                                  "http_access deny all\n",
)
TO_LOCALHOST = Rule(
    id="SQUID-TO-LOCALHOST", server="squid", category=Category.HARDENING,
    severity=Severity.MEDIUM,
    title="Clients of Squid reach services on the proxy host's loopback",
    description="No `http_access deny to_localhost` precedes the allow that non-loopback "
                "clients match, so they reach 127.0.0.1 through the proxy.",
    why="Services on 127.0.0.1 (admin panels, the local MTA that trusts loopback) assume "
        "only local users can reach them; the proxy breaks that assumption.",
    fix="Add `http_access deny to_localhost` before your allow lines.",
    reference=REF + "http_access/",
    bad=_HEAD + _SAFE + "acl localnet src 10.0.0.0/8\nhttp_access allow localnet\n"
                        "http_access deny all\n",
    good=_HEAD + _SAFE + "http_access deny to_localhost\nacl localnet src 10.0.0.0/8\n"
                         "http_access allow localnet\nhttp_access deny all\n",
)
PORT_EXPOSURE = Rule(
    id="SQUID-PORT-EXPOSURE", server="squid", category=Category.HARDENING,
    severity=Severity.INFO,
    title="Squid listens on every address",
    description="`http_port` names no address, so Squid accepts connections on every "
                "interface; only `http_access` keeps strangers out.",
    why="One mistake in the access list is then immediately reachable from the Internet.",
    fix="Bind to the address your clients use, e.g. `http_port 192.168.1.1:3128`.",
    reference=REF + "http_port/",
    bad=_HEAD + _SAFE + "http_access allow localhost\nhttp_access deny all\n",
    good="http_port 127.0.0.1:3128\nacl SSL_ports port 443\nacl Safe_ports port 80 443\n"
         + _SAFE + "http_access allow localhost\nhttp_access deny all\n",
)

RULES: tuple[Rule, ...] = (OPEN_HTTP, OPEN_CONNECT, IMPLICIT_ALLOW, SAFE_PORTS_SMTP,
                           LOCALNET_BROAD, XFF_TRUST_ALL, INTERCEPT_EXPOSED, TO_LOCALHOST,
                           PORT_EXPOSURE)


# ---------------------------------------------------------------------------------------------
# The access model


@dataclass(frozen=True, slots=True)
class Request:
    """What one client asks the proxy for."""

    client: IPAddress
    method: str
    host: str
    ip: IPAddress
    port: int
    listener: HttpPort | None = None  # the http_port it arrived on (None: any)

    @property
    def url(self) -> str:
        if self.method == "CONNECT":
            return f"{self.host}:{self.port}"
        return f"http://{self.host}:{self.port}/"

    def describe(self) -> str:
        return f"{self.method} {self.url} from {self.client}"


@dataclass(frozen=True, slots=True)
class Decision:
    """Squid's answer: allowed or not, which line decided (None = implicit/default rule)."""

    allowed: bool
    rule: AccessRule | None
    certain: bool


def acl_networks(acl: Acl) -> tuple[list[IPNetwork], list[str]]:
    """The networks of a src/dst ACL, plus values that are names (resolved at run time)."""
    nets: list[IPNetwork] = []
    names: list[str] = []
    for v in acl.values:
        if v == "all":
            nets += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            continue
        if "-" in v:
            lo, _, hi = v.partition("-")
            hi = hi.split("/", 1)[0]
            a, b = parse_net(lo), parse_net(hi)
            if a is not None and b is not None and a.version == b.version \
                    and a.network_address <= b.network_address:
                nets += list(ipaddress.summarize_address_range(  # type: ignore[arg-type]
                    a.network_address, b.network_address))
                continue
        net = parse_net(v)
        if net is not None:
            nets.append(net)
        else:
            names.append(v)
    return nets, names


def _ports(acl: Acl) -> list[tuple[int, int]]:
    out = []
    for v in acl.values:
        lo, _, hi = v.partition("-")
        if is_digits(lo) and (not hi or is_digits(hi)):
            out.append((int(lo), int(hi or lo)))
    return out


def acl_match(cfg: SquidConfig, name: str, req: Request) -> bool | None:
    """True/False, or None when it depends on something we cannot know statically."""
    unknown = False
    for acl in cfg.acl(name):
        r = _one_acl(acl, req)
        if r is True:
            return True
        if r is None:
            unknown = True
    return None if unknown else False


def _one_acl(acl: Acl, req: Request) -> bool | None:
    t = acl.type
    if t in ("src", "dst"):
        nets, names = acl_networks(acl)
        addr = req.client if t == "src" else req.ip
        if any(addr.version == n.version and addr in n for n in nets):
            return True
        return None if names else False
    if t == "port":
        return any(lo <= req.port <= hi for lo, hi in _ports(acl))
    if t in ("localport", "myport", "myportname", "myip", "myportname_regex"):
        lp = req.listener
        if lp is None:
            return None
        if t == "myportname":
            return lp.name in acl.values
        if t == "myip":
            if lp.host is None or parse_net(lp.host) is None:
                return None
            ip = parse_net(lp.host).network_address  # type: ignore[union-attr]
            return any(ip.version == n.version and ip in n for n in acl_networks(acl)[0])
        if t in ("localport", "myport"):
            return any(lo <= lp.port <= hi for lo, hi in _ports(acl))
        return None
    if t == "method":
        return req.method in acl.values
    if t == "proto":
        if req.method == "CONNECT":
            return None
        return "HTTP" in (v.upper() for v in acl.values)
    if t == "dstdomain":
        host = req.host.lower()
        for v in acl.values:
            v = v.lower()
            if host == v.lstrip(".") or (v.startswith(".") and host.endswith(v)):
                return True
        return False
    if t in ("url_regex", "dstdom_regex"):
        subject = req.url if t == "url_regex" else req.host
        flags = re.IGNORECASE if "-i" in acl.flags else 0
        try:
            return any(re.search(v, subject, flags) for v in acl.values)
        except re.error:
            return None
    if t in ("proxy_auth", "proxy_auth_regex", "ext_user", "ext_user_regex", "ident",
             "ident_regex", "user_cert", "ca_cert"):
        return False  # a stranger has no credentials: these never match for them
    return None  # time, browser, srcdomain, external, myportname…: unknown statically


def decide(cfg: SquidConfig, req: Request, rules: list[AccessRule] | None = None) -> Decision:
    """Walk the rule list as Squid does; unknown ACLs count against safety (worst case)."""
    rules = cfg.http_access if rules is None else rules
    certain = True
    for rule in rules:
        match: bool | None = True
        for neg, name in rule.acls:
            r = acl_match(cfg, name, req)
            if r is not None and neg:
                r = not r
            if r is False:
                match = False
                break
            if r is None:
                match = None
        if match is True:
            return Decision(rule.action == "allow", rule, certain)
        if match is None:
            if rule.action == "allow":
                return Decision(True, rule, False)
            certain = False
    if not rules:
        return Decision(False, None, certain)
    return Decision(rules[-1].action == "deny", None, certain)


def verdicts(cfg: SquidConfig, client: IPAddress, ip: IPAddress,
             listeners: list[HttpPort]) -> dict[tuple[str, int], Decision]:
    """Squid's answer to GET and CONNECT for every probe port, arriving on any of the given
    listeners (the first listener that allows it wins; none given = unknown listener)."""
    out: dict[tuple[str, int], Decision] = {}
    for port in PROBE_PORTS:
        for method in ("GET", "CONNECT"):
            found = [decide(cfg, Request(client, method, str(ip), ip, port, lp))
                     for lp in (listeners or [None])]
            out[(method, port)] = next((d for d in found if d.allowed), found[0])
    return out


# ---------------------------------------------------------------------------------------------
# Checks


def check(cfg: SquidConfig, options: AuditOptions) -> tuple[list[Finding], dict[str, Any]]:
    """Every Squid finding for this config, and the `proxy_paths` facts."""
    findings: list[Finding] = []
    mentioned = [n for acls in cfg.acls.values() for a in acls if a.type == "src"
                 for n in acl_networks(a)[0]]
    stranger = outside_client(options, mentioned)
    forward = [p for p in cfg.http_ports if p.mode != "accel"]
    reachable = [p for p in forward if listener_reachable(p.host, stranger)]
    trusted = [c for c in representatives(mentioned) if c != stranger]

    outside = verdicts(cfg, stranger, THIRD_PARTY, reachable) if reachable else {}
    if outside:
        findings += _open_findings(cfg, stranger, outside)
    users = [c for c in trusted
             if any(d.allowed for d in verdicts(cfg, c, THIRD_PARTY, forward).values())]
    if not any(f.rule == SAFE_PORTS_SMTP.id for f in findings):
        findings += _trusted_smtp(cfg, users, forward)
    findings += _localnet_broad(cfg)
    findings += _xff(cfg, stranger)
    findings += _intercept(cfg, stranger)
    findings += _to_localhost(cfg, stranger if outside else None, users)
    findings += [PORT_EXPOSURE.finding(
        f"Squid listens on every address (port {p.port})", location=p.directive.location,
        evidence=[p.directive.evidence()], confidence=Confidence.CONFIRMED)
        for p in forward if p.host is None]

    paths = []
    for p in forward:
        is_open = p in reachable and any(
            d.allowed for d in verdicts(cfg, stranger, THIRD_PARTY, [p]).values())
        clients = [stranger] if is_open else users
        reach: set[int] = set()
        tunnel: set[int] = set()
        loop: set[int] = set()
        loop_tunnel: set[int] = set()
        deciding = [p.directive]
        for c in clients:
            v = verdicts(cfg, c, THIRD_PARTY, [p])
            reach |= {port for (_, port), d in v.items() if d.allowed}
            tunnel |= {port for (m, port), d in v.items() if d.allowed and m == "CONNECT"}
            lv = verdicts(cfg, c, LOOPBACK, [p])
            loop |= {port for (_, port), d in lv.items() if d.allowed}
            loop_tunnel |= {port for (m, port), d in lv.items() if d.allowed and m == "CONNECT"}
            deciding += [d.rule.directive for d in lv.values() if d.allowed and d.rule]
        paths.append(proxy_path("squid", cfg.path, p.listen, open_to_outside=is_open,
                                reaches_ports=reach, loopback_ports=loop, tunnel_ports=tunnel,
                                loopback_tunnel_ports=loop_tunnel, evidence=deciding,
                                clients=who_uses(is_open, clients)))
    verdict_map = {f"{m} {p}": bool(outside.get((m, p)) and outside[(m, p)].allowed)
                   for p in PROBE_PORTS for m in ("GET", "CONNECT")}
    return findings, {"proxy_paths": paths, "outside_client": str(stranger),
                      "outside_verdicts": verdict_map}


def _trusted_acl(cfg: SquidConfig, stranger: IPAddress) -> str:
    """The ACL a fix should allow instead: `localnet` if it is local and excludes the
    stranger, else `localhost`."""
    acls = cfg.acls.get("localnet", [])
    if acls and all(a.type == "src" for a in acls):
        nets, names = [], []
        for a in acls:
            n, m = acl_networks(a)
            nets += n
            names += m
        if nets and not names and all(is_local_net(n) for n in nets) and not any(
                stranger.version == n.version and stranger in n for n in nets):
            return "localnet"
    return "localhost"


def _restrict_edit(cfg: SquidConfig, d: Decision, stranger: IPAddress) -> list[Edit]:
    """Make the deciding line require a trusted client (or add the missing final deny)."""
    if d.rule is None:
        last = cfg.http_access[-1].directive if cfg.http_access else None
        if last is None:
            return []
        return [last.insert_after("http_access deny all")]
    trusted = _trusted_acl(cfg, stranger)
    rule = d.rule
    names = [("!" if neg else "") + n for neg, n in rule.acls]
    if names in ([], ["all"]):
        return [rule.directive.replace(f"http_access allow {trusted}")]
    return [rule.directive.replace(f"http_access allow {' '.join(names)} {trusted}")]


def _acl_evidence(cfg: SquidConfig, rule: AccessRule | None) -> list[Evidence]:
    if rule is None:
        return []
    out = []
    for _, name in rule.acls:
        defs = cfg.acl(name)
        if defs and defs[0].directive is None:
            values = " ".join(v for a in defs[:1] for v in a.values)
            out.append(Evidence("note", f"acl {name} is built in: {defs[0].type} {values}"))
        out += [a.directive.evidence() for a in defs if a.directive is not None]
    return out


def _decision_evidence(cfg: SquidConfig, req: Request, d: Decision) -> list[Evidence]:
    verdict = "allowed" if d.allowed else "denied"
    if d.rule is not None:
        ev = [d.rule.directive.evidence(f"first match for {req.describe()}: {verdict}")]
    else:
        last = cfg.http_access[-1].directive if cfg.http_access else None
        ev = [Evidence("note", f"no http_access line matches {req.describe()}; the implicit "
                       f"last rule (opposite of the last line) {verdict} it")]
        if last is not None:
            ev.append(last.evidence("last http_access line"))
    return ev + _acl_evidence(cfg, d.rule)


def _open_findings(cfg: SquidConfig, stranger: IPAddress,
                   outside: dict[tuple[str, int], Decision]) -> list[Finding]:
    out: list[Finding] = []
    get, tunnel = outside[("GET", 80)], outside[("CONNECT", 443)]
    smtp = [((m, p), d) for (m, p), d in outside.items() if p in SMTP_PORTS and d.allowed]
    # These stay at their catalogue severity (high): the SMTP reach they also open is its
    # own critical finding (SQUID-SAFE-PORTS-SMTP) below, not a reason to inflate them.
    implicit = [(k, d) for k, d in outside.items() if d.allowed and d.rule is None]

    def conf(d: Decision) -> Confidence:
        return Confidence.LIKELY if d.certain else Confidence.POSSIBLE

    def req(method: str, port: int) -> Request:
        return Request(stranger, method, str(THIRD_PARTY), THIRD_PARTY, port)

    if implicit:
        (m, p), d = implicit[0]
        cat = Category.SMTP_VIA_PROXY if smtp and smtp[0][1].rule is None else (
            Category.OPEN_CONNECT_PROXY if m == "CONNECT" and not get.allowed
            else Category.OPEN_HTTP_PROXY)
        last = cfg.http_access[-1].directive
        out.append(IMPLICIT_ALLOW.finding(
            f"Squid's implicit last rule allows {req(m, p).describe()}",
            location=last.location, evidence=_decision_evidence(cfg, req(m, p), d),
            confidence=conf(d), category=cat,
            edits=_restrict_edit(cfg, d, stranger)))
    if get.allowed and get.rule is not None:
        out.append(OPEN_HTTP.finding(
            f"Squid forwards GET http://… for an outside client ({stranger})",
            location=get.rule.directive.location,
            evidence=_decision_evidence(cfg, req("GET", 80), get), confidence=conf(get),
            edits=_restrict_edit(cfg, get, stranger)))
    if tunnel.allowed and tunnel.rule is not None:
        out.append(OPEN_CONNECT.finding(
            f"Squid opens CONNECT tunnels to port 443 for an outside client ({stranger})",
            location=tunnel.rule.directive.location,
            evidence=_decision_evidence(cfg, req("CONNECT", 443), tunnel),
            confidence=conf(tunnel), edits=_restrict_edit(cfg, tunnel, stranger)))
    if smtp:
        (m, p), d = smtp[0]
        out.append(_smtp_finding(cfg, req(m, p), d, Severity.CRITICAL,
                                 [f"{mm} :{pp}" for (mm, pp), _ in smtp]))
    return out


def _smtp_finding(cfg: SquidConfig, req: Request, d: Decision, severity: Severity,
                  what: list[str]) -> Finding:
    evidence = _decision_evidence(cfg, req, d)
    for name in ("Safe_ports", "SSL_ports"):
        for a in cfg.acls.get(name, []):
            if a.directive is not None and any(
                    lo <= p <= hi for lo, hi in _ports(a) for p in SMTP_PORTS):
                evidence.append(a.directive.evidence("includes an SMTP port"))
    names = set(cfg.acls) | set(BUILTIN_ACLS)
    acl = "SMTP_ports" if "SMTP_ports" not in names else "relayguard_SMTP_ports"
    first = cfg.http_access[0].directive if cfg.http_access else None
    edits = [first.insert_before(f"acl {acl} port {' '.join(map(str, SMTP_PORTS))}",
                                 f"http_access deny {acl}")] if first is not None else []
    who = "an outside client" if severity >= Severity.CRITICAL else "a trusted client"
    loc = d.rule.directive.location if d.rule is not None else (
        first.location if first is not None else None)
    return SAFE_PORTS_SMTP.finding(
        f"Squid relays {who} ({req.client}) to SMTP ports: {', '.join(what)}",
        location=loc, evidence=evidence, severity=severity,
        confidence=Confidence.LIKELY if d.certain else Confidence.POSSIBLE,
        fix=SAFE_PORTS_SMTP.fix, edits=edits)


def _trusted_smtp(cfg: SquidConfig, users: list[IPAddress],
                  forward: list[HttpPort]) -> list[Finding]:
    for c in users:
        if c.is_loopback:
            continue  # local users reach port 25 without any proxy
        v = verdicts(cfg, c, THIRD_PARTY, forward)
        smtp = [((m, p), d) for (m, p), d in v.items() if p in SMTP_PORTS and d.allowed]
        if smtp:
            (m, p), d = smtp[0]
            req = Request(c, m, str(THIRD_PARTY), THIRD_PARTY, p)
            return [_smtp_finding(cfg, req, d, Severity.MEDIUM,
                                  [f"{mm} :{pp}" for (mm, pp), _ in smtp])]
    return []


def _too_wide(net: IPNetwork) -> bool:
    """A prefix wider than /8 (IPv6 /16) outside private space: IPv6 ULA (fc00::/7) and
    link-local (fe80::/10), both in Squid's stock `localnet`, are short but still a LAN."""
    return net.prefixlen < (8 if net.version == 4 else 16) and not is_local_net(net)


def _localnet_broad(cfg: SquidConfig) -> list[Finding]:
    out: list[Finding] = []
    seen: set[str] = set()
    for rule in cfg.http_access:
        if rule.action != "allow":
            continue
        for neg, name in rule.acls:
            if neg or name in seen or name not in cfg.acls:
                continue
            seen.add(name)
            for a in cfg.acls[name]:
                if a.directive is None:
                    continue
                if a.type == "srcdomain":
                    out.append(LOCALNET_BROAD.finding(
                        f"acl {name} admits clients by reverse DNS (srcdomain), which the "
                        "client's owner controls", location=a.directive.location,
                        evidence=[a.directive.evidence(), rule.directive.evidence()],
                        severity=Severity.MEDIUM, confidence=Confidence.POSSIBLE,
                        edits=[a.directive.replace()]))
                    continue
                if a.type != "src":
                    continue
                nets, names = acl_networks(a)
                broad = [n for n in nets if _too_wide(n)]
                if broad or names:
                    keep = [v for v in a.values if (n := parse_net(v)) is not None
                            and not _too_wide(n) and v != "all"]
                    new = f"acl {name} src {' '.join(keep)}" if keep else \
                        f"acl {name} src 127.0.0.1/32"
                    what = ", ".join([str(n) for n in broad] + names)
                    out.append(LOCALNET_BROAD.finding(
                        f"acl {name}, allowed by http_access, covers {what}",
                        location=a.directive.location,
                        evidence=[a.directive.evidence(), rule.directive.evidence()],
                        severity=Severity.HIGH if broad else Severity.MEDIUM,
                        confidence=Confidence.CONFIRMED if broad else Confidence.POSSIBLE,
                        edits=[a.directive.replace(new)]))
    return out


def _xff(cfg: SquidConfig, stranger: IPAddress) -> list[Finding]:
    return _xff_follow(cfg, stranger) + _proxy_protocol(cfg, stranger)


def _proxy_protocol(cfg: SquidConfig, stranger: IPAddress) -> list[Finding]:
    ports = [p for p in cfg.http_ports if "require-proxy-header" in p.directive.args
             and listener_reachable(p.host, stranger)]
    if not ports or not cfg.proxy_protocol:
        return []
    d = decide(cfg, Request(stranger, "GET", str(THIRD_PARTY), THIRD_PARTY, 80, ports[0]),
               cfg.proxy_protocol)
    if not d.allowed:
        return []
    rule = d.rule or cfg.proxy_protocol[-1]
    return [XFF_TRUST_ALL.finding(
        f"proxy_protocol_access lets an outside client ({stranger}) set its own address with "
        f"a PROXY header on {ports[0].listen}", location=rule.directive.location,
        evidence=[rule.directive.evidence(), ports[0].directive.evidence()],
        confidence=Confidence.LIKELY if d.certain else Confidence.POSSIBLE,
        edits=[rule.directive.replace("proxy_protocol_access deny all")] if d.rule is not None
        else [rule.directive.insert_after("proxy_protocol_access deny all")])]


def _xff_follow(cfg: SquidConfig, stranger: IPAddress) -> list[Finding]:
    if not cfg.follow_xff:
        return []
    indirect = cfg.last("acl_uses_indirect_client")
    if indirect is not None and indirect.args[:1] == ("off",):
        return []
    req = Request(stranger, "GET", str(THIRD_PARTY), THIRD_PARTY, 80)
    d = decide(cfg, req, cfg.follow_xff)
    if not d.allowed:
        return []
    rule = d.rule or cfg.follow_xff[-1]
    return [XFF_TRUST_ALL.finding(
        f"follow_x_forwarded_for trusts X-Forwarded-For from an outside client ({stranger})",
        location=rule.directive.location,
        evidence=[rule.directive.evidence(), *_acl_evidence(cfg, d.rule)],
        confidence=Confidence.LIKELY if d.certain else Confidence.POSSIBLE,
        edits=[rule.directive.replace("follow_x_forwarded_for deny all")] if d.rule is not None
        else [rule.directive.insert_after("follow_x_forwarded_for deny all")])]


def _intercept(cfg: SquidConfig, stranger: IPAddress) -> list[Finding]:
    out = []
    for p in cfg.http_ports:
        net = parse_net(p.host) if p.host else None
        if p.mode in ("intercept", "tproxy") and listener_reachable(p.host, stranger) \
                and (net is None or not is_local_net(net)):
            rest = " ".join(p.directive.args[1:])
            out.append(INTERCEPT_EXPOSED.finding(
                f"intercepting port {p.listen} is reachable by {stranger}",
                location=p.directive.location, evidence=[p.directive.evidence()],
                confidence=Confidence.LIKELY,
                edits=[p.directive.replace(f"http_port 127.0.0.1:{p.port} {rest}".rstrip())]))
    return out


def _to_localhost(cfg: SquidConfig, stranger: IPAddress | None,
                  users: list[IPAddress]) -> list[Finding]:
    clients = ([stranger] if stranger is not None else []) + \
        [u for u in users if not u.is_loopback]
    for c in clients:
        for method in ("GET", "CONNECT"):
            for port in PROBE_PORTS:
                req = Request(c, method, str(LOOPBACK), LOOPBACK, port)
                d = decide(cfg, req)
                if d.allowed:
                    first = cfg.http_access[0].directive
                    return [TO_LOCALHOST.finding(
                        f"{req.describe()} is allowed: clients reach the proxy host's "
                        "loopback services", location=(d.rule or cfg.http_access[-1]).directive
                        .location, evidence=_decision_evidence(cfg, req, d),
                        confidence=Confidence.LIKELY if d.certain else Confidence.POSSIBLE,
                        edits=[first.insert_before("http_access deny to_localhost")])]
    return []
