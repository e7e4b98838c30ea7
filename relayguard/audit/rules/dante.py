"""Dante rules, following danted.conf(5) of Dante 1.4.

A client first needs a `client pass` rule (first match wins, no match = blocked), then a
`socks pass` rule for its request (same). The SOCKS method is negotiated from the global
`socksmethod` list (default: none at all, which blocks everything); a rule with its own
`socksmethod`, `user` or `group` only matches clients that used one of those methods. A
stranger has no credentials but can answer ident (rfc931) queries about itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relayguard.audit.addresses import (
    LOOPBACK,
    PROBE_PORTS,
    SMTP_PORTS,
    THIRD_PARTY,
    IPNetwork,
    listener_reachable,
    outside_client,
    parse_net,
    proxy_path,
    representatives,
    who_uses,
)
from relayguard.audit.base import AuditOptions, IPAddress
from relayguard.audit.dante import DanteConfig, DanteRule, Setting
from relayguard.audit.directive import Directive
from relayguard.catalogue import Rule
from relayguard.findings import Category, Confidence, Edit, Evidence, Finding, Severity

REF = "https://www.inet.no/dante/doc/1.4.x/config/server.html"
_HEAD = ("logoutput: stderr\ninternal: 0.0.0.0 port = 1080\nexternal: 127.0.0.1\n"
         "clientmethod: none\nsocksmethod: none\nuser.privileged: root\n"
         "user.unprivileged: nobody\n")
_BLOCK_SMTP = "".join(f"socks block {{\n    from: 0.0.0.0/0 to: 0.0.0.0/0 port = {p}\n}}\n"
                      for p in SMTP_PORTS)

OPEN_SOCKS = Rule(
    id="DANTE-OPEN-SOCKS", server="dante", category=Category.OPEN_SOCKS_PROXY,
    severity=Severity.CRITICAL,
    title="Dante relays SOCKS connections for clients on the Internet without credentials",
    description="The first `client pass` rule matching an outside client admits it, and the "
                "first matching `socks pass` lets it connect to third-party hosts with "
                "method `none` (no username/password).",
    why="An open SOCKS proxy carries any TCP protocol — including SMTP to port 25 — from "
        "your address; scanners find it within hours.",
    fix="Limit `client pass`/`socks pass` to your networks (`from: 10.0.0.0/8`) or require "
        "`socksmethod: username`.",
    reference=REF,
    bad=_HEAD + "client pass {\n    from: 0.0.0.0/0 to: 0.0.0.0/0\n}\n"
                "socks pass {\n    from: 0.0.0.0/0 to: 0.0.0.0/0\n    command: connect\n}\n",
    good=_HEAD + "client pass {\n    from: 10.0.0.0/8 to: 0.0.0.0/0\n}\n"
                 "socks pass {\n    from: 10.0.0.0/8 to: 0.0.0.0/0\n    command: connect\n}\n",
)
SOCKS_SMTP = Rule(
    id="DANTE-SOCKS-SMTP", server="dante", category=Category.SMTP_VIA_PROXY,
    severity=Severity.CRITICAL,
    title="Dante lets clients reach SMTP ports (25/465/587) on other hosts",
    description="No `socks block` for ports 25, 465 and 587 precedes the `socks pass` that "
                "matches the client.",
    why="SOCKS to port 25 is the classic spam relay: mail leaves from your address and "
        "gets it blocklisted.",
    fix="Put `socks block { from: 0.0.0.0/0 to: 0.0.0.0/0 port = 25 }` (and 465, 587) "
        "before the socks pass rules.",
    reference=REF,
    bad=_HEAD + "client pass {\n    from: 10.0.0.0/8 to: 0.0.0.0/0\n}\n"
                "socks pass {\n    from: 10.0.0.0/8 to: 0.0.0.0/0\n    command: connect\n}\n",
    good=_HEAD + "client pass {\n    from: 10.0.0.0/8 to: 0.0.0.0/0\n}\n" + _BLOCK_SMTP
    + "socks pass {\n    from: 10.0.0.0/8 to: 0.0.0.0/0\n    command: connect\n}\n",
)
RFC931 = Rule(
    id="DANTE-RFC931", server="dante", category=Category.OPEN_SOCKS_PROXY,
    severity=Severity.HIGH,
    title="Dante authenticates clients by ident (rfc931), which the client answers itself",
    description="`socksmethod` or `clientmethod` includes `rfc931`: the user name comes "
                "from an ident query to the client's own host.",
    why="Anyone runs an identd that says whatever user name your rules want.",
    fix="Use `username`, `pam.username` or `gssapi`; drop `rfc931`.",
    reference=REF,
    bad=_HEAD.replace("socksmethod: none", "socksmethod: rfc931")
    + "client pass {\n    from: 10.0.0.0/8 to: 0.0.0.0/0\n}\n"
      "socks pass {\n    from: 10.0.0.0/8 to: 0.0.0.0/0\n    command: connect\n}\n",
    good=_HEAD.replace("socksmethod: none", "socksmethod: username")
    + "client pass {\n    from: 10.0.0.0/8 to: 0.0.0.0/0\n}\n"
      "socks pass {\n    from: 10.0.0.0/8 to: 0.0.0.0/0\n    command: connect\n}\n",
)
BIND_UDP = Rule(
    id="DANTE-BIND-UDP", server="dante", category=Category.OPEN_SOCKS_PROXY,
    severity=Severity.MEDIUM,
    title="Dante grants outside clients BIND or UDP ASSOCIATE",
    description="The `socks pass` rule an outside client matches has no `command:` limit "
                "(default: every command) or lists `bind`/`udpassociate`.",
    why="Strangers can then accept inbound connections or relay UDP (DNS amplification, "
        "game-server abuse) from your address.",
    fix="Add `command: connect` to the rule.",
    reference=REF,
    bad=_HEAD + "client pass {\n    from: 0.0.0.0/0 to: 0.0.0.0/0\n}\n"
                "socks pass {\n    from: 0.0.0.0/0 to: 0.0.0.0/0\n}\n",
    good=_HEAD + "client pass {\n    from: 0.0.0.0/0 to: 0.0.0.0/0\n}\n"
                 "socks pass {\n    from: 0.0.0.0/0 to: 0.0.0.0/0\n    command: connect\n}\n",
)

RULES: tuple[Rule, ...] = (OPEN_SOCKS, SOCKS_SMTP, RFC931, BIND_UDP)
_NO_CREDENTIALS = {"none", "rfc931"}  # methods a stranger passes
_PAM_BY_ADDRESS = {"pam.address", "pam.any"}  # decided by the PAM stack on the address alone


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An address field (`from:`/`to:`) with its optional port condition."""

    net: IPNetwork | None  # None: a name, domain or interface (unknown statically)
    op: str | None
    port: int | None
    port_hi: int | None

    def matches_addr(self, addr: IPAddress) -> bool | None:
        if self.net is None:
            return None
        if self.net.prefixlen == 0:
            return True  # 0/0 and 0.0.0.0/0 match both families in Dante
        return addr.version == self.net.version and addr in self.net

    def matches_port(self, port: int) -> bool:
        if self.op is None or self.port is None:
            return True
        p = self.port
        return {"=": port == p, "eq": port == p, "!=": port != p, "neq": port != p,
                ">=": port >= p, "ge": port >= p, "<=": port <= p, "le": port <= p,
                ">": port > p, "gt": port > p, "<": port < p, "lt": port < p,
                "-": p <= port <= (self.port_hi or p)}.get(self.op, True)


