"""What httpd's access control decides for one proxied request from one client.

Reproduces, for mod_proxy requests, the merge httpd performs (verified on a real 2.4 daemon,
see research/config-rules.md §2.1 and §12): matching `<Proxy>`/`<ProxyMatch>` sections (in
config order, main server first), then `<Location>`/`<LocationMatch>` against the absolute URL
(or `host:port` for CONNECT), then `<If>`. A later section's `Require` set replaces the earlier
one unless `AuthMerging And|Or`; mod_access_compat's `Order` is inherited and `Allow`/`Deny`
lists are replaced; `Satisfy Any` lets either side grant; `<Limit>` restricts only the methods
it names; no authz directive at all grants. `<Directory>` never applies to proxy requests.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass, field
from enum import Enum

from relayguard.audit.base import IPAddress
from relayguard.audit.tree import Node

AUTHZ_CONTAINERS = {"requireall": "all", "requireany": "any", "requirenone": "none"}
USER_PROVIDERS = frozenset({"valid-user", "user", "group", "file-owner", "file-group",
                            "dbm-group", "dbd-group", "ldap-user", "ldap-group", "ldap-dn",
                            "ldap-attribute", "ldap-filter"})
ALL_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                         "TRACE", "PATCH", "PROPFIND"})


class Verdict(Enum):
    """Outcome of one authz evaluation step (mod_authz_core's authz_status)."""

    GRANTED = "granted"
    DENIED = "denied"
    DENIED_NO_USER = "denied-no-user"  # would need credentials
    NEUTRAL = "neutral"
    UNKNOWN = "unknown"  # decided at run time (`Require expr`, `Require env`)


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    """A forward-proxy request as mod_proxy sees it."""

    method: str  # "GET" or "CONNECT"
    url: str  # "http://victim.example:25/" or, for CONNECT, "victim.example:25"
    port: int

    @property
    def label(self) -> str:
        return f"CONNECT {self.url}" if self.method == "CONNECT" else f"{self.method} {self.url}"


@dataclass
class Decision:
    """Whether the request is allowed, and the lines that decided it."""

    granted: bool | None  # None: depends on run-time conditions (<If>, Require expr)
    why: str  # "no-acl", "granted", "default-allow", "satisfy-any", "overridden", "denied"…
    explanation: str
    deciding: list[Node] = field(default_factory=list)
    sections: list[Node] = field(default_factory=list)  # every section that applied


# --------------------------------------------------------------------------- address specs

def parse_host_spec(spec: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """`Require ip` / `Allow from` address forms: CIDR, netmask, partial IPv4 (`10.1`), IPv6."""
    s = spec.strip()
    try:
        if "/" in s:
            addr, _, mask = s.partition("/")
            if "." in mask:
                return ipaddress.ip_network(f"{addr}/{mask}", strict=False)
            return ipaddress.ip_network(s, strict=False)
        if ":" in s:
            return ipaddress.ip_network(s.strip("[]"), strict=False)
        if re.fullmatch(r"\d{1,3}(\.\d{1,3}){0,3}\.?", s):
            octets = [o for o in s.split(".") if o]
            prefix = 8 * len(octets)
            padded = octets + ["0"] * (4 - len(octets))
            return ipaddress.ip_network(f"{'.'.join(padded)}/{prefix}", strict=False)
    except ValueError:
        return None
    return None


def _client_in(client: IPAddress, specs: tuple[str, ...]) -> bool:
    for spec in specs:
        net = parse_host_spec(spec)
        if net is not None and net.version == client.version and client in net:
            return True
    return False


# --------------------------------------------------------------------------- Require trees

@dataclass
class Req:
    """A `Require` line or a `<RequireAll|Any|None>` container, with its `<Limit>` scope."""

    kind: str  # "leaf", "all", "any", "none"
    node: Node | None
    methods: tuple[bool, frozenset[str]] | None = None  # (only_these, methods) from <Limit*>
    children: list[Req] = field(default_factory=list)

    def applies(self, method: str) -> bool:
        return _scope_applies(self.methods, method)


def _limit_scope(node: Node) -> tuple[bool, frozenset[str]]:
    names = frozenset(a.upper() for a in node.args)
    return (node.key == "limit", names)


def build_requires(children: list[Node],
                   methods: tuple[bool, frozenset[str]] | None = None) -> list[Req]:
    """The authz tree a section declares (descending into <Limit>/<LimitExcept>)."""
    out: list[Req] = []
    for c in children:
        if c.key == "require" and not c.is_section:
            out.append(Req("leaf", c, methods))
        elif c.is_section and c.key in AUTHZ_CONTAINERS:
            out.append(Req(AUTHZ_CONTAINERS[c.key], c, methods,
                           build_requires(c.children, methods)))
        elif c.is_section and c.key in ("limit", "limitexcept"):
            out += build_requires(c.children, _limit_scope(c))
    return out


def _leaf(node: Node, client: IPAddress, method: str) -> Verdict:
    args = list(node.args)
    negate = bool(args) and args[0].lower() == "not"
    if negate:
        args = args[1:]
    provider = args[0].lower() if args else ""
    rest = tuple(args[1:])
    if provider == "all":
        v = Verdict.GRANTED if rest and rest[0].lower() == "granted" else Verdict.DENIED
    elif provider == "ip":
        v = Verdict.GRANTED if _client_in(client, rest) else Verdict.DENIED
    elif provider == "local":
        v = Verdict.GRANTED if client.is_loopback else Verdict.DENIED
    elif provider in ("host", "forward-dns"):
        # needs the client's (double-)reverse DNS to end in a listed name: a stranger's doesn't
        v = Verdict.DENIED
    elif provider == "method":
        wanted = {m.upper() for m in rest}
        v = Verdict.GRANTED if method in wanted or (method == "HEAD" and "GET" in wanted) \
            else Verdict.DENIED
    elif provider in USER_PROVIDERS:
        v = Verdict.DENIED_NO_USER
    else:  # expr, env, and providers of modules we do not model: decided at run time
        v = Verdict.UNKNOWN
    if negate:
        v = {Verdict.GRANTED: Verdict.DENIED, Verdict.DENIED: Verdict.NEUTRAL,
             Verdict.DENIED_NO_USER: Verdict.NEUTRAL}.get(v, v)
    return v


def evaluate_requires(req: Req, client: IPAddress, method: str,
                      unknown_as: Verdict) -> Verdict | None:
    """mod_authz_core's apply_authz_sections; None when nothing applies to this method."""
    if not req.applies(method):
        return None
    if req.kind == "leaf":
        assert req.node is not None
        v = _leaf(req.node, client, method)
        return unknown_as if v is Verdict.UNKNOWN else v
    op_and = req.kind == "all"
    result = Verdict.NEUTRAL
    seen = False
    for child in req.children:
        v = evaluate_requires(child, client, method, unknown_as)
        if v is None:
            continue
        seen = True
        if v is Verdict.NEUTRAL:
            continue
        if op_and:
            if v is Verdict.GRANTED:
                result = v
                continue
            result = v
            break
        if v is Verdict.GRANTED:
            result = v
            break
        if result is not Verdict.DENIED_NO_USER:
            result = v
    if not seen:
        return None
    if req.kind == "none":
        result = {Verdict.GRANTED: Verdict.DENIED, Verdict.DENIED: Verdict.NEUTRAL,
                  Verdict.DENIED_NO_USER: Verdict.NEUTRAL}.get(result, result)
    return result


# --------------------------------------------------------------------------- section matching

def _regex_search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def _pathname_fnmatch(pattern: str, text: str) -> bool:
    """fnmatch with FNM_PATHNAME: `*` and `?` never match `/` (httpd's <Location> wildcards)."""
    rx = ""
    for ch in pattern:
        rx += "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch)
    return re.fullmatch(rx, text) is not None


def _section_pattern(section: Node, regex_key: str) -> tuple[bool, str] | None:
    """(is a regex, pattern) of `<X pattern>`, `<X ~ regex>` or `<XMatch regex>`."""
    args = section.args
    if not args:
        return None
    if section.key == regex_key:
        return True, args[0]
    if args[0] == "~" and len(args) > 1:
        return True, args[1]
    return False, args[0]


def proxy_section_matches(section: Node, url: str) -> bool:
    """Does `<Proxy>`/`<ProxyMatch>` cover this proxy URL (mod_proxy's proxy_walk)?"""
    found = _section_pattern(section, "proxymatch")
    if found is None:
        return False
    is_regex, pattern = found
    if is_regex:
        return _regex_search(pattern, url)
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(url, pattern)  # no FNM_PATHNAME: `*` matches `/` too
    return url.startswith(pattern)


def location_section_matches(section: Node, uri: str) -> bool:
    """Does `<Location>`/`<LocationMatch>` cover this r->uri (httpd's location_walk)?"""
    found = _section_pattern(section, "locationmatch")
    if found is None:
        return False
    is_regex, pattern = found
    if is_regex:
        return _regex_search(pattern, uri)
    if any(c in pattern for c in "*?["):
        return _pathname_fnmatch(pattern, uri)
    if not uri.startswith(pattern):
        return False
    rest = uri[len(pattern):]
    return pattern.endswith("/") or rest == "" or rest.startswith("/")


# --------------------------------------------------------------------------- mod_access_compat

@dataclass
class _Compat:
    order: dict[str, tuple[str, Node]] = field(default_factory=dict)
    allows: list[Node] = field(default_factory=list)
    denys: list[Node] = field(default_factory=list)
    satisfy: dict[str, tuple[str, Node]] = field(default_factory=dict)
    used: bool = False


def _compat_directives(children: list[Node],
                       methods: tuple[bool, frozenset[str]] | None = None,
                       ) -> list[tuple[Node, tuple[bool, frozenset[str]] | None]]:
    out: list[tuple[Node, tuple[bool, frozenset[str]] | None]] = []
    for c in children:
        if c.is_section and c.key in ("limit", "limitexcept"):
            out += _compat_directives(c.children, _limit_scope(c))
        elif not c.is_section and c.key in ("order", "allow", "deny", "satisfy"):
            out.append((c, methods))
    return out


def _scope_applies(scope: tuple[bool, frozenset[str]] | None, method: str) -> bool:
    if scope is None:
        return True
    only, names = scope
    hit = method in names or (method == "HEAD" and "GET" in names)
    return hit if only else not hit


def _merge_compat(base: _Compat, section: Node, method: str) -> _Compat:
    directives = _compat_directives(section.children)
    if not directives:
        return base
    new = _Compat(order=dict(base.order), allows=base.allows, denys=base.denys,
                  satisfy=dict(base.satisfy), used=True)
    allows = [n for n, s in directives if n.key == "allow" and _scope_applies(s, method)]
    denys = [n for n, s in directives if n.key == "deny" and _scope_applies(s, method)]
    if any(n.key == "allow" for n, _ in directives):
        new.allows = allows
    if any(n.key == "deny" for n, _ in directives):
        new.denys = denys
    for n, s in directives:
        if not _scope_applies(s, method) or not n.args:
            continue
        value = "".join(n.args).lower()
        # mod_access_compat merge: an Order equal to the default (Deny,Allow) inherits.
        if n.key == "order" and value != "deny,allow":
            new.order[method] = (value, n)
        elif n.key == "satisfy":
            new.satisfy[method] = (value, n)
    return new


def _allowdeny_hit(nodes: list[Node], client: IPAddress, unknown_as: bool) -> Node | None:
    for n in nodes:
        args = [a for a in n.args if a.lower() != "from"]
        for a in args:
            low = a.lower()
            if low == "all":
                return n
            if low.startswith("env="):
                if unknown_as:
                    return n
                continue
            net = parse_host_spec(a)
            if net is not None and net.version == client.version and client in net:
                return n
    return None


def _compat_check(c: _Compat, client: IPAddress, method: str,
                  unknown_as: bool) -> tuple[bool, str, list[Node]]:
    """mod_access_compat's check_dir_access: (allowed, why, deciding lines)."""
    order, order_node = c.order.get(method, ("deny,allow", None))
    deny_hit = _allowdeny_hit(c.denys, client, unknown_as)
    allow_hit = _allowdeny_hit(c.allows, client, unknown_as)
    lines = [n for n in (order_node, deny_hit, allow_hit) if n is not None]
    if order == "allow,deny":
        ok = allow_hit is not None and deny_hit is None
        return ok, "allowed" if ok else "denied", lines
    if order == "mutual-failure":
        ok = allow_hit is not None and deny_hit is None
        return ok, "allowed" if ok else "denied", lines
    # Deny,Allow (also the default): allowed unless denied and not re-allowed
    ok = deny_hit is None or allow_hit is not None
    why = "default-allow" if ok and allow_hit is None else ("allowed" if ok else "denied")
    return ok, why, lines


# --------------------------------------------------------------------------- the decision

def has_authz(section: Node) -> bool:
    """Does this section declare any access control (2.4 or 2.2 style)?"""
    return bool(build_requires(section.children)) or bool(_compat_directives(section.children))


def decide(sections: list[Node], if_sections: list[Node], client: IPAddress,
           request: ProxyRequest, *, compat_loaded: bool = True) -> Decision:
    """Evaluate the merged access control; `<If>` sections make the answer run-time dependent."""
    base = _decide(sections, client, request, compat_loaded)
    if not if_sections:
        return base
    with_if = _decide(sections + if_sections, client, request, compat_loaded)
    if with_if.granted == base.granted:
        return base
    return Decision(None, "runtime", "an <If> section decides at run time: "
                    f"{'granted' if with_if.granted else 'denied'} when it applies, "
                    f"{'granted' if base.granted else 'denied'} otherwise",
                    base.deciding + with_if.deciding, sections + if_sections)


def _decide(sections: list[Node], client: IPAddress, request: ProxyRequest,
            compat_loaded: bool) -> Decision:
    outcomes = [_decide_once(sections, client, request, compat_loaded, u)
                for u in (Verdict.GRANTED, Verdict.DENIED)]
    if outcomes[0].granted == outcomes[1].granted:
        return outcomes[1]
    d = outcomes[0]
    return Decision(None, "runtime", "a `Require expr`/`Require env`/`Allow from env=` line "
                    "decides at run time", d.deciding, d.sections)


def _decide_once(sections: list[Node], client: IPAddress, request: ProxyRequest,
                 compat_loaded: bool, unknown_as: Verdict) -> Decision:
    method = request.method
    current: Req | None = None
    current_from: Node | None = None
    restricted_before: Node | None = None  # an earlier section that alone would deny
    compat = _Compat()
    for sec in sections:
        reqs = build_requires(sec.children)
        if reqs:
            mode = "off"
            for c in sec.children:
                if c.key == "authmerging" and c.args:
                    mode = c.args[0].lower()
            mine = Req("any", sec, None, reqs)
            alone = evaluate_requires(mine, client, method, unknown_as)
            if current is not None:
                prev = evaluate_requires(current, client, method, unknown_as)
                if prev not in (None, Verdict.GRANTED):
                    restricted_before = current_from
            if current is None or mode == "off":
                current, current_from = mine, sec
            elif mode == "and":
                current = Req("all", sec, None, [current, mine])
            else:
                current = Req("any", sec, None, [current, mine])
            del alone
        compat = _merge_compat(compat, sec, method)
    authz = None if current is None else evaluate_requires(current, client, method, unknown_as)
    satisfy, satisfy_node = compat.satisfy.get(method, ("all", None))
    compat_ok, compat_why, compat_lines = (True, "none", [])
    if compat.used and compat_loaded:
        compat_ok, compat_why, compat_lines = _compat_check(compat, client, method,
                                                            unknown_as is Verdict.GRANTED)
    authz_lines = _authz_lines(current)
    authz_granted = authz is None or authz is Verdict.GRANTED
    if satisfy == "any" and compat.used:
        granted = compat_ok or authz_granted
        if granted and not (compat_ok and authz_granted):
            lines = [n for n in (satisfy_node,) if n] + (compat_lines if compat_ok
                                                          else authz_lines)
            return Decision(True, "satisfy-any", "`Satisfy Any` lets one side grant although "
                            "the other denies", lines, sections)
    else:
        granted = compat_ok and authz_granted
    if not granted:
        lines = compat_lines if not compat_ok else authz_lines
        return Decision(False, "denied", f"{request.label} is refused for {client}",
                        lines, sections)
    if current is None and not compat.used:
        return Decision(True, "no-acl", "no <Proxy> access control applies to this request "
                        "(httpd 2.4 grants when no authorization directive is configured)",
                        [], sections)
    if compat.used and compat_why == "default-allow" and current is None:
        return Decision(True, "default-allow", "2.2-style access control ends on its default "
                        "allow (`Order Deny,Allow` is the default; nothing denies this client)",
                        compat_lines, sections)
    if restricted_before is not None and authz is Verdict.GRANTED:
        return Decision(True, "overridden", "a restricting section is overridden by a later "
                        "one that grants (sections merge in order; the last Require set wins)",
                        [restricted_before, *authz_lines], sections)
    if authz is None and current is not None:
        return Decision(True, "method-not-covered", f"the access control covers other methods, "
                        f"not {method} (`<Limit>` restricts only the methods it names)",
                        authz_lines, sections)
    return Decision(True, "granted", f"access control grants {request.label} to {client}",
                    authz_lines + compat_lines, sections)


def _authz_lines(req: Req | None) -> list[Node]:
    if req is None:
        return []
    if req.kind == "leaf":
        return [req.node] if req.node is not None else []
    out: list[Node] = []
    for c in req.children:
        out += _authz_lines(c)
    return out
