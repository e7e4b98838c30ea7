"""Apache httpd rules: can an outside client use this server as a proxy?

The seed incident: `ProxyRequests On` with no effective `<Proxy>` ACL, and spammers sent mail
with `CONNECT mx.victim:25`. Each finding names the lines that open the hole and the fix.
Which server answers a stranger (default vhost per address), whether forward proxying is on
there, and what access control decides are all evaluated as httpd does (apache_access.py).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from relayguard.audit.addresses import proxy_path
from relayguard.audit.apache import ApacheConfig
from relayguard.audit.apache_access import (
    Decision,
    ProxyRequest,
    decide,
    has_authz,
    location_section_matches,
    parse_host_spec,
    proxy_section_matches,
)
from relayguard.audit.base import AuditOptions, IPAddress
from relayguard.audit.readfile import lines_of
from relayguard.audit.regex_chars import regex_group_may_hold
from relayguard.audit.tree import Node, excerpt
from relayguard.catalogue import Rule
from relayguard.findings import Category, Confidence, Edit, Evidence, Finding, Location, Severity

DOCS = "https://httpd.apache.org/docs/2.4/mod/"
SMTP_PORTS = (25, 465, 587)
ALL_PORTS = (25, 80, 443, 465, 587)  # the ports cross-service facts speak about
VICTIM = "victim.example"

_HEADER = (
    "ServerRoot /etc/apache2\nServerName www.example.com\nErrorLog /dev/null\n"
    "LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n"
    "LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so\n"
    "LoadModule proxy_http_module /usr/lib/apache2/modules/mod_proxy_http.so\n"
    "LoadModule proxy_connect_module /usr/lib/apache2/modules/mod_proxy_connect.so\n"
    "LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n"
    "LoadModule authz_host_module /usr/lib/apache2/modules/mod_authz_host.so\n"
    "LoadModule access_compat_module /usr/lib/apache2/modules/mod_access_compat.so\n"
    "Listen 8080\n"
)
_FIX_ACL = (
    'If this server is not meant to be a forward proxy: `ProxyRequests Off`.\n'
    'If it is, allow only your own networks, for every scheme and CONNECT:\n'
    '<Proxy "*">\n    Require ip 192.0.2.0/24\n</Proxy>'
)

OPEN_FORWARD_PROXY = Rule(
    id="APACHE-OPEN-FORWARD-PROXY", server="apache", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.CRITICAL,
    title="Forward proxy (ProxyRequests On) open to any client",
    description="`ProxyRequests On` is effective in the server that answers arbitrary hosts, "
    "mod_proxy and mod_proxy_http are loaded, and no `<Proxy>` access control denies an outside "
    "client. `<Directory />` and `<Location />` denies do not apply to proxy requests.",
    why="Anyone on the Internet can relay HTTP through the server, including to port 25 of any "
    "mail server (`GET http://mx.victim:25/`). This is how the server ends up on blocklists.",
    fix=_FIX_ACL, reference=DOCS + "mod_proxy.html#access",
    bad=_HEADER + "ProxyRequests On\n",
    good=_HEADER + 'ProxyRequests On\n<Proxy "*">\n    Require ip 192.0.2.0/24\n</Proxy>\n',
)
OPEN_CONNECT = Rule(
    id="APACHE-OPEN-CONNECT-PROXY", server="apache", category=Category.OPEN_CONNECT_PROXY,
    severity=Severity.CRITICAL,
    title="CONNECT tunnels (mod_proxy_connect) open to any client",
    description="mod_proxy_connect is loaded, `ProxyRequests On` is effective, and the access "
    "control grants CONNECT to an outside client.",
    why="Any client gets a raw TCP tunnel to the ports AllowCONNECT permits (443 and 563 by "
    "default, more if configured): TLS-wrapped abuse, and SMTP if AllowCONNECT lists it.",
    fix=_FIX_ACL, reference=DOCS + "mod_proxy_connect.html",
    bad=_HEADER + "ProxyRequests On\n",
    good=_HEADER + "ProxyRequests On\n<Proxy *>\n    Require local\n</Proxy>\n",
)
CONNECT_NOT_COVERED = Rule(
    id="APACHE-CONNECT-NOT-COVERED", server="apache", category=Category.OPEN_CONNECT_PROXY,
    severity=Severity.CRITICAL,
    title="Proxy ACL covers HTTP URLs but not CONNECT",
    description="The only access control matches `http://` URLs (`<Proxy \"http://*\">`, "
    "`<ProxyMatch \"^http\">`) or only some methods (`<Limit GET POST>`), so CONNECT requests, "
    "whose URL is just `host:port`, are not restricted.",
    why="The admin believes the proxy is closed, but CONNECT tunnels stay open to everyone.",
    fix='Use `<Proxy "*">` (matches every scheme and CONNECT) and never `<Limit>` for access '
    'control:\n<Proxy "*">\n    Require ip 192.0.2.0/24\n</Proxy>',
    reference=DOCS + "mod_proxy.html#access",
    bad=_HEADER + 'ProxyRequests On\n<Proxy "http://*">\n    Require ip 192.0.2.0/24\n</Proxy>\n',
    good=_HEADER + 'ProxyRequests On\n<Proxy "*">\n    Require ip 192.0.2.0/24\n</Proxy>\n',
)
CONNECT_SMTP = Rule(
    id="APACHE-CONNECT-SMTP-PORT", server="apache", category=Category.SMTP_VIA_PROXY,
    severity=Severity.CRITICAL,
    title="AllowCONNECT lets proxy clients tunnel to SMTP ports",
    description="mod_proxy_connect is loaded, `ProxyRequests On`, and `AllowCONNECT` lists 25, "
    "465 or 587 (or a range covering them).",
    why="`CONNECT mx.victim:25` gives a raw SMTP session to any mail server: the exact spam "
    "route of the seed incident. Critical when strangers may use the proxy, medium otherwise.",
    fix="Drop the SMTP ports: `AllowCONNECT 443`.",
    reference=DOCS + "mod_proxy_connect.html#allowconnect",
    bad=_HEADER + "ProxyRequests On\nAllowCONNECT 25 443\n",
    good=_HEADER + "ProxyRequests On\nAllowCONNECT 443\n<Proxy *>\n    Require ip 10.0.0.0/8\n"
    "</Proxy>\n",
)
HTTP_TO_SMTP = Rule(
    id="APACHE-PROXY-HTTP-TO-SMTP", server="apache", category=Category.SMTP_VIA_PROXY,
    severity=Severity.CRITICAL,
    title="Open HTTP proxying reaches SMTP ports (GET http://mx:25/)",
    description="An open HTTP proxy path (forward proxy, or a rewrite/ProxyPassMatch whose "
    "target comes from the request) lets the client choose the port, so an absolute-URI "
    "request to `http://mx.victim:25/` opens a TCP connection to port 25 even when CONNECT to "
    "25 is refused.",
    why="Mail servers that tolerate the HTTP request lines receive the spammer's SMTP commands "
    "from this server's address.",
    fix=_FIX_ACL, reference=DOCS + "mod_proxy.html#proxyrequests",
    bad=_HEADER + "ProxyRequests On\n",
    good=_HEADER + "ProxyRequests Off\n",
)
ACL_OVERRIDDEN = Rule(
    id="APACHE-PROXY-ACL-OVERRIDDEN", server="apache", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.CRITICAL,
    title="Proxy ACL overridden by a later section that grants",
    description="A restricting `<Proxy>` section is followed by a `<Proxy>`, `<ProxyMatch>`, "
    "`<LocationMatch>` or `<If>` that matches proxy URLs and grants access (with the default "
    "`AuthMerging Off` the last Require set wins), or `Satisfy Any` lets one side grant.",
    why="The ACL the admin wrote is not the one httpd applies.",
    fix='Put one authoritative `<Proxy "*">` block with `Require ip <your networks>` last and '
    'remove the granting section (or use `AuthMerging And`).',
    reference="https://httpd.apache.org/docs/2.4/sections.html#merging",
    bad=_HEADER + 'ProxyRequests On\n<Proxy "*">\n    Require ip 192.0.2.0/24\n</Proxy>\n'
    '<Proxy "*">\n    Require all granted\n</Proxy>\n',
    good=_HEADER + 'ProxyRequests On\n<Proxy "*">\n    Require all granted\n</Proxy>\n'
    '<Proxy "*">\n    Require ip 192.0.2.0/24\n</Proxy>\n',
)
ORDER_DEFAULT_ALLOW = Rule(
    id="APACHE-22-ORDER-DEFAULT-ALLOW", server="apache", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.CRITICAL,
    title="2.2-style proxy ACL ends on its default allow",
    description="`Allow from …` without `Order` (the default is `Deny,Allow`), or `Order "
    "Deny,Allow` without `Deny from all`: clients that match no line are allowed.",
    why="The ACL looks restrictive but lets every stranger through.",
    fix="Order deny,allow\nDeny from all\nAllow from 192.0.2.0/24\n(or migrate to 2.4 "
    "`Require ip 192.0.2.0/24`)",
    reference="https://httpd.apache.org/docs/2.2/mod/mod_authz_host.html#order",
    bad=_HEADER + 'ProxyRequests On\n<Proxy "*">\n    Allow from 192.0.2.0/24\n</Proxy>\n',
    good=_HEADER + 'ProxyRequests On\n<Proxy "*">\n    Order deny,allow\n    Deny from all\n'
    '    Allow from 192.0.2.0/24\n</Proxy>\n',
)
ACL_OTHER_VHOST = Rule(
    id="APACHE-ACL-IN-OTHER-VHOST", server="apache", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.CRITICAL,
    title="Proxy ACL lives in another virtual host and protects nothing here",
    description="`ProxyRequests On` is effective where strangers land (the default vhost or the "
    "main server) but the `<Proxy>` access control is only inside a different `<VirtualHost>`.",
    why="Sections in one vhost do not apply to requests answered by another.",
    fix='Move the `<Proxy "*">` block next to `ProxyRequests On`, or into the main server '
    'config (outside every `<VirtualHost>`) so all vhosts inherit it.',
    reference=DOCS + "mod_proxy.html#proxy",
    bad=_HEADER + "ProxyRequests On\n<VirtualHost *:8080>\n    ServerName a.example\n"
    "</VirtualHost>\n<VirtualHost *:8080>\n    ServerName b.example\n    <Proxy \"*\">\n"
    "        Require ip 192.0.2.0/24\n    </Proxy>\n</VirtualHost>\n",
    good=_HEADER + "ProxyRequests On\n<Proxy \"*\">\n    Require ip 192.0.2.0/24\n</Proxy>\n"
    "<VirtualHost *:8080>\n    ServerName a.example\n</VirtualHost>\n",
)
REWRITE_HOST = Rule(
    id="APACHE-REWRITE-PROXY-REQUEST-HOST", server="apache", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.CRITICAL,
    title="RewriteRule [P] proxies to a host taken from the request",
    description="A `RewriteRule … [P]` whose target scheme/host/port comes from the request "
    "(`%{HTTP_HOST}`, `%{HTTP:…}`, `%{QUERY_STRING}`, a back-reference) without an anchored "
    "whitelist. Works even with `ProxyRequests Off`.",
    why="Any client picks the destination (and with HTTP_HOST the port: `Host: mx.victim:25`).",
    fix='Proxy to a fixed backend: RewriteRule "^/(.*)" "http://backend.internal/$1" [P]\n'
    'or guard it with an anchored whitelist: RewriteCond %{HTTP_HOST} ^(www\\.)?example\\.com$',
    reference="https://httpd.apache.org/docs/2.4/rewrite/flags.html#flag_p",
    bad=_HEADER + "LoadModule rewrite_module /usr/lib/apache2/modules/mod_rewrite.so\n"
    'RewriteEngine On\nRewriteRule "^/(.*)$" "http://%{HTTP_HOST}/$1" [P]\n',
    good=_HEADER + "LoadModule rewrite_module /usr/lib/apache2/modules/mod_rewrite.so\n"
    'RewriteEngine On\nRewriteRule "^/(.*)$" "http://backend.internal/$1" [P]\n',
)
PROXYPASS_DYNAMIC = Rule(
    id="APACHE-PROXYPASS-DYNAMIC-HOST", server="apache", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.CRITICAL,
    title="ProxyPassMatch backend host taken from the request",
    description="`ProxyPassMatch` whose backend URL's host or port contains a `$N` capture from "
    "the request path (or `ProxyPass … interpolate` with a request-derived `${VAR}`).",
    why="`GET /p/mx.victim:25/x` makes the server connect wherever the client says.",
    fix="Use a fixed backend host; map allowed hosts explicitly.",
    reference=DOCS + "mod_proxy.html#proxypassmatch",
    bad=_HEADER + 'ProxyPassMatch "^/p/([^/]+)/(.*)$" "http://$1/$2"\n',
    good=_HEADER + 'ProxyPassMatch "^/p/(.*)$" "http://backend.internal/$1"\n',
)
ACL_BROAD = Rule(
    id="APACHE-PROXY-ACL-BROAD", server="apache", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.MEDIUM,
    title="Forward proxy restricted, but to a very broad public range",
    description="The proxy ACL grants a public address range wider than a /16 (IPv4) or /32 "
    "(IPv6): many outside clients, not just the admin's networks.",
    why="An ACL over a whole provider's space is nearly as open as none.",
    fix="List only the networks that should use the proxy: `Require ip 192.0.2.0/24`.",
    reference=DOCS + "mod_authz_host.html#requiredirectives",
    bad=_HEADER + 'ProxyRequests On\n<Proxy "*">\n    Require ip 100.0.0.0/6\n</Proxy>\n',
    good=_HEADER + 'ProxyRequests On\n<Proxy "*">\n    Require ip 192.0.2.0/24\n</Proxy>\n',
)
NONDEFAULT_VHOST = Rule(
    id="APACHE-PROXY-NONDEFAULT-VHOST", server="apache", category=Category.HARDENING,
    severity=Severity.LOW,
    title="ProxyRequests On only in a non-default name-based vhost",
    description="Forward proxying is enabled in a name-based vhost that is not the default for "
    "its address: strangers' arbitrary-host requests land in the default vhost, so this proxies "
    "only to the vhost's own names today.",
    why="One reordering of the vhost files (or a wildcard ServerAlias) makes it an open proxy.",
    fix="`ProxyRequests Off` unless needed; else a dedicated IP:port vhost with "
    '`<Proxy "*"> Require ip …`.',
    reference="https://httpd.apache.org/docs/2.4/vhosts/details.html",
    bad=_HEADER + "<VirtualHost *:8080>\n    ServerName a.example\n</VirtualHost>\n"
    "<VirtualHost *:8080>\n    ServerName b.example\n    ProxyRequests On\n</VirtualHost>\n",
    good=_HEADER + "<VirtualHost *:8080>\n    ServerName a.example\n</VirtualHost>\n"
    "<VirtualHost *:8080>\n    ServerName b.example\n</VirtualHost>\n",
)
PROXYVIA = Rule(
    id="APACHE-PROXYVIA", server="apache", category=Category.HARDENING, severity=Severity.INFO,
    title="Forward proxy does not add Via headers",
    description="An intentional (restricted) forward proxy runs with `ProxyVia Off` (the "
    "default) or `Block`, so relayed traffic carries no trace of this proxy downstream.",
    why="When the proxy is abused, receivers cannot tell the traffic came through it.",
    fix="`ProxyVia On`", reference=DOCS + "mod_proxy.html#proxyvia",
    bad=_HEADER + 'ProxyRequests On\n<Proxy "*">\n    Require ip 192.0.2.0/24\n</Proxy>\n',
    good=_HEADER + 'ProxyRequests On\nProxyVia On\n<Proxy "*">\n    Require ip 192.0.2.0/24\n'
    '</Proxy>\n',
)
MODULES_UNUSED = Rule(
    id="APACHE-PROXY-MODULES-UNUSED", server="apache", category=Category.HARDENING,
    severity=Severity.INFO,
    title="mod_proxy loaded but never used",
    description="mod_proxy (and its scheme modules) are enabled but nothing uses them: no "
    "`ProxyRequests On`, `ProxyPass*`, `RewriteRule [P]` or `SetHandler proxy:`.",
    why="One uncommented `ProxyRequests On` away from an open proxy.",
    fix="`a2dismod proxy_connect proxy_http proxy` (Debian) or remove the LoadModule lines.",
    reference="https://manpages.debian.org/bookworm/apache2/a2enmod.8.en.html",
    bad=_HEADER,
    good="ServerRoot /etc/apache2\nServerName www.example.com\nErrorLog /dev/null\n"
    "LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\nListen 8080\n",
)

RULES: tuple[Rule, ...] = (
    OPEN_FORWARD_PROXY, OPEN_CONNECT, CONNECT_NOT_COVERED, CONNECT_SMTP, HTTP_TO_SMTP,
    ACL_OVERRIDDEN, ORDER_DEFAULT_ALLOW, ACL_OTHER_VHOST, REWRITE_HOST, PROXYPASS_DYNAMIC,
    ACL_BROAD, NONDEFAULT_VHOST, PROXYVIA, MODULES_UNUSED,
)

# Addresses we pretend a stranger comes from; the first one no ACL mentions is used.
_STRANGERS = ("203.0.113.77", "198.51.100.77", "192.0.2.77", "45.33.32.156", "185.199.108.9",
              "31.13.64.35", "151.101.1.69")


# --------------------------------------------------------------------------- server model

@dataclass
class Server:
    """The main server or one <VirtualHost>, with the directives and sections of its scope."""

    node: Node | None
    directives: list[Node]
    sections: list[Node]
    addresses: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        if self.node is None:
            return "the main server"
        name = f" {self.names[0]}" if self.names else ""
        where = f"{Path(self.node.path).name}:{self.node.line}"
        return f"vhost {' '.join(self.addresses)}{name} ({where})"

    def last(self, key: str) -> Node | None:
        found = [n for n in self.directives if n.key == key]
        return found[-1] if found else None


def _split_scope(nodes: list[Node]) -> tuple[list[Node], list[Node]]:
    directives = [n for n in nodes if not n.is_section]
    sections = [n for n in nodes if n.is_section and n.key != "virtualhost"]
    return directives, sections


def build_servers(cfg: ApacheConfig) -> tuple[Server, list[Server]]:
    """The main server and every vhost, in config order."""
    d, s = _split_scope(cfg.nodes)
    main = Server(None, d, s)
    vhosts: list[Server] = []
    for vh in (n for n in cfg.nodes if n.is_section and n.key == "virtualhost"):
        vd, vs = _split_scope(vh.children)
        names = tuple(a for n in vd if n.key in ("servername", "serveralias") for a in n.args)
        vhosts.append(Server(vh, vd, vs, tuple(a.lower() for a in vh.args), names))
    return main, vhosts


def setting(server: Server, main: Server, key: str) -> Node | None:
    """A server-level directive: the vhost's own value, else inherited from the main server."""
    return server.last(key) or (main.last(key) if server is not main else None)


