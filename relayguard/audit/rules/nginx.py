"""nginx rules: proxy targets a stranger steers (Host header, request line, captures) and the
third-party CONNECT module. Evaluation lives in `relayguard.audit.nginx`; this module judges.
"""

from __future__ import annotations

from relayguard.audit.base import IPAddress
from relayguard.audit.nginx import SMTP_PORTS, ProxyPath, acl_edit, listener_reachable
from relayguard.catalogue import Rule
from relayguard.findings import Category, Confidence, Edit, Evidence, Finding, Location, Severity

_MINI = """\
pid nginx.pid;
error_log error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path tmp;
    proxy_temp_path tmp;
    server {{
        listen 8080 default_server;
        server_name _;
{body}
    }}
}}
"""

OPEN_PROXY_HTTP_HOST = Rule(
    id="NGINX-OPEN-PROXY-HTTP-HOST",
    server="nginx",
    category=Category.SMTP_VIA_PROXY,
    severity=Severity.CRITICAL,
    title="proxy_pass target taken from a client-controlled variable",
    description="A `proxy_pass` (or fastcgi/uwsgi/grpc/scgi_pass) whose host or port part is "
    "built from `$http_host`, another `$http_*` header, `$arg_*`, `$cookie_*`, the URI or a "
    "regex capture of it. The client names the host and port nginx connects to.",
    why="Anybody can make nginx connect to any host and port, including port 25 of a mail "
    "server: an open proxy for spam and SSRF. `$http_host` is open even in a non-default "
    "server, because `GET http://your.site/` selects the server while the `Host:` header feeds "
    "`$http_host`. Not having a `resolver` is no protection: IP literals need no DNS.",
    fix="Proxy to a fixed backend (`proxy_pass http://backend;` with an `upstream backend {}`), "
    "or whitelist hosts with a `map` whose default is a dead end; if a forward proxy is really "
    "wanted, restrict it with `allow <LAN>; deny all;`.",
    reference="https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_pass",
    also=(Category.OPEN_HTTP_PROXY,),
    bad=_MINI.format(body="        location / { proxy_pass http://$http_host$request_uri; }"),
    good=_MINI.format(body="        location / { proxy_pass http://127.0.8.11:8081; }"),
)

OPEN_PROXY_HOST = Rule(
    id="NGINX-OPEN-PROXY-HOST",
    server="nginx",
    category=Category.OPEN_HTTP_PROXY,
    severity=Severity.CRITICAL,
    title="proxy_pass to $host in a server that receives arbitrary hosts",
    description="`proxy_pass http://$host…` in the default server of its listen socket (or a "
    "server whose `server_name` regex matches anything). `$host` is the host from the request "
    "line, else the Host header: requests for hosts nobody configured land in this server.",
    why="Any client can use the server as an open HTTP proxy to third-party hosts (on the port "
    "written in the config: high; on any port, SMTP included, if the port is request-derived "
    "too: critical).",
    fix="Proxy to a fixed backend, or move the `$host` proxy into a server with literal "
    "`server_name`s and a separate default server that answers `return 444;`, or restrict "
    "it with `allow <LAN>; deny all;`.",
    reference="https://nginx.org/en/docs/http/ngx_http_core_module.html#var_host",
    bad=_MINI.format(body="        location / { proxy_pass http://$host$request_uri; }"),
    good=_MINI.format(body="        location / { proxy_pass http://$host$request_uri; }\n"
                      "        allow 127.0.0.1;\n        deny all;"),
)

PROXY_CONNECT = Rule(
    id="NGINX-PROXY-CONNECT",
    server="nginx",
    category=Category.OPEN_CONNECT_PROXY,
    severity=Severity.CRITICAL,
    title="proxy_connect (third-party CONNECT module) enabled without an ACL",
    description="The ngx_http_proxy_connect_module's `proxy_connect;` turns the server into a "
    "CONNECT tunnel; without `allow/deny` or auth at server level anyone may tunnel. "
    "`proxy_connect_allow all` or a list with 25/465/587 opens SMTP ports as well.",
    why="An open CONNECT proxy hides the real client behind this host (high); with SMTP ports "
    "it is exactly how spam gets relayed and the host blocklisted (critical).",
    fix="`allow <LAN>; deny all;` in that server and `proxy_connect_allow 443;`.",
    reference="https://github.com/chobits/ngx_http_proxy_connect_module#proxy_connect",
    bad=_MINI.format(body="        proxy_connect;\n        proxy_connect_allow all;"),
    good=_MINI.format(body="        proxy_connect;\n        proxy_connect_allow 443;\n"
                      "        allow 127.0.0.1;\n        deny all;"),
)

