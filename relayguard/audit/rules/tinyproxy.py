"""tinyproxy rules, following src/acl.c and src/connect-ports.c of tinyproxy 1.11.

Access: no `Allow`/`Deny` line at all lets everyone in; otherwise the first entry matching
the client decides and an unmatched client is refused. Name entries (`Allow .example.com`)
match the client's reverse DNS, which its owner controls. CONNECT: no `ConnectPort` line
allows every port; otherwise only the listed ones (`ConnectPort 0` disables CONNECT).
Absolute-URI GETs are forwarded to any port. `ReverseOnly yes` turns forward proxying off
(only `ReversePath` mappings to fixed backends are served; checked against the daemon).
"""

from __future__ import annotations

from typing import Any

from relayguard.audit.addresses import (
    PROBE_PORTS,
    SMTP_PORTS,
    listener_reachable,
    outside_client,
    parse_net,
    proxy_path,
    representatives,
    who_uses,
)
from relayguard.audit.base import AuditOptions, IPAddress
from relayguard.audit.tinyproxy import AclEntry, TinyproxyConfig
from relayguard.catalogue import Rule
from relayguard.findings import Category, Confidence, Edit, Evidence, Finding, Severity

REF = "https://tinyproxy.github.io/"
_HEAD = "Port 8888\nListen 127.0.0.1\nTimeout 600\n"

NO_ACL = Rule(
    id="TINYPROXY-NO-ACL", server="tinyproxy", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.CRITICAL,
    title="tinyproxy has no Allow/Deny list: everyone may use it",
    description="With no `Allow` or `Deny` line at all tinyproxy serves every client "
                "(src/acl.c: \"If there is no access list allow everything\").",
    why="Removing or commenting out the stock `Allow 127.0.0.1` turns tinyproxy into an "
        "open proxy that forwards to any host and port, port 25 included.",
    fix="Allow only your own clients: `Allow 127.0.0.1` and `Allow 192.168.0.0/16` "
        "(anything not allowed is then refused).",
    reference=REF + "#allow",
    bad="Port 8888\nTimeout 600\nConnectPort 443\n",
    good="Port 8888\nTimeout 600\nConnectPort 443\nAllow 127.0.0.1\n",
)
ALLOW_BROAD = Rule(
    id="TINYPROXY-ALLOW-BROAD", server="tinyproxy", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.CRITICAL,
    title="A tinyproxy Allow line admits clients from the Internet",
    description="The first `Allow`/`Deny` entry that matches an outside client is an "
                "`Allow` (e.g. `Allow 0.0.0.0/0`); entries are checked in order and the "
                "first match wins.",
    why="The proxy then forwards any request for strangers: an open proxy.",
    fix="Narrow the Allow list to your LAN, e.g. `Allow 192.168.0.0/16`.",
    reference=REF + "#allow",
    bad="Port 8888\nConnectPort 443\nAllow 0.0.0.0/0\n",
    good="Port 8888\nConnectPort 443\nAllow 192.168.0.0/16\n",
)
CONNECT_ANY_PORT = Rule(
    id="TINYPROXY-CONNECT-ANY-PORT", server="tinyproxy", category=Category.SMTP_VIA_PROXY,
    severity=Severity.CRITICAL,
    title="tinyproxy allows CONNECT to any port, SMTP included",
    description="No `ConnectPort` line (or one listing 25, 465 or 587): CONNECT tunnels go "
                "to every port. Debian ships `#ConnectPort 443` commented out.",
    why="CONNECT mx.example:25 through an open tinyproxy is how spammers send mail from "
        "your address; even trusted LAN clients (or malware on them) can bypass a port-25 "
        "firewall this way.",
    fix="Add `ConnectPort 443` (and `ConnectPort 563` if needed); `ConnectPort 0` "
        "disables CONNECT.",
    reference=REF + "#connectport",
    bad="Port 8888\nAllow 0.0.0.0/0\n",
    good="Port 8888\nAllow 0.0.0.0/0\nConnectPort 0\n",
)
ACL_HOSTNAME = Rule(
    id="TINYPROXY-ACL-HOSTNAME", server="tinyproxy", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.MEDIUM,
    title="tinyproxy admits clients by host name (reverse DNS)",
    description="`Allow name` / `Allow .domain` matches the client's reverse-DNS name, which "
                "whoever controls the client's address block sets.",
    why="An attacker gives their address a PTR record inside your domain and is let in.",
    fix="Use addresses and CIDR ranges in Allow lines.",
    reference=REF + "#allow",
    bad="Port 8888\nConnectPort 443\nAllow .example.com\n",
    good="Port 8888\nConnectPort 443\nAllow 192.168.0.0/16\n",
)
BASICAUTH_ONLY = Rule(
    id="TINYPROXY-BASICAUTH-ONLY", server="tinyproxy", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.MEDIUM,
    title="Only a BasicAuth password protects tinyproxy",
    description="`BasicAuth` is set but the Allow/Deny list admits outside clients: the "
                "password, sent in clear text on every request, is the only barrier.",
    why="Proxy passwords get sniffed, guessed or reused; once known the proxy is open.",
    fix="Also restrict clients with `Allow <your network>`.",
    reference=REF + "#basicauth",
    bad="Port 8888\nConnectPort 443\nBasicAuth user secret\n",
    good="Port 8888\nConnectPort 443\nBasicAuth user secret\nAllow 192.168.0.0/16\n",
)
LISTEN_ALL = Rule(
    id="TINYPROXY-LISTEN-ALL", server="tinyproxy", category=Category.HARDENING,
    severity=Severity.INFO,
    title="tinyproxy listens on every address",
    description="No `Listen` line: tinyproxy binds every interface (the Debian default).",
    why="Only the Allow list then keeps strangers out; one edit there opens it.",
    fix="`Listen 127.0.0.1` (or your LAN address).",
    reference=REF + "#listen",
    bad="Port 8888\nConnectPort 443\nAllow 127.0.0.1\n",
    good="Port 8888\nListen 127.0.0.1\nConnectPort 443\nAllow 127.0.0.1\n",
)