@dataclass
class Entry:
    """A server that answers requests for arbitrary hosts (where a stranger's request lands)."""

    server: Server
    why: str


def _port_of(address: str) -> str | None:
    if address.startswith("["):
        _, _, rest = address.partition("]")
        return rest[1:] if rest.startswith(":") else None
    host, sep, port = address.rpartition(":")
    return port if sep and host else None


def entry_points(cfg: ApacheConfig, main: Server, vhosts: list[Server]) -> list[Entry]:
    """Default vhost per address (first listed), the main server where no vhost matches."""
    entries: list[Entry] = []
    groups: dict[str, Server] = {}
    for vh in vhosts:
        for addr in vh.addresses:
            groups.setdefault(addr, vh)
    covered = {_port_of(a) for a in groups}
    listens = [n.args[0] for n in main.directives if n.key == "listen" and n.args]
    listen_ports = {_port_of(a) or a for a in listens}
    if not vhosts:
        entries.append(Entry(main, "no <VirtualHost>: the main server answers every request"))
    elif None not in covered and listen_ports - covered:  # `<VirtualHost *>` covers every port
        entries.append(Entry(main, "the main server answers on Listen ports no vhost covers"))
    seen: set[int] = set()
    for addr, vh in groups.items():
        if id(vh) not in seen:
            seen.add(id(vh))
            entries.append(Entry(vh, f"first <VirtualHost> for {addr}: the default for requests "
                                 "naming any other host"))
    for vh in vhosts:
        if id(vh) not in seen and any("*" in n for n in vh.names[1:] + vh.names[:1]):
            seen.add(id(vh))
            entries.append(Entry(vh, "a wildcard ServerName/ServerAlias matches arbitrary hosts"))
    return entries