STREAM_SNI_PROXY = Rule(
    id="NGINX-STREAM-SNI-PROXY",
    server="nginx",
    category=Category.OPEN_CONNECT_PROXY,
    severity=Severity.CRITICAL,
    title="stream proxy_pass target taken from client data (SNI or other)",
    description="A `stream {}` server whose `proxy_pass` is built from a client-controlled "
    "variable (`$ssl_preread_server_name`, a map fed by it) with no `allow/deny`: the client "
    "chooses where the TCP connection goes.",
    why="A raw TCP relay that the client points at any host (TLS SNI names it); critical "
    "when the port is client-chosen too, since SMTP ports are then reachable.",
    fix="Whitelist with `map $ssl_preread_server_name $up { a.example 10.0.0.2:443; default "
    "127.0.0.1:1; }` and `allow <LAN>; deny all;`.",
    reference="https://nginx.org/en/docs/stream/ngx_stream_ssl_preread_module.html",
    bad="load_module /usr/lib/nginx/modules/ngx_stream_module.so;\npid nginx.pid;\n"
    "error_log error.log;\nevents {}\nstream {\n    server {\n        listen 8443;\n"
    "        ssl_preread on;\n        resolver 127.0.0.1;\n"
    "        proxy_pass $ssl_preread_server_name:443;\n    }\n}\n",
    good="load_module /usr/lib/nginx/modules/ngx_stream_module.so;\npid nginx.pid;\n"
    "error_log error.log;\nevents {}\nstream {\n    server {\n        listen 8443;\n"
    "        proxy_pass 127.0.8.11:443;\n    }\n}\n",
)

REALIP_TRUST_ALL = Rule(
    id="NGINX-REALIP-TRUST-ALL",
    server="nginx",
    category=Category.SMTP_VIA_PROXY,
    severity=Severity.CRITICAL,
    title="set_real_ip_from trusts everyone, so allow/deny in front of a proxy is void",
    description="`set_real_ip_from 0.0.0.0/0` (or another range covering outside clients) "
    "makes nginx replace the client address with the `X-Real-IP` (or `real_ip_header`) value "
    "the client sends; the `allow`/`deny` list guarding an open proxy_pass then judges an "
    "address the client chose.",
    why="A stranger sends `X-Real-IP: 127.0.0.1` and is let through the ACL into a proxy that "
    "reaches any host and port.",
    fix="Trust only the load balancers in front of nginx: `set_real_ip_from 192.0.2.10;`.",
    reference="https://nginx.org/en/docs/http/ngx_http_realip_module.html#set_real_ip_from",
    bad=_MINI.format(body="        set_real_ip_from 0.0.0.0/0;\n        allow 127.0.0.1;\n"
                     "        deny all;\n"
                     "        location / { proxy_pass http://$http_host$request_uri; }"),
    good=_MINI.format(body="        set_real_ip_from 192.0.2.10;\n        allow 127.0.0.1;\n"
                      "        deny all;\n"
                      "        location / { proxy_pass http://$http_host$request_uri; }"),
)

HOST_HEADER_FORWARD = Rule(
    id="NGINX-HOST-HEADER-FORWARD",
    server="nginx",
    category=Category.HARDENING,
    severity=Severity.LOW,
    title="proxy_set_header Host $http_host forwards the client's raw Host header",
    description="`proxy_set_header Host $http_host` passes the Host header exactly as the "
    "client sent it, even when an absolute request line selected the server for another "
    "host. Not a relay by itself, but backends that build URLs or route by Host can be "
    "steered (gixy: host_spoofing).",
    why="Backend-side host routing and generated links follow a value the client chose.",
    fix="`proxy_set_header Host $host;` (what Debian's proxy_params does).",
    reference="https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_set_header",
    bad=_MINI.format(body="        location / {\n            proxy_set_header Host $http_host;\n"
                     "            proxy_pass http://127.0.8.11:8081;\n        }"),
    good=_MINI.format(body="        location / {\n            proxy_set_header Host $host;\n"
                      "            proxy_pass http://127.0.8.11:8081;\n        }"),
)

RULES: tuple[Rule, ...] = (OPEN_PROXY_HTTP_HOST, OPEN_PROXY_HOST, PROXY_CONNECT, STREAM_SNI_PROXY,
                           REALIP_TRUST_ALL, HOST_HEADER_FORWARD)


def _ev(p: ProxyPath) -> list[Evidence]:
    out = [Evidence("config", f"{p.directive.where}: {p.directive.render()}",
                    Location(p.directive.path, p.directive.line))]
    for d in p.extra:
        out.append(Evidence("config", f"{d.where}: {d.render()}", Location(d.path, d.line)))
    if p.kind in ("http-host", "host") and not any(
            c.name == "resolver" for level in p.chain for c in (level.block or [])):
        out.append(Evidence("note", "no `resolver` is set: that is no protection, an IP "
                            "literal as host needs no DNS lookup"))
    srv = p.server
    role = (f"default server for {', '.join(srv.default_for)}" if srv.default_for
            else "server_name " + " ".join(srv.names or ["(none)"]))
    out.append(Evidence("config", f"{srv.node.where}: server {{ listen "
                        f"{', '.join(x.socket for x in srv.listens) or '-'}; {role} }}",
                        Location(srv.node.path, srv.node.line)))
    return out


