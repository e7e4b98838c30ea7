"""Privoxy rules (user manual §4.1 listen-address, §4.7 ACLs; actions file limit-connect).

Who may connect: anyone who can reach a `listen-address` when no `permit-access` /
`deny-access` line exists; otherwise the last matching line wins and the default is deny.
Where to: any host; CONNECT to every port unless a `+limit-connect{…}` applies (Debian's
default.action only documents it). Absolute-URI requests go to any port.
"""

from __future__ import annotations

from typing import Any

from relayguard.audit.addresses import (
    LOOPBACK,
    PROBE_PORTS,
    SMTP_PORTS,
    IPNetwork,
    listener_reachable,
    outside_client,
    parse_net,
    proxy_path,
    representatives,
    who_uses,
)
from relayguard.audit.base import AuditOptions, IPAddress
from relayguard.audit.privoxy import DEFAULT_LISTEN, AccessEntry, PrivoxyConfig
from relayguard.audit.readfile import lines_of
from relayguard.catalogue import Rule
from relayguard.findings import (
    Category,
    Confidence,
    Edit,
    Evidence,
    Finding,
    Location,
    Severity,
)

REF = "https://www.privoxy.org/user-manual/"
_HEAD = "confdir /etc/privoxy\nactionsfile match-all.action\nactionsfile default.action\n"

OPEN = Rule(
    id="PRIVOXY-OPEN", server="privoxy", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.CRITICAL,
    title="Privoxy serves clients from the Internet",
    description="A `listen-address` reachable from outside (`:8118`, `0.0.0.0`, a public "
                "address) and no `permit-access` line, or one that admits outside clients "
                "and is not undone by a later `deny-access` (last match wins).",
    why="Privoxy then forwards requests and CONNECT tunnels (to every port unless "
        "limit-connect is set) for anyone: an open proxy that relays spam to port 25.",
    fix="Listen on loopback (`listen-address 127.0.0.1:8118`) or restrict clients: "
        "`permit-access 192.168.0.0/16`.",
    reference=REF + "config.html#ACCESS-CONTROL",
    bad=_HEAD + "listen-address 0.0.0.0:8118\n",
    good=_HEAD + "listen-address 0.0.0.0:8118\npermit-access 192.168.0.0/16\n",
)
CONNECT_ANY_PORT = Rule(
    id="PRIVOXY-CONNECT-ANY-PORT", server="privoxy", category=Category.SMTP_VIA_PROXY,
    severity=Severity.CRITICAL,
    title="Privoxy allows CONNECT to any port, SMTP included",
    description="No `+limit-connect{…}` action applies to all URLs (or it allows 25, 465 or "
                "587): Privoxy opens CONNECT tunnels to every port.",
    why="Clients who can use the proxy reach mail servers on port 25 through it; when the "
        "proxy is open that is a spam relay carrying your address.",
    fix="Add to user.action:\n{+limit-connect{443}}\n/",
    reference=REF + "actions-file.html#LIMIT-CONNECT",
    bad=_HEAD + "listen-address 0.0.0.0:8118\n",
    good=_HEAD + "listen-address 127.0.0.1:8118\n",
)
REMOTE_CONTROL = Rule(
    id="PRIVOXY-REMOTE-CONTROL", server="privoxy", category=Category.HARDENING,
    severity=Severity.MEDIUM,
    title="Privoxy lets its clients change its configuration",
    description="`enable-remote-toggle`, `enable-remote-http-toggle` or `enable-edit-actions` "
                "is 1 while clients other than loopback can use the proxy.",
    why="Anyone who can use the proxy can then switch filtering off or edit actions — "
        "e.g. remove a limit-connect that keeps port 25 out.",
    fix="Set them to 0 (the Debian default).",
    reference=REF + "config.html#ENABLE-EDIT-ACTIONS",
    bad=_HEAD + "listen-address 0.0.0.0:8118\npermit-access 10.0.0.0/8\n"
                "enable-edit-actions 1\n",
    good=_HEAD + "listen-address 0.0.0.0:8118\npermit-access 10.0.0.0/8\n"
                 "enable-edit-actions 0\n",
)
FORWARD_CHAIN = Rule(
    id="PRIVOXY-FORWARD-CHAIN", server="privoxy", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.HIGH,
    title="An open Privoxy forwards into another proxy (Tor, a corporate upstream)",
    description="`forward`/`forward-socks*` sends requests to another proxy while outside "
                "clients can use Privoxy.",
    why="Strangers get a gateway into the upstream, which sees and trusts this host.",
    fix="Restrict Privoxy's clients (`permit-access`) or listen on loopback only.",
    reference=REF + "config.html#FORWARD",
    bad=_HEAD + "listen-address 0.0.0.0:8118\nforward-socks5t / 127.0.0.1:9050 .\n",
    good=_HEAD + "listen-address 127.0.0.1:8118\nforward-socks5t / 127.0.0.1:9050 .\n",
)