# --------------------------------------------------------------------------- the checks

def pick_outside_client(cfg: ApacheConfig, options: AuditOptions) -> IPAddress:
    """An Internet address no ACL names (so 'open' means open to strangers), or the user's."""
    if options.outside_client is not None:
        return options.outside_client
    mentioned = []
    for n in (x for top in cfg.nodes for x in top.walk()):
        if n.key in ("require", "allow", "deny"):
            for a in n.args:
                net = parse_host_spec(a)
                if net is not None and net.prefixlen >= (8 if net.version == 4 else 16):
                    mentioned.append(net)
    for cand in _STRANGERS:
        ip = ipaddress.ip_address(cand)
        if not any(ip.version == n.version and ip in n for n in mentioned):
            return ip
    return ipaddress.ip_address(_STRANGERS[0])


def _proxy_sections(server: Server, main: Server) -> tuple[list[Node], list[Node], list[Node]]:
    order = [main] if server is main else [main, server]
    proxies = [s for sv in order for s in sv.sections if s.key in ("proxy", "proxymatch")]
    locations = [s for sv in order for s in sv.sections
                 if s.key in ("location", "locationmatch")]
    ifs = [s for sv in order for s in sv.sections if s.key in ("if", "elseif", "else")]
    return proxies, locations, ifs