def _realip_edits(p: ProxyPath, lines: dict[str, list[str]]) -> list[Edit]:
    out: list[Edit] = []
    assert p.realip is not None
    for level in reversed([c for c in p.chain if c.name != "if"]):
        found = [d for d in (level.block or []) if d.name == "set_real_ip_from" and d.args]
        if not found:
            continue
        for d in found:
            text = lines.get(d.path)
            broad = d.args[0] == "all" or d.args[0].endswith("/0") or d is p.realip
            if text and broad and 0 < d.line <= len(text) and \
                    text[d.line - 1].strip() == f"set_real_ip_from {d.args[0]};":
                old = text[d.line - 1]
                indent = old[: len(old) - len(old.lstrip())]
                out.append(Edit(d.path, d.line, (old,), (f"{indent}set_real_ip_from 127.0.0.1;",)))
        break
    return out


def header_findings(tree, lines: dict[str, list[str]]) -> list[Finding]:
    """NGINX-HOST-HEADER-FORWARD for every `proxy_set_header Host $http_host`."""
    out: list[Finding] = []
    stack = list(tree)
    seen = []
    while stack:
        d = stack.pop(0)
        if d.block:
            stack[0:0] = d.block
        if d.name == "proxy_set_header" and len(d.args) >= 2 and d.args[0].lower() == "host" \
                and "$http_host" in d.args[1]:
            seen.append(d)
    for d in seen:
        edits: list[Edit] = []
        text = lines.get(d.path)
        if text and 0 < d.line <= len(text) and "$http_host" in text[d.line - 1]:
            old = text[d.line - 1]
            edits.append(Edit(d.path, d.line, (old,), (old.replace("$http_host", "$host", 1),)))
        out.append(HOST_HEADER_FORWARD.finding(
            "proxy_set_header Host $http_host: the backend sees the client's raw Host header",
            location=Location(d.path, d.line),
            evidence=[Evidence("config", f"{d.where}: {d.render()}", Location(d.path, d.line))],
            confidence=Confidence.LIKELY, edits=edits))
    return out


def _ports_text(ports: list[int] | None) -> str:
    return "any port" if ports is None else "port " + ", ".join(str(x) for x in ports)


def findings_for(paths: list[ProxyPath], client: IPAddress,
                 lines: dict[str, list[str]]) -> list[Finding]:
    """Findings for the proxy paths the client can use."""
    out: list[Finding] = []
    for p in paths:
        if not p.open_to_client:
            continue
        reachable = listener_reachable(p.server.listens, client)
        smtp = p.ports is None or any(x in SMTP_PORTS for x in p.ports)
        edit = acl_edit(p, lines)
        edits: list[Edit] = [edit] if edit else []
        if p.kind == "http-host":
            rule = OPEN_PROXY_HTTP_HOST
            sev = Severity.CRITICAL if smtp else Severity.HIGH
            base = Category.OPEN_HTTP_PROXY
            title = (f"proxy_pass target from ${', $'.join(p.vars)}: any client picks host and "
                     f"{_ports_text(p.ports)}")
        elif p.kind == "host":
            rule = OPEN_PROXY_HOST
            sev = Severity.CRITICAL if smtp else Severity.HIGH
            base = Category.OPEN_HTTP_PROXY
            title = f"open HTTP proxy: proxy_pass to $host in a server receiving any host " \
                    f"({_ports_text(p.ports)})"
        elif p.kind == "connect":
            rule = PROXY_CONNECT
            sev = Severity.CRITICAL if smtp else Severity.HIGH
            base = Category.OPEN_CONNECT_PROXY
            title = f"open CONNECT proxy (proxy_connect) to {_ports_text(p.ports)}"
            allow = p.extra[-1] if p.extra else None
            if smtp and allow is not None and allow.path in lines:
                old = lines[allow.path][allow.line - 1]
                indent = old[: len(old) - len(old.lstrip())]
                edits.append(Edit(allow.path, allow.line, (old,),
                                  (f"{indent}proxy_connect_allow 443;",)))
        else:
            if not p.vars:
                continue  # fixed stream target to an SMTP port: the cross-service rule judges
            rule = STREAM_SNI_PROXY
            sev = Severity.CRITICAL if smtp else Severity.HIGH
            base = Category.OPEN_CONNECT_PROXY
            title = (f"stream proxy_pass target from ${', $'.join(p.vars)}: any host, "
                     f"{_ports_text(p.ports)}")
        if p.realip is not None:
            edits = _realip_edits(p, lines)
            title = (f"{title}, behind allow/deny that set_real_ip_from {p.realip.args[0]} "
                     "lets the client bypass with X-Real-IP")
            rule = REALIP_TRUST_ALL
        if not reachable:
            sev = Severity.LOW
            title += " (listener bound to loopback only)"
        out.append(rule.finding(title, location=Location(p.directive.path, p.directive.line),
                                evidence=_ev(p), severity=sev,
                                category=Category.SMTP_VIA_PROXY if smtp else base,
                                also=(base,) if smtp else (),
                                confidence=Confidence.LIKELY, edits=edits))
    return out