RULES: tuple[Rule, ...] = (OPEN, CONNECT_ANY_PORT, REMOTE_CONTROL, FORWARD_CHAIN)
REMOTE_SWITCHES = ("enable-remote-toggle", "enable-remote-http-toggle", "enable-edit-actions")


def _src_net(text: str) -> IPNetwork | None:
    """`192.168.0.0/16`, `10.0.0.1:8118/32`, `[::1]/128`, `localhost` -> a network."""
    t = text
    if t.lower().startswith("localhost"):
        t = "127.0.0.1" + t[len("localhost"):]
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        mask = rest.rpartition("/")[2] if "/" in rest else None
    else:
        host, _, mask_ = t.partition("/")
        mask = mask_ or None
        host = host.split(":", 1)[0]
    return parse_net(f"{host}/{mask}" if mask else host)


def acl_decision(cfg: PrivoxyConfig, client: IPAddress) -> tuple[bool, AccessEntry | None, bool]:
    """(allowed, deciding entry, certain) for a client asking for a third-party host."""
    if not cfg.access:
        return True, None, True
    certain = True
    for e in reversed(cfg.access):
        if e.dst is not None:
            continue  # limited to one destination: never the third party we reason about
        net = _src_net(e.src)
        if net is None:
            certain = False
            if e.permit:
                return True, e, False
            continue
        if client.version == net.version and client in net:
            return e.permit, e, certain
    return False, None, certain


def connect_ports(cfg: PrivoxyConfig) -> set[int] | None:
    """Ports CONNECT may reach for every URL; None = all ports."""
    if not cfg.limit_connect or cfg.limit_connect[-1].ports is None:
        return None
    out: set[int] = set()
    for item in cfg.limit_connect[-1].ports.split(","):
        item = item.strip()
        if not item:
            continue
        lo, dash, hi = item.partition("-")
        try:
            a = int(lo) if lo else 0
            b = (int(hi) if hi else 65535) if dash else a
        except ValueError:
            continue
        out |= {p for p in PROBE_PORTS if a <= p <= b}
    return out


def _listen_host(spec: str) -> str | None:
    if spec.startswith("["):
        return spec[1:].partition("]")[0]
    host = spec.rpartition(":")[0] if ":" in spec else spec
    return host or None