def decide_for(server: Server, main: Server, request: ProxyRequest, client: IPAddress,
               cfg: ApacheConfig) -> Decision:
    """Access decision for a proxied request answered by `server`."""
    proxies, locations, ifs = _proxy_sections(server, main)
    applied = [s for s in proxies if proxy_section_matches(s, request.url)]
    applied += [s for s in locations if location_section_matches(s, request.url)]
    return decide(applied, ifs, client, request,
                  compat_loaded=cfg.has_module("access_compat_module", "mod_access_compat.c"))


def _allowconnect_ports(node: Node | None) -> list[tuple[int, int]]:
    if node is None:
        return [(443, 443), (563, 563)]
    out: list[tuple[int, int]] = []
    for a in node.args:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", a)
        if m:
            out.append((int(m.group(1)), int(m.group(2) or m.group(1))))
    return out


def _port_allowed(ranges: list[tuple[int, int]], port: int) -> bool:
    return any(lo <= port <= hi for lo, hi in ranges)


def _node_location(node: Node | None, cfg: ApacheConfig) -> Location:
    if node is None:
        return Location(path=str(cfg.root_file))
    return Location(path=node.path, line=node.line)


def _evidence(title: str, nodes: list[Node]) -> Evidence:
    uniq: list[Node] = []
    for n in nodes:
        if n not in uniq:
            uniq.append(n)
    return Evidence("config", f"{title}\n{excerpt(uniq)}" if uniq else title,
                    Location(path=uniq[0].path, line=uniq[0].line) if uniq else None)