RULES: tuple[Rule, ...] = (NO_ACL, ALLOW_BROAD, CONNECT_ANY_PORT, ACL_HOSTNAME,
                           BASICAUTH_ONLY, LISTEN_ALL)


def acl_decision(cfg: TinyproxyConfig, client: IPAddress) -> tuple[bool, AclEntry | None, bool]:
    """(allowed, deciding entry or None, certain) for a client, as src/acl.c check_acl."""
    if not cfg.acl:
        return True, None, True
    certain = True
    for e in cfg.acl:
        net = parse_net(e.value)
        if net is None:  # a name: matched against reverse DNS the client controls
            if e.allow:
                return True, e, False
            certain = False
            continue
        if client.version == net.version and client in net:
            return e.allow, e, certain
        mapped = getattr(client, "ipv4_mapped", None)
        if mapped is not None and net.version == 4 and mapped in net:
            return e.allow, e, certain
    return False, None, certain


def connect_ports(cfg: TinyproxyConfig) -> set[int] | None:
    """Ports CONNECT may reach; None = every port."""
    if not cfg.connect_ports:
        return None
    return {p for p, _ in cfg.connect_ports}


def check(cfg: TinyproxyConfig, options: AuditOptions) -> tuple[list[Finding], dict[str, Any]]:
    """Every tinyproxy finding for this config, and its `proxy_paths` fact."""
    findings: list[Finding] = []
    if cfg.port is None:
        # "You MUST set a Port": tinyproxy exits, so nothing is relayed (the parser's error
        # says why the config is unusable)
        return findings, {"proxy_paths": [], "outside_verdicts": {
            f"{m} {p}": False for p in PROBE_PORTS for m in ("GET", "CONNECT")}}
    nets = [n for e in cfg.acl if (n := parse_net(e.value)) is not None]
    stranger = outside_client(options, nets)
    listens = [d.args[0] for d in cfg.listens] or [None]
    reachable = any(listener_reachable(h, stranger) for h in listens)
    allowed, entry, certain = acl_decision(cfg, stranger)
    auth = bool(cfg.basic_auth)
    reverse_only = any(d.name == "reverseonly" and d.args[0].lower() in ("yes", "on")
                       for d in cfg.directives)
    if reverse_only:  # no forward proxying at all: nothing below is a relay path
        reachable = False
    is_open = reachable and allowed and not auth
    conf = Confidence.LIKELY if certain else Confidence.POSSIBLE
    trusted = [c for c in representatives(nets) if c != stranger and acl_decision(cfg, c)[0]
               and not reverse_only]
    users = [stranger] if is_open else ([] if auth else trusted)
    cports = connect_ports(cfg)
    smtp_connect = sorted(SMTP_PORTS) if cports is None else sorted(cports & set(SMTP_PORTS))
    port_line = cfg.port

    if reachable and allowed and entry is None and not cfg.acl:
        findings.append(_finding(
            NO_ACL if not auth else BASICAUTH_ONLY, cfg, stranger, conf,
            [Evidence("note", "no Allow or Deny line in the config: tinyproxy allows "
                      "every client")],
            [_insert(cfg, "Allow 127.0.0.1", "Allow ::1")]))
    elif reachable and allowed and entry is not None:
        ev = [entry.directive.evidence(f"first Allow/Deny entry matching {stranger}")]
        others = [e for e in cfg.acl if e.allow and e is not entry]
        edit = entry.directive.replace() if others else entry.directive.replace(
            "Allow 127.0.0.1")
        if auth:
            findings.append(_finding(BASICAUTH_ONLY, cfg, stranger, conf, ev, [edit]))
        else:
            rule = ACL_HOSTNAME if parse_net(entry.value) is None else ALLOW_BROAD
            findings.append(_finding(rule, cfg, stranger, conf, ev, [edit],
                                     location_directive=entry.directive))
    for e in cfg.acl:
        if e.allow and parse_net(e.value) is None and not (
                findings and findings[-1].rule == ACL_HOSTNAME.id
                and findings[-1].location == e.directive.location):
            findings.append(ACL_HOSTNAME.finding(
                f"Allow {e.value} admits clients by reverse DNS", location=e.directive.location,
                evidence=[e.directive.evidence()], confidence=Confidence.CONFIRMED,
                edits=[e.directive.replace()]))

    if smtp_connect and users:
        who = who_uses(is_open, users)
        severity = {"outside": Severity.CRITICAL, "trusted": Severity.MEDIUM}.get(who)
        if severity is not None:
            if cports is None:
                ev = [Evidence("note", "no ConnectPort line: CONNECT is allowed to every port")]
                edits = [_insert(cfg, "ConnectPort 443")]
                loc = port_line.location if port_line else None
            else:
                bad = [d for p, d in cfg.connect_ports if p in SMTP_PORTS]
                ev = [d.evidence("allows CONNECT to an SMTP port") for d in bad]
                edits = [d.replace() for d in bad]
                if len(bad) == len(cfg.connect_ports):
                    edits = [bad[0].replace("ConnectPort 443"), *(d.replace() for d in bad[1:])]
                loc = bad[0].location
            if is_open and entry is not None:
                ev.append(entry.directive.evidence(f"admits {stranger}"))
            findings.append(CONNECT_ANY_PORT.finding(
                f"tinyproxy tunnels {'outside' if is_open else 'trusted'} clients to SMTP "
                f"ports ({', '.join(map(str, smtp_connect))}) with CONNECT",
                location=loc, evidence=ev, severity=severity, confidence=conf, edits=edits))
    if not cfg.listens:
        findings.append(LISTEN_ALL.finding(
            "tinyproxy listens on every address (no Listen line)",
            location=port_line.location if port_line else None,
            evidence=[port_line.evidence()] if port_line else [],
            confidence=Confidence.CONFIRMED))

    port = port_line.args[0] if port_line else "?"
    tunnel = set(PROBE_PORTS) if cports is None else set(PROBE_PORTS) & cports
    paths = []
    listen_lines = {d.args[0]: d for d in cfg.listens}
    for h in listens:
        path_open = is_open and listener_reachable(h, stranger)
        path_users = [stranger] if path_open else ([] if auth else trusted)
        listen = f"[{h}]:{port}" if h and ":" in h else f"{h or '*'}:{port}"
        paths.append(proxy_path(
            "tinyproxy", cfg.path, listen, open_to_outside=path_open,
            reaches_ports=PROBE_PORTS if path_users else (),
            tunnel_ports=tunnel if path_users else (),
            loopback_ports=PROBE_PORTS if path_users else (),
            clients=who_uses(path_open, path_users),
            evidence=[listen_lines.get(h or ""), port_line,
                      entry.directive if path_open and entry else None]))
    verdicts = {f"{m} {p}": is_open and (m == "GET" or cports is None or p in cports)
                for p in PROBE_PORTS for m in ("GET", "CONNECT")}
    return findings, {"proxy_paths": paths, "outside_client": str(stranger),
                      "outside_verdicts": verdicts}


def _insert(cfg: TinyproxyConfig, *lines: str) -> Edit:
    """Insert after the Port line (or append at the end)."""
    if cfg.port is not None:
        return cfg.port.insert_after(*lines)
    last = max((d.line for d in cfg.directives), default=0)
    return Edit(cfg.path, last + 1, (), tuple(lines))


def _finding(rule: Rule, cfg: TinyproxyConfig, stranger: IPAddress, conf: Confidence,
             evidence: list[Evidence], edits: list[Edit], location_directive: Any = None
             ) -> Finding:
    loc = location_directive.location if location_directive is not None else (
        cfg.port.location if cfg.port else None)
    if rule is BASICAUTH_ONLY:
        loc = cfg.basic_auth[0].location
        evidence = [*evidence, *(d.evidence("the only barrier") for d in cfg.basic_auth)]
        title = f"only the BasicAuth password keeps {stranger} out of tinyproxy"
    else:
        title = f"tinyproxy serves an outside client ({stranger}): any host, any port"
    return rule.finding(title, location=loc, evidence=evidence, confidence=conf, edits=edits)