def check(cfg: PrivoxyConfig, options: AuditOptions) -> tuple[list[Finding], dict[str, Any]]:
    """Every Privoxy finding for this config, and its `proxy_paths` facts."""
    findings: list[Finding] = []
    nets = [n for e in cfg.access if (n := _src_net(e.src)) is not None]
    stranger = outside_client(options, nets)
    listens = [(d.args[0], d) for d in cfg.listens] or [(DEFAULT_LISTEN, None)]
    reachable = [(spec, d) for spec, d in listens
                 if listener_reachable(_listen_host(spec), stranger)]
    allowed, entry, certain = acl_decision(cfg, stranger)
    is_open = bool(reachable) and allowed
    conf = Confidence.LIKELY if certain else Confidence.POSSIBLE
    trusted = [c for c in representatives(nets) if c != stranger and acl_decision(cfg, c)[0]
               and any(listener_reachable(_listen_host(s), c) for s, _ in listens)]
    users = [stranger] if is_open else trusted
    who = who_uses(is_open, users)
    cports = connect_ports(cfg)

    open_edits: list[Edit] = []
    if is_open:
        spec, d = reachable[0]
        ev = [d.evidence(f"reachable by {stranger}") if d else
              Evidence("note", f"no listen-address: default {DEFAULT_LISTEN}")]
        if entry is not None:
            ev.append(entry.directive.evidence(f"last matching ACL line for {stranger}"))
            edits = [entry.directive.replace()]
            if not any(e.permit for e in cfg.access if e is not entry):
                edits = [entry.directive.replace("permit-access 127.0.0.1/32")]
        else:
            ev.append(Evidence("note", "no permit-access/deny-access line: every client "
                               "may use Privoxy"))
            anchor = (d or (cfg.directives[-1] if cfg.directives else None))
            edits = [anchor.insert_after("permit-access 127.0.0.1/32")] if anchor else []
        open_edits = edits
        findings.append(OPEN.finding(
            f"Privoxy on {spec} serves an outside client ({stranger})",
            location=d.location if d else None, evidence=ev, confidence=conf, edits=edits))

    severity = {"outside": Severity.CRITICAL, "trusted": Severity.MEDIUM}.get(who)
    smtp = set(SMTP_PORTS) if cports is None else cports & set(SMTP_PORTS)
    if severity is not None and smtp:
        last = cfg.limit_connect[-1] if cfg.limit_connect else None
        ev = [Evidence("note", "no +limit-connect applies to all URLs: CONNECT is allowed to "
                       "every port")] if cports is None else [Evidence(
                           "config", f"+limit-connect{{{last.ports}}}",
                           _loc(last.path, last.line))] if last else []
        findings.append(CONNECT_ANY_PORT.finding(
            f"Privoxy tunnels {who} clients to SMTP ports ({', '.join(map(str, sorted(smtp)))})"
            " with CONNECT", location=_loc(cfg.path, listens[0][1].line if listens[0][1]
                                           else None),
            evidence=ev, severity=severity, confidence=conf, edits=_limit_edit(cfg)))

    rc_severity = {"outside": Severity.MEDIUM, "trusted": Severity.LOW}.get(who)
    for name in REMOTE_SWITCHES:
        d = cfg.last(name)
        if rc_severity is not None and d is not None and d.args[:1] == ("1",):
            findings.append(REMOTE_CONTROL.finding(
                f"{name} is on while {who} clients can use Privoxy",
                location=d.location, evidence=[d.evidence()], severity=rc_severity,
                confidence=Confidence.CONFIRMED, edits=[d.replace(f"{name} 0")]))
    if is_open:
        for d in cfg.directives:
            if d.name.startswith("forward") and d.name != "forwarded-connect-retries" \
                    and len(d.args) >= 2 and d.args[1] != ".":
                findings.append(FORWARD_CHAIN.finding(
                    f"open Privoxy forwards to {d.args[1]}", location=d.location,
                    evidence=[d.evidence()], confidence=conf, edits=open_edits))

    tunnel = set(PROBE_PORTS) if cports is None else cports
    paths = []
    for spec, listen_line in listens:
        host = _listen_host(spec)
        path_open = is_open and listener_reachable(host, stranger)
        path_users = [stranger] if path_open else [
            c for c in trusted if listener_reachable(host, c)]
        loop = PROBE_PORTS if path_users and _loopback_allowed(cfg, path_users) else ()
        paths.append(proxy_path(
            "privoxy", cfg.path, spec, open_to_outside=path_open,
            reaches_ports=PROBE_PORTS if path_users else (),
            tunnel_ports=tunnel if path_users else (), loopback_ports=loop,
            clients=who_uses(path_open, path_users), evidence=[listen_line]))
    verdicts = {f"{m} {p}": is_open and (m == "GET" or p in tunnel)
                for p in PROBE_PORTS for m in ("GET", "CONNECT")}
    return findings, {"proxy_paths": paths, "outside_client": str(stranger),
                      "outside_verdicts": verdicts}


def _loopback_allowed(cfg: PrivoxyConfig, users: list[IPAddress]) -> bool:
    """Privoxy does not block 127.0.0.1 as a destination; a dst-limited deny might."""
    for e in cfg.access:
        if not e.permit and e.dst is not None:
            net = _src_net(e.dst)
            if net is not None and LOOPBACK in net:
                return False
    return bool(users)


def _limit_edit(cfg: PrivoxyConfig) -> list[Edit]:
    """Append `{+limit-connect{443}}` for every URL to the last actions file."""
    if not cfg.actionsfiles:
        return []
    target = cfg.actionsfiles[-1]
    lines = lines_of(target)
    if lines is None:
        return []
    count = len(lines)
    return [Edit(str(target), count + 1, (), ("{+limit-connect{443}}", "/"))]


def _loc(path: str, line: int | None) -> Location:
    return Location(path=path, line=line)