def _acl_edits(cfg: ApacheConfig, enabled_by: Node | None) -> list[Edit]:
    """Least change that closes the proxy: `ProxyRequests Off` on the line that turns it on."""
    if enabled_by is None or enabled_by.key != "proxyrequests":
        return []
    indent = re.match(r"\s*", _line_text(enabled_by)).group(0)  # type: ignore[union-attr]
    return [Edit(enabled_by.path, enabled_by.line, (_line_text(enabled_by),),
                 (f"{indent}ProxyRequests Off",))]


def _line_text(node: Node) -> str:
    lines = lines_of(node.path) or []
    return lines[node.line - 1] if 0 < node.line <= len(lines) else node.render()


@dataclass
class _Ctx:
    cfg: ApacheConfig
    main: Server
    vhosts: list[Server]
    client: IPAddress
    findings: list[Finding] = field(default_factory=list)
    proxy_paths: list[dict[str, Any]] = field(default_factory=list)


def check(cfg: ApacheConfig, options: AuditOptions) -> tuple[list[Finding], dict[str, Any]]:
    """Every Apache finding for this config, and facts for cross-service rules."""
    main, vhosts = build_servers(cfg)
    ctx = _Ctx(cfg, main, vhosts, pick_outside_client(cfg, options))
    proxy_http = cfg.has_module("proxy_module", "mod_proxy.c") and \
        cfg.has_module("proxy_http_module", "mod_proxy_http.c")
    proxy_connect = cfg.has_module("proxy_module", "mod_proxy.c") and \
        cfg.has_module("proxy_connect_module", "mod_proxy_connect.c")
    exposed = _exposure(main, ctx.client)
    for entry in entry_points(cfg, main, vhosts):
        before = len(ctx.findings)
        _check_forward_proxy(ctx, entry, proxy_http, proxy_connect, exposed)
        if exposed and _loopback_vhost(entry.server, ctx.client):
            ctx.findings[before:] = [_downgrade(f, _LOOPBACK_VHOST_NOTE)
                                     for f in ctx.findings[before:]]
    _check_nondefault_vhosts(ctx, entry_points(cfg, main, vhosts))
    if proxy_http:
        ctx.findings += _check_rewrite(ctx)
        ctx.findings += _check_proxypassmatch(ctx)
    ctx.findings += _check_unused(ctx)
    findings = ctx.findings
    if not exposed:
        note = Evidence("note", "httpd listens only on loopback addresses: an outside client "
                        "cannot reach it directly, but local users and web applications can.")
        findings = [_downgrade(f, note) for f in findings]
    facts = {"proxy_paths": ctx.proxy_paths, "outside_client": str(ctx.client)}
    return findings, facts


def _downgrade(f: Finding, note: Evidence) -> Finding:
    if f.severity <= Severity.LOW:
        return f
    return replace(f, severity=Severity.LOW, title=f.title + " (loopback only)",
                   evidence=(*f.evidence, note))


_LOOPBACK_VHOST_NOTE = Evidence(
    "note", "this <VirtualHost> is bound to loopback addresses only: an outside client's "
    "connection never lands in it, but local users and web applications can use it.")


def _loopback_vhost(server: Server, client: IPAddress) -> bool:
    """A vhost whose every address is loopback (`<VirtualHost 127.0.0.1:3128>`): only a
    connection to a loopback address, i.e. from this host, is matched to it."""
    if client.is_loopback or server.node is None or not server.addresses:
        return False
    for addr in server.addresses:
        host = addr.rsplit(":", 1)[0] if _port_of(addr) is not None else addr
        host = host.strip("[]")
        if host != "localhost":
            try:
                if not ipaddress.ip_address(host).is_loopback:
                    return False
            except ValueError:
                return False
    return True


def _exposure(main: Server, client: IPAddress) -> bool:
    if client.is_loopback:
        return True
    listens = [n.args[0] for n in main.directives if n.key == "listen" and n.args]
    if not listens:
        return True
    for addr in listens:
        host = addr.rsplit(":", 1)[0].strip("[]") if ":" in addr and not addr.isdigit() else ""
        try:
            if not host or not ipaddress.ip_address(host).is_loopback:
                return True
        except ValueError:
            return True
    return False