def endpoint(values: tuple[str, ...]) -> Endpoint:
    """`0.0.0.0/0`, `10.0.0.0/8 port = 25`, `0/0 port 1 - 1023`, `.example.com`…"""
    if not values:
        return Endpoint(parse_net("0.0.0.0/0"), None, None, None)
    addr = values[0]
    net = parse_net("0.0.0.0/0") if addr in ("0/0", "0.0.0.0/0", "::/0") else parse_net(addr)
    rest = list(values[1:])
    if rest and rest[0].lower() == "port":
        rest = rest[1:]
        try:
            if len(rest) >= 3 and rest[1] == "-":
                return Endpoint(net, "-", int(rest[0]), int(rest[2]))
            if len(rest) >= 2:
                return Endpoint(net, rest[0].lower(), int(rest[1]), None)
            if len(rest) == 1 and "-" in rest[0]:
                lo, _, hi = rest[0].partition("-")
                return Endpoint(net, "-", int(lo), int(hi))
            if len(rest) == 1:
                return Endpoint(net, "=", int(rest[0]), None)
        except ValueError:
            return Endpoint(net, None, None, None)
    return Endpoint(net, None, None, None)


def _rule_fields(rule: DanteRule) -> tuple[Endpoint, Endpoint]:
    """`from:` and `to:` may share a line: `from: A port = 1 to: B`."""
    src = rule.get("from")
    dst = rule.get("to")
    return (endpoint(src.values) if src else endpoint(())), \
        (endpoint(dst.values) if dst else endpoint(()))