def _check_forward_proxy(ctx: _Ctx, entry: Entry, proxy_http: bool, proxy_connect: bool,
                         exposed: bool) -> None:
    cfg, main, server = ctx.cfg, ctx.main, entry.server
    enabled_by = setting(server, main, "proxyrequests")
    if enabled_by is None or not enabled_by.args or enabled_by.args[0].lower() != "on":
        return
    if not (proxy_http or proxy_connect):
        return
    modules = [cfg.module_nodes[m] for m in ("proxy_module", "proxy_http_module",
                                             "proxy_connect_module") if m in cfg.module_nodes]
    block = setting(server, main, "proxyblock")
    if block is not None and "*" in block.args:
        return
    client = ctx.client
    head = [enabled_by, *modules]
    where = f"{server.label} ({entry.why})"
    get = ProxyRequest("GET", f"http://{VICTIM}/", 80)
    get25 = ProxyRequest("GET", f"http://{VICTIM}:25/", 25)
    d_get = decide_for(server, main, get, client, cfg) if proxy_http else None
    d_get25 = decide_for(server, main, get25, client, cfg) if proxy_http else None
    allowconnect = setting(server, main, "allowconnect")
    ranges = _allowconnect_ports(allowconnect)
    connect_decisions: dict[int, Decision] = {}
    if proxy_connect:
        for port in (443, *SMTP_PORTS):
            req = ProxyRequest("CONNECT", f"{VICTIM}:{port}", port)
            connect_decisions[port] = decide_for(server, main, req, client, cfg)
    other_vhost_acl = [s for vh in ctx.vhosts if vh is not server for s in vh.sections
                       if s.key in ("proxy", "proxymatch") and has_authz(s)]
    granted_ports = {p for p, d in connect_decisions.items()
                     if d.granted is not False and _port_allowed(ranges, p)}
    http_granted = d_get is not None and d_get.granted is not False
    _publish(ctx, [enabled_by, *modules], "forward-proxy",
             open_=http_granted or bool(granted_ports),
             reach=(set(ALL_PORTS) if http_granted else set()) | granted_ports,
             tunnel=granted_ports,
             # clients the ACL does admit can still point the proxy at 127.0.0.1
             loopback=set(ALL_PORTS) if d_get is not None else
             {p for p in ALL_PORTS if _port_allowed(ranges, p)})
    confidence = Confidence.LIKELY
    http_open = d_get is not None and d_get.granted is not False
    if d_get is not None and http_open:
        rule, text = _diagnose(d_get, other_vhost_acl)
        conf = confidence if d_get.granted else Confidence.POSSIBLE
        ctx.findings.append(rule.finding(
            f"Open forward proxy in {server.label}: relays HTTP to any host for {client}",
            location=_node_location(enabled_by, cfg), confidence=conf,
            evidence=[_evidence(f"Forward proxying is on in {where}:", head),
                      _evidence(f"Access decision for `GET http://{VICTIM}/` from {client}: "
                                f"{text}.", d_get.deciding + other_vhost_acl),
                      Evidence("note", "<Directory> sections (e.g. Debian's `<Directory /> "
                               "Require all denied`) never apply to proxy requests.")],
            edits=_acl_edits(cfg, enabled_by)))
    d443 = connect_decisions.get(443)
    connect_open = d443 is not None and d443.granted is not False and _port_allowed(ranges, 443)
    if d443 is not None and connect_open:
        not_covered = d_get is not None and d_get.granted is False
        rule = CONNECT_NOT_COVERED if not_covered else OPEN_CONNECT
        ctx.findings.append(rule.finding(
            f"Open CONNECT proxy in {server.label}: tunnels to any host for {client}",
            location=_node_location(enabled_by, cfg),
            confidence=confidence if d443.granted else Confidence.POSSIBLE,
            evidence=[_evidence(f"Forward proxying with mod_proxy_connect in {where}:", head),
                      _evidence(f"Access decision for `CONNECT {VICTIM}:443` from {client}: "
                                f"{d443.explanation}.", d443.deciding + d443.sections),
                      _evidence(f"AllowCONNECT (ports a tunnel may reach): "
                                f"{_ranges_text(ranges)}",
                                [allowconnect] if allowconnect else [])],
            edits=_acl_edits(cfg, enabled_by)))
    smtp_connect = [p for p in SMTP_PORTS if _port_allowed(ranges, p) and p in connect_decisions]
    smtp_connect_open = [p for p in smtp_connect if connect_decisions[p].granted is not False]
    if smtp_connect_open or (smtp_connect and allowconnect is not None):
        open_ = bool(smtp_connect_open)
        paths = [f"CONNECT {VICTIM}:{p}" for p in smtp_connect_open]
        if d_get25 is not None and d_get25.granted:
            paths.append(f"GET http://{VICTIM}:25/")
        ctx.findings.append(CONNECT_SMTP.finding(
            (f"SMTP reachable through the proxy in {server.label}: " + ", ".join(paths)) if open_
            else f"AllowCONNECT lists SMTP ports ({', '.join(map(str, smtp_connect))}) for the "
            "clients the proxy trusts",
            location=_node_location(allowconnect or enabled_by, cfg),
            severity=Severity.CRITICAL if open_ else Severity.MEDIUM,
            confidence=confidence,
            evidence=[_evidence("AllowCONNECT includes SMTP ports:",
                                [n for n in (allowconnect, enabled_by) if n])],
            fix="AllowCONNECT 443" + ("" if not open_ else "\n\n" + _FIX_ACL),
            edits=[Edit(allowconnect.path, allowconnect.line, (_line_text(allowconnect),),
                        (re.sub(r"AllowCONNECT.*", "AllowCONNECT 443",
                                _line_text(allowconnect), flags=re.IGNORECASE),))]
            if allowconnect else []))
    elif d_get25 is not None and d_get25.granted:
        ctx.findings.append(HTTP_TO_SMTP.finding(
            f"SMTP reachable through the proxy in {server.label}: `GET http://mx:25/` "
            f"works for {client}",
            location=_node_location(enabled_by, cfg), confidence=confidence,
            evidence=[_evidence(f"Open HTTP forward proxy in {where}; an absolute-URI request "
                                f"names its port, so `GET http://{VICTIM}:25/` opens a TCP "
                                "connection to port 25 (CONNECT is not needed):", head)],
            edits=_acl_edits(cfg, enabled_by)))
    if d_get is not None and d_get.granted is False:
        _check_restricted(ctx, server, enabled_by, d_get, where)


def _publish(ctx: _Ctx, nodes: list[Node], kind: str, *, open_: bool, reach: set[int],
             tunnel: set[int], loopback: set[int]) -> None:
    """Record a proxy path for cross-service rules, one fact per Listen address."""
    listens = [n.args[0] for n in ctx.main.directives if n.key == "listen" and n.args] or ["*:80"]
    for listen in listens:
        fact = proxy_path("apache", str(ctx.cfg.root_file),
                          listen if ":" in listen else f"*:{listen}",
                          open_to_outside=open_, reaches_ports=reach, loopback_ports=loopback,
                          clients="outside" if open_ else "trusted", tunnel_ports=tunnel)
        fact["kind"] = kind
        # raw bytes reach an SMTP port only through CONNECT to an allowed SMTP port; plain
        # HTTP proxying sends request lines an MTA (Postfix) rejects as bogus commands
        fact["tunnel"] = bool(tunnel & set(SMTP_PORTS))
        fact["evidence"] = [{"path": n.path, "line": n.line, "text": n.render()} for n in nodes]
        ctx.proxy_paths.append(fact)


def _ranges_text(ranges: list[tuple[int, int]]) -> str:
    return " ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def _diagnose(d: Decision, other_vhost_acl: list[Node]) -> tuple[Rule, str]:
    if d.why == "no-acl" and other_vhost_acl:
        return ACL_OTHER_VHOST, ("the only <Proxy> ACL is in another virtual host "
                                 f"({other_vhost_acl[0].where})")
    if d.why in ("overridden", "satisfy-any"):
        return ACL_OVERRIDDEN, d.explanation
    if d.why == "default-allow":
        return ORDER_DEFAULT_ALLOW, d.explanation
    return OPEN_FORWARD_PROXY, d.explanation


def _check_restricted(ctx: _Ctx, server: Server, enabled_by: Node, d: Decision,
                      where: str) -> None:
    """Weaker findings on an intentional, restricted forward proxy."""
    broad = []
    for n in d.sections:
        for x in n.walk():
            if x.key in ("require", "allow") and x.args and x.args[0].lower() in ("ip", "from"):
                for a in x.args[1:]:
                    net = parse_host_spec(a)
                    if net is not None and net.is_global and net.prefixlen < (
                            16 if net.version == 4 else 32):
                        broad.append((x, net))
    for node, net in broad:
        ctx.findings.append(ACL_BROAD.finding(
            f"The forward proxy in {server.label} admits all of {net} "
            f"({net.num_addresses:,} public addresses)",
            location=Location(path=node.path, line=node.line), confidence=Confidence.LIKELY,
            evidence=[_evidence("Proxy ACL line:", [node, enabled_by])]))
    via = setting(server, ctx.main, "proxyvia")
    if via is None or (via.args[:1] and via.args[0].lower() in ("off", "block")):
        ctx.findings.append(PROXYVIA.finding(
            f"The forward proxy in {server.label} adds no Via header",
            location=_node_location(via or enabled_by, ctx.cfg), confidence=Confidence.LIKELY,
            evidence=[_evidence("ProxyVia is Off (the default) or Block:",
                                [n for n in (via, enabled_by) if n])]))
    del where


def _check_nondefault_vhosts(ctx: _Ctx, entries: list[Entry]) -> None:
    entry_servers = {id(e.server) for e in entries}
    for vh in ctx.vhosts:
        own = vh.last("proxyrequests")
        if id(vh) in entry_servers or own is None or (own.args[:1] != ("On",) and \
                (not own.args or own.args[0].lower() != "on")):
            continue
        ctx.findings.append(NONDEFAULT_VHOST.finding(
            f"ProxyRequests On in {vh.label}, which only answers its own names today",
            location=Location(path=own.path, line=own.line), confidence=Confidence.LIKELY,
            evidence=[_evidence("Forward proxying enabled in a non-default vhost:",
                                [vh.node, own] if vh.node else [own])]))


_REQUEST_VARS = re.compile(r"%\{(HTTP_HOST|HTTP:[^}]*|QUERY_STRING|REQUEST_URI|THE_REQUEST|"
                           r"ENV:[^}]*|SERVER_NAME|HTTP_[A-Z_]+|REQUEST_FILENAME)\}|[$%]\d",
                           re.IGNORECASE)


def _is_whitelist(pattern: str) -> bool:
    """An anchored literal alternation like `^(www\\.)?example\\.com$`."""
    if not (pattern.startswith("^") and pattern.endswith("$")):
        return False
    body = re.sub(r"\\.", "", pattern[1:-1])
    return not re.search(r"[.\[]|\\[SwdW]", body)


def _scopes(ctx: _Ctx) -> Iterator[tuple[Server, list[Node]]]:
    for sv in [ctx.main, *ctx.vhosts]:
        yield sv, sv.directives
        for sec in sv.sections:
            if sec.key in ("directory", "directorymatch", "location", "locationmatch"):
                yield sv, [c for c in sec.children if not c.is_section]


def _check_rewrite(ctx: _Ctx) -> list[Finding]:
    cfg = ctx.cfg
    if not cfg.has_module("rewrite_module", "mod_rewrite.c"):
        return []
    out: list[Finding] = []
    for server, nodes in _scopes(ctx):
        engine = [n for n in nodes if n.key == "rewriteengine"]
        if not engine or (engine[-1].args[:1] and engine[-1].args[0].lower() != "on"):
            continue
        conds: list[Node] = []
        for n in nodes:
            if n.key == "rewritecond":
                conds.append(n)
                continue
            if n.key != "rewriterule":
                continue
            rule_conds, conds = conds, []
            if len(n.args) < 3 or not re.search(r"(^|[\[,])\s*(P|proxy)\s*([],]|$)",
                                                n.args[2], re.IGNORECASE):
                continue
            finding = _rewrite_finding(ctx, server, n, rule_conds)
            if finding is not None:
                out.append(finding)
    return out


def _target_parts(target: str) -> tuple[str, str] | None:
    """(host[:port] part, whole) of a proxy target, or None for a local path."""
    m = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/]*)", target)
    if m:
        return m.group(1), target
    if target.startswith(("$", "%")):
        return target, target
    return None


def _port_pickable(hostport: str, conds: list[Node], rule_node: Node) -> bool:
    """Can the client put a `:port` into this host part? Only through a value that may hold a
    colon: `%{HTTP_HOST}` can, `%1` captured by `^([a-z.]+)\\.gw\\.example$` cannot."""
    for m in _REQUEST_VARS.finditer(hostport):
        ref = m.group(0)
        if not re.fullmatch(r"[$%]\d", ref):
            return True  # a whole header or URL: the client writes what it likes
        n = int(ref[1])
        sources = [rule_node.args[0]] if ref[0] == "$" else \
            [c.args[1] for c in conds if len(c.args) >= 2 and not c.args[1].startswith("!")]
        if not sources or any(regex_group_may_hold(src, n, ":") for src in sources):
            return True
    return False