def _methods(cfg: DanteConfig, key: str) -> list[str]:
    s = cfg.setting(key)
    return [v.lower() for v in s.values] if s else []


def _stranger_method(cfg: DanteConfig) -> str | None:
    """The method a credential-less client negotiates (None: negotiation fails)."""
    for m in _methods(cfg, "socksmethod"):
        if m in _NO_CREDENTIALS:
            return m
    return None


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    client_rule: DanteRule | None
    socks_rule: DanteRule | None
    certain: bool


def decide(cfg: DanteConfig, client: IPAddress, dst: IPAddress, port: int,
           command: str = "connect") -> Verdict:
    """Would Dante relay `client`'s `command` to dst:port without credentials?"""
    certain = True
    crule = None
    global_cm = set(_methods(cfg, "clientmethod"))
    if global_cm and not global_cm & _NO_CREDENTIALS:
        if not global_cm & _PAM_BY_ADDRESS:
            return Verdict(False, None, None, certain)
        certain = False  # pam.address/pam.any: what PAM says about an address is not here
    for r in (r for r in cfg.rules if r.kind == "client"):
        src, _ = _rule_fields(r)
        m = src.matches_addr(client)
        cm = r.get("clientmethod")
        if cm is not None and not ({v.lower() for v in cm.values} & _NO_CREDENTIALS):
            m = False
        if m is None:
            certain = False
            if r.action == "pass":
                crule = r
                break
            continue
        if m:
            crule = r
            break
    if crule is None or crule.action != "pass":
        return Verdict(False, crule, None, certain)
    method = _stranger_method(cfg)
    if method is None:
        return Verdict(False, crule, None, certain)
    for r in (r for r in cfg.rules if r.kind == "socks"):
        src, to = _rule_fields(r)
        sm = r.get("socksmethod")
        if sm is not None and method not in {v.lower() for v in sm.values}:
            continue
        if r.get("user") is not None or r.get("group") is not None:
            continue
        cmd = r.get("command")
        if cmd is not None and command not in {v.lower() for v in cmd.values}:
            continue
        ms, md = src.matches_addr(client), to.matches_addr(dst)
        if ms is False or md is False:
            continue
        if not to.matches_port(port):
            continue
        if ms is None or md is None:
            certain = False
            if r.action == "pass":
                return Verdict(True, crule, r, False)
            continue
        return Verdict(r.action == "pass", crule, r, certain)
    return Verdict(False, crule, None, certain)


def _listeners(cfg: DanteConfig) -> list[tuple[str, str | None, Directive]]:
    """(listen label, host, the line) for every `internal:` line."""
    out = []
    for s in cfg.all("internal"):
        ep = endpoint(s.values)
        host = s.values[0] if s.values else None
        port = ep.port if ep.port is not None else 1080
        label = f"[{host}]:{port}" if host and ":" in host else f"{host}:{port}"
        out.append((label, None if host in ("0.0.0.0", "0/0", "::") else host, s.directive))
    return out


def check(cfg: DanteConfig, options: AuditOptions) -> tuple[list[Finding], dict[str, Any]]:
    """Every Dante finding for this config, and its `proxy_paths` facts."""
    findings: list[Finding] = []
    nets = [ep.net for r in cfg.rules if r.kind in ("client", "socks")
            for ep in _rule_fields(r)[:1] if ep.net is not None]
    stranger = outside_client(options, nets)
    listeners = _listeners(cfg)
    reachable = any(listener_reachable(h, stranger) for _, h, _ in listeners)
    trusted = [c for c in representatives(nets) if c != stranger]

    def reach(client: IPAddress, dst: IPAddress) -> dict[int, Verdict]:
        return {p: decide(cfg, client, dst, p) for p in PROBE_PORTS}

    outside = reach(stranger, THIRD_PARTY) if reachable else {}
    is_open = any(v.allowed for v in outside.values())
    users = [stranger] if is_open else [
        c for c in trusted if any(v.allowed for v in reach(c, THIRD_PARTY).values())]
    who = who_uses(is_open, users)

    if is_open:
        v = next(v for p, v in sorted(outside.items(), key=lambda kv: kv[0] != 443)
                 if v.allowed)
        findings.append(OPEN_SOCKS.finding(
            f"Dante relays SOCKS CONNECT for an outside client ({stranger}) without "
            "credentials", location=v.socks_rule.header.location if v.socks_rule else None,
            evidence=_evidence(cfg, v), confidence=_conf(v), edits=_close_edits(v)))
        cmd = v.socks_rule.get("command") if v.socks_rule else None
        extra = [c for c in ("bind", "udpassociate") if decide(
            cfg, stranger, THIRD_PARTY, 443, c).allowed]
        if extra and v.socks_rule is not None:
            findings.append(BIND_UDP.finding(
                f"an outside client ({stranger}) may use {' and '.join(extra)}",
                location=(cmd.directive if cmd else v.socks_rule.header).location,
                evidence=[v.socks_rule.header.evidence(),
                          *([cmd.directive.evidence()] if cmd else
                            [Evidence("note", "no command: line - every command allowed")])],
                confidence=_conf(v),
                edits=[cmd.directive.replace(_indent(cmd.directive) + "command: connect")]
                if cmd else [v.socks_rule.header.insert_after("    command: connect")]))

    severity = {"outside": Severity.CRITICAL, "trusted": Severity.MEDIUM}.get(who)
    if severity is not None:
        for u in users:
            smtp = {p: v for p, v in reach(u, THIRD_PARTY).items()
                    if p in SMTP_PORTS and v.allowed}
            if smtp:
                v = next(iter(smtp.values()))
                findings.append(SOCKS_SMTP.finding(
                    f"Dante relays {who} clients ({u}) to SMTP ports "
                    f"{', '.join(map(str, sorted(smtp)))}",
                    location=v.socks_rule.header.location if v.socks_rule else None,
                    evidence=_evidence(cfg, v), severity=severity, confidence=_conf(v),
                    edits=[v.socks_rule.header.insert_before(*_BLOCK_SMTP.rstrip().split("\n"))]
                    if v.socks_rule else []))
                break

    for key in ("socksmethod", "clientmethod"):
        for s in [*cfg.all(key), *(x for r in cfg.rules for x in r.settings if x.key == key)]:
            if "rfc931" in (v.lower() for v in s.values):
                kept = [v for v in s.values if v.lower() != "rfc931"] or ["username"]
                findings.append(RFC931.finding(
                    f"{key} accepts rfc931 (ident), which the client answers itself",
                    location=s.directive.location, evidence=[s.directive.evidence()],
                    confidence=Confidence.CONFIRMED,
                    edits=[s.directive.replace(_indent(s.directive) + f"{key}: "
                                               + " ".join(kept))]))

    paths = []
    for label, host, line in listeners:
        path_open = is_open and listener_reachable(host, stranger)
        path_users = [stranger] if path_open else [
            u for u in users if listener_reachable(host, u)]
        ports = {p for u in path_users for p, v in reach(u, THIRD_PARTY).items() if v.allowed}
        loop = {p for u in path_users for p, v in reach(u, LOOPBACK).items() if v.allowed}
        paths.append(proxy_path("dante", cfg.path, label, open_to_outside=path_open,
                                reaches_ports=ports, loopback_ports=loop,
                                loopback_tunnel_ports=loop,  # SOCKS: every port is a tunnel
                                clients=who_uses(path_open, path_users), evidence=[line]))
    verdicts = {f"SOCKS {p}": bool(outside.get(p) and outside[p].allowed) for p in PROBE_PORTS}
    return findings, {"proxy_paths": paths, "outside_client": str(stranger),
                      "outside_verdicts": verdicts}


def _conf(v: Verdict) -> Confidence:
    return Confidence.LIKELY if v.certain else Confidence.POSSIBLE


def _indent(d: Any) -> str:
    first = d.text.split("\n")[0]
    return first[: len(first) - len(first.lstrip())]


def _evidence(cfg: DanteConfig, v: Verdict) -> list[Evidence]:
    ev: list[Evidence] = []
    for r in (v.client_rule, v.socks_rule):
        if r is None:
            continue
        ev.append(r.header.evidence("first matching rule"))
        ev += [s.directive.evidence() for s in r.settings if s.key in ("from", "to")]
    sm = cfg.setting("socksmethod")
    if sm is not None:
        ev.append(sm.directive.evidence("methods a client without credentials can use"))
    return ev


def _close_edits(v: Verdict) -> list[Edit]:
    """Limit the admitting client rule to loopback (the least change that closes it)."""
    r = v.client_rule
    if r is None:
        return []
    src: Setting | None = r.get("from")
    if src is None or not src.values:
        return [r.header.insert_after("    from: 127.0.0.1/32 to: 0.0.0.0/0")]
    line = src.directive.text
    new = line.replace(src.values[0], "127.0.0.1/32", 1)
    return [src.directive.replace(new)]