def _rewrite_finding(ctx: _Ctx, server: Server, rule_node: Node,
                     conds: list[Node]) -> Finding | None:
    parts = _target_parts(rule_node.args[1])
    if parts is None:
        return None
    hostport, _ = parts
    if not _REQUEST_VARS.search(hostport):
        return None
    for c in conds:
        if len(c.args) >= 2 and re.search(r"HTTP_HOST|SERVER_NAME", c.args[0], re.IGNORECASE) \
                and not c.args[1].startswith("!") and _is_whitelist(c.args[1]) \
                and "$" not in re.sub(r"%\{[^}]*\}", "", hostport):
            return None
    port_fixed = re.search(r":\d+$", hostport) is not None or \
        not _port_pickable(hostport, conds, rule_node)
    d = decide_for(server, ctx.main, ProxyRequest("GET", f"http://{VICTIM}:25/", 25),
                   ctx.client, ctx.cfg)
    if d.granted is False:
        return None
    smtp = "" if port_fixed else " — the client also picks the port (`Host: mx.victim:25`)"
    ports = set() if port_fixed else set(ALL_PORTS)
    _publish(ctx, [*conds, rule_node], "http-host", open_=True, reach=ports, tunnel=set(),
             loopback=ports)
    if not port_fixed:
        ctx.findings.append(HTTP_TO_SMTP.finding(
            f"RewriteRule [P] at {rule_node.where} lets any client reach port 25 of any host",
            location=Location(path=rule_node.path, line=rule_node.line),
            evidence=[_evidence("Rewrite proxy target built from the request:",
                                [*conds, rule_node])], fix=REWRITE_HOST.fix))
    return REWRITE_HOST.finding(
        f"RewriteRule [P] in {server.label} proxies to a host the client chooses{smtp}",
        location=Location(path=rule_node.path, line=rule_node.line),
        severity=Severity.HIGH if port_fixed else Severity.CRITICAL,
        evidence=[_evidence("Rewrite proxy target built from the request (conditions before "
                            "it, then the rule):", [*conds, rule_node])])


def _check_proxypassmatch(ctx: _Ctx) -> list[Finding]:
    out: list[Finding] = []
    for sv in [ctx.main, *ctx.vhosts]:
        candidates = [n for n in sv.directives if n.key in ("proxypassmatch", "proxypass")]
        for sec in sv.sections:
            candidates += [(c) for c in sec.children if c.key in ("proxypassmatch", "proxypass")]
        for n in candidates:
            args = [a for a in n.args if "=" not in a]
            target = args[1] if len(args) >= 2 else (args[0] if args else "")
            parts = _target_parts(target)
            if parts is None:
                continue
            hostport = parts[0]
            dynamic = (n.key == "proxypassmatch" and re.search(r"\$\d", hostport)) or (
                "interpolate" in (a.lower() for a in n.args) and "${" in hostport)
            if not dynamic:
                continue
            d = decide_for(sv, ctx.main, ProxyRequest("GET", f"http://{VICTIM}/", 80),
                           ctx.client, ctx.cfg)
            if d.granted is False:
                continue
            ports = set() if re.search(r":\d+$", hostport) else set(ALL_PORTS)
            _publish(ctx, [n], "path-host", open_=True, reach=ports, tunnel=set(),
                     loopback=ports)
            if not re.search(r":\d+$", hostport):
                out.append(HTTP_TO_SMTP.finding(
                    f"{n.name} at {n.where} lets any client reach port 25 of any host",
                    location=Location(path=n.path, line=n.line),
                    confidence=Confidence.LIKELY if n.key == "proxypassmatch"
                    else Confidence.POSSIBLE,
                    evidence=[_evidence("Backend URL whose host and port come from the "
                                        "request path:", [n])], fix=PROXYPASS_DYNAMIC.fix))
            out.append(PROXYPASS_DYNAMIC.finding(
                f"{n.name} at {n.where} connects to a host and port taken from the request",
                location=Location(path=n.path, line=n.line),
                confidence=Confidence.LIKELY if n.key == "proxypassmatch"
                else Confidence.POSSIBLE,
                evidence=[_evidence("Backend URL with a request-derived host:", [n])]))
    return out


def _check_unused(ctx: _Ctx) -> list[Finding]:
    cfg = ctx.cfg
    node = cfg.module_nodes.get("proxy_module")
    if node is None:
        return []
    used = any(_uses_proxy(n) for top in cfg.nodes for n in top.walk())
    if used:
        return []
    loaded = [cfg.module_nodes[m] for m in ("proxy_module", "proxy_http_module",
                                            "proxy_connect_module", "proxy_ftp_module")
              if m in cfg.module_nodes]
    return [MODULES_UNUSED.finding(
        "mod_proxy is loaded but nothing uses it",
        location=Location(path=node.path, line=node.line), confidence=Confidence.CONFIRMED,
        evidence=[_evidence("Proxy modules loaded:", loaded)])]


def _uses_proxy(n: Node) -> bool:
    """Does this directive make mod_proxy do anything?"""
    first = n.args[0].lower() if n.args else ""
    if n.key == "proxyrequests":
        return first == "on"
    if n.key == "rewriterule":
        return len(n.args) >= 3 and re.search(r"(^|[\[,])\s*(p|proxy)\s*([],]|$)",
                                              n.args[2].lower()) is not None
    if n.key == "sethandler":
        return first.startswith("proxy:")
    return n.key in ("proxypass", "proxypassmatch", "proxypassreverse", "proxyremote",
                     "proxyremotematch")
