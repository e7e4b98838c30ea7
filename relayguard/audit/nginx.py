"""nginx: read the config the way nginx does (crossplane tokenises, we resolve includes) and
work out which `proxy_pass`/`proxy_connect`/`stream` paths a stranger can steer.

Parsing (`load`) is kept apart from evaluation (`evaluate`): the parser yields a tree of
`Directive`s with file:line; the evaluator knows server selection, variables and allow/deny.
"""

from __future__ import annotations

import glob
import ipaddress
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import crossplane

from relayguard.audit import addresses
from relayguard.audit.base import AuditOptions, AuditResult, IPAddress, under_root
from relayguard.audit.readfile import lines_of, peek, read_text
from relayguard.digits import ascii_int, is_digits
from relayguard.errors import InputError
from relayguard.findings import Edit, ErrorEntry

DEFAULT_OUTSIDE = ipaddress.ip_address("198.51.100.77")  # TEST-NET-2: "somebody on the Internet"
SMTP_PORTS = (25, 465, 587)
MAX_INCLUDE_DEPTH = 20
MAX_FILES_READ = 2000  # includes re-reading a directory from every file fan out fast


@dataclass(slots=True)
class Directive:
    """One nginx directive (`proxy_pass http://$host;`) or block (`server { … }`)."""

    name: str
    args: list[str]
    path: str
    line: int
    block: list[Directive] | None = None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def render(self) -> str:
        text = " ".join([self.name, *(_quote(a) for a in self.args)])
        return text + (" {" if self.block is not None else ";")

    def children(self, name: str) -> list[Directive]:
        return [d for d in (self.block or []) if d.name == name]


def _quote(arg: str) -> str:
    return f'"{arg}"' if (not arg or any(c.isspace() or c in ";{}" for c in arg)) else arg


@dataclass(slots=True)
class Config:
    """The whole config after includes, plus the files read and the problems met."""

    main: str
    tree: list[Directive]
    files: list[str] = field(default_factory=list)
    errors: list[ErrorEntry] = field(default_factory=list)


def load(path: Path, root: Path | None = None) -> Config:
    """Parse `path` and every file it includes into one tree (raises InputError if unreadable)."""
    cfg = Config(main=str(path), tree=[])
    cfg.tree = _load_file(path, path.parent, root, cfg, depth=0, seen=())
    return cfg


def _load_file(path: Path, prefix: Path, root: Path | None, cfg: Config, depth: int,
               seen: tuple[str, ...]) -> list[Directive]:
    key = str(path.resolve())
    if len(cfg.files) >= MAX_FILES_READ:
        cfg.errors.append(ErrorEntry(str(path), f"more than {MAX_FILES_READ} includes; "
                                     "stopped reading"))
        return []
    if key in seen or depth > MAX_INCLUDE_DEPTH:
        cfg.errors.append(ErrorEntry(str(path), "include loop or nesting too deep; not followed"))
        return []
    try:
        read_text(path)  # bounded, regular files only, no binary: crossplane then parses it
        payload = crossplane.parse(str(path), single=True, check_ctx=False, check_args=False,
                                   catch_errors=True)
    except InputError as exc:
        if depth == 0:
            raise
        cfg.errors.append(ErrorEntry(exc.source, exc.message, exc.line))
        return []
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # crossplane reads the file itself
        if depth == 0:
            raise InputError(str(path), f"cannot read: {exc}") from None
        cfg.errors.append(ErrorEntry(str(path), f"cannot read: {exc}"))
        return []
    cfg.files.append(str(path))
    entry = payload["config"][0] if payload.get("config") else {"parsed": [], "errors": []}
    for err in entry.get("errors", []):
        msg = re.sub(r" in \S+:\d+$", "", str(err.get("error") or "")) or \
            "cannot parse it: the file ends inside a directive (a ';' or '}' missing?)"
        if depth == 0 and not entry.get("parsed"):
            raise InputError(str(path), msg, err.get("line"))
        cfg.errors.append(ErrorEntry(str(path), msg, err.get("line")))
    return _convert(entry.get("parsed", []), str(path), prefix, root, cfg, depth,
                    (*seen, key))


def _convert(items: list[dict[str, Any]], path: str, prefix: Path, root: Path | None,
             cfg: Config, depth: int, seen: tuple[str, ...]) -> list[Directive]:
    out: list[Directive] = []
    for item in items:
        name = str(item.get("directive", ""))
        args = [str(a) for a in item.get("args", [])]
        line = int(item.get("line", 0))
        if name == "include" and args:
            out.extend(_include(args[0], path, line, prefix, root, cfg, depth, seen))
            continue
        block = item.get("block")
        d = Directive(name, args, path, line,
                      None if block is None else _convert(block, path, prefix, root, cfg,
                                                          depth, seen))
        out.append(d)
    return out


def _include(pattern: str, path: str, line: int, prefix: Path, root: Path | None, cfg: Config,
             depth: int, seen: tuple[str, ...]) -> list[Directive]:
    target = resolve_path(pattern, prefix, root)
    if glob.has_magic(str(target)):
        files = sorted(Path(p) for p in glob.glob(str(target)) if Path(p).is_file())
    elif target.exists():  # a device or directory too: the reader refuses it by name
        files = [target]
    else:
        cfg.errors.append(ErrorEntry(path, f"include {pattern}: no such file "
                                     f"(looked for {target})", line))
        files = []
    out: list[Directive] = []
    for f in files:
        out.extend(_load_file(f, prefix, root, cfg, depth + 1, seen))
    return out


def resolve_path(name: str, prefix: Path, root: Path | None) -> Path:
    """Where a path named in the config lives in the audited tree.

    Relative paths are relative to the directory of the main file (nginx's conf prefix).
    Absolute `/etc/nginx/...` paths map onto the audited directory when auditing a copy.
    """
    p = Path(name)
    if not p.is_absolute():
        return prefix / p
    if root is not None:
        return under_root(p, root)
    if name.startswith("/etc/nginx/") and prefix != Path("/etc/nginx"):
        return prefix / name[len("/etc/nginx/"):]
    return p


# --------------------------------------------------------------------------------------------
# Evaluation: what a stranger can reach


@dataclass(frozen=True, slots=True)
class Listen:
    addr: str  # "*", "127.0.0.1", "::"
    port: int
    default: bool

    @property
    def socket(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"{host}:{self.port}"


@dataclass(slots=True)
class Server:
    """One `server {}` of `http` or `stream`, with the chain of blocks above it."""

    node: Directive
    parents: list[Directive]
    listens: list[Listen]
    names: list[str]
    stream: bool = False
    default_for: list[str] = field(default_factory=list)

    @property
    def arbitrary_hosts(self) -> bool:
        """True when requests for hosts nobody configured land here."""
        return bool(self.default_for) or any(_name_matches_anything(n) for n in self.names)


def _name_matches_anything(name: str) -> bool:
    if not name.startswith("~"):
        return False
    pattern = re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", name[1:])  # PCRE named groups
    try:
        return re.search(pattern, "relayguard-probe.invalid") is not None
    except re.error:
        return False


def parse_listen(args: list[str]) -> Listen | None:
    """`listen 127.0.0.1:8080 default_server;` → Listen; None for unix sockets."""
    if not args or args[0].startswith("unix:"):
        return None
    spec = args[0]
    default = "default_server" in args[1:] or "default" in args[1:]
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", spec)
    if m:
        addr, port = m.group(1), m.group(2) or "80"
    elif is_digits(spec):
        addr, port = "*", spec
    elif ":" in spec:
        addr, port = spec.rsplit(":", 1)
    else:
        addr, port = spec, "80"
    try:
        return Listen(addr or "*", int(port), default)
    except ValueError:
        return None


def collect_servers(tree: list[Directive]) -> list[Server]:
    """Every http and stream server with its listens and its default-server role."""
    servers: list[Server] = []
    for top in tree:
        if top.name not in ("http", "stream") or top.block is None:
            continue
        stream = top.name == "stream"
        for srv in top.children("server"):
            listens = [x for d in srv.children("listen") if (x := parse_listen(d.args))]
            if not listens and not stream:
                listens = [Listen("*", 80, False)]
            names = [a for d in srv.children("server_name") for a in d.args]
            servers.append(Server(srv, [top], listens, names, stream))
    for stream in (False, True):
        sockets: dict[str, list[Server]] = {}
        for s in servers:
            if s.stream is stream:
                for lst in s.listens:
                    sockets.setdefault(lst.socket, []).append(s)
        for sock, group in sockets.items():
            marked = [s for s in group if any(x.default and x.socket == sock for x in s.listens)]
            (marked[0] if marked else group[0]).default_for.append(sock)
    return servers


USER_VARS = re.compile(
    r"^(http_\w+|arg_\w+|cookie_\w+|args|query_string|request_uri|uri|document_uri|request|"
    r"request_body|\d+|ssl_preread_server_name|ssl_server_name)$")
VAR = re.compile(r"\$(\{(\w+)\}|(\w+))")


def variables_in(text: str) -> list[str]:
    return [m.group(2) or m.group(3) for m in VAR.finditer(text)]


@dataclass(slots=True)
class Taint:
    """Which variables the client controls, from `set`, `map` and regex captures."""

    user: set[str] = field(default_factory=set)
    origin: dict[str, Directive] = field(default_factory=dict)
    # captures of a `server_name` regex: nginx matches it against the host without its port,
    # so they name a host but can never carry a port
    host_only: set[str] = field(default_factory=set)

    def controlled(self, var: str) -> bool:
        return bool(USER_VARS.match(var)) or var in self.user


def _collect_taint(tree: list[Directive]) -> Taint:
    taint = Taint()
    nodes = list(_walk(tree))
    uri_captures: set[str] = set()
    host_captures: set[str] = set()
    for _ in range(3):  # propagate through chains of set/map (bounded)
        for d in nodes:
            if d.name == "set" and len(d.args) >= 2:
                var = d.args[0].lstrip("$")
                if any(taint.controlled(v) for v in variables_in(d.args[1])):
                    taint.user.add(var)
                    taint.origin.setdefault(var, d)
            elif d.name == "map" and len(d.args) >= 2 and d.block is not None:
                var = d.args[1].lstrip("$")
                values = [" ".join(e.args) for e in d.block]
                if any(taint.controlled(v) for val in values for v in variables_in(val)):
                    taint.user.add(var)
                    taint.origin.setdefault(var, d)
            elif d.name == "location" and d.args and d.args[0] in ("~", "~*"):
                for name in _named_captures(d.args[-1]):
                    taint.user.add(name)
                    taint.origin.setdefault(name, d)
                    uri_captures.add(name)
            elif d.name == "server_name":
                for name in (n for a in d.args if a.startswith("~") for n in _named_captures(a)):
                    taint.user.add(name)
                    taint.origin.setdefault(name, d)
                    host_captures.add(name)
    taint.host_only = host_captures - uri_captures
    return taint


def _named_captures(regex: str) -> list[str]:
    """`(?<h>…)` / `(?P<h>…)` names in a PCRE: nginx sets a variable for each."""
    return re.findall(r"\(\?P?<(\w+)>", regex)


def _walk(tree: list[Directive]):
    for d in tree:
        yield d
        if d.block:
            yield from _walk(d.block)


def split_target(url: str) -> tuple[str, str, str]:
    """`http://$host:8080/x` → ("http", "$host:8080", "/x"); stream targets have no scheme."""
    m = re.match(r"^([a-z]+|\$\{?\w+\}?)://(.*)$", url)
    scheme, rest = (m.group(1), m.group(2)) if m else ("", url)
    cut = _PATH_START.search(rest)
    if cut is None:
        return scheme, rest, ""
    return scheme, rest[: cut.start()], rest[cut.start():]


# Where the path part of a proxy_pass URL starts: a "/" or a variable that always begins one.
_PATH_START = re.compile(r"/|\$\{?(request_uri|uri|document_uri|is_args)\b")


def access_for(chain: list[Directive], client: IPAddress) -> tuple[bool, Directive | None]:
    """nginx access module: innermost level with allow/deny wins, first match, default allow.

    Returns (allowed, the directive that decided or None)."""
    for level in reversed(chain):
        rules = [d for d in (level.block or []) if d.name in ("allow", "deny")]
        if not rules:
            continue
        for d in rules:
            if d.args and _addr_match(d.args[0], client):
                return d.name == "allow", d
        return True, None
    return True, None


def _addr_match(spec: str, client: IPAddress) -> bool:
    if spec == "all":
        return True
    if spec.startswith("unix:"):
        return False
    try:
        return client in ipaddress.ip_network(spec, strict=False)
    except ValueError:
        return False


def auth_for(chain: list[Directive]) -> Directive | None:
    """The `auth_basic`/`auth_request` that applies (innermost level that sets it), if on."""
    for name in ("auth_basic", "auth_request"):
        for level in reversed(chain):
            found = [d for d in (level.block or []) if d.name == name]
            if found:
                if found[-1].args and found[-1].args[0] != "off":
                    return found[-1]
                break
    return None


@dataclass(slots=True)
class ProxyPath:
    """A way a client can make nginx open a connection somewhere it chooses (or to a fixed
    loopback SMTP port)."""

    kind: str  # "http-host" (request decides host and port) | "host" | "connect" | "stream"
    directive: Directive
    server: Server
    chain: list[Directive]
    open_to_client: bool
    ports: list[int] | None  # None = any port the client names
    reaches_loopback: bool
    tunnel: bool
    guard: Directive | None = None
    vars: list[str] = field(default_factory=list)
    extra: list[Directive] = field(default_factory=list)
    targets: list[str] | None = None  # fixed "host:port" destinations; None = client picks
    realip: Directive | None = None  # set_real_ip_from that lets the client fake its address


PASS_DIRECTIVES = ("proxy_pass", "fastcgi_pass", "uwsgi_pass", "grpc_pass", "scgi_pass")


def evaluate(cfg: Config, client: IPAddress) -> list[ProxyPath]:
    """Every proxy path in the config, with whether `client` can use it."""
    servers = collect_servers(cfg.tree)
    taint = _collect_taint(cfg.tree)
    paths: list[ProxyPath] = []
    for srv in servers:
        base = [*srv.parents, srv.node]
        if srv.stream:
            paths.extend(_stream_paths(srv, base, taint, client))
            continue
        for chain, d in _pass_sites(srv.node, base):
            p = _http_path(srv, chain, d, taint, client)
            if p:
                paths.append(p)
        for d in srv.node.children("proxy_connect"):
            paths.append(_connect_path(srv, base, d, client))
    return paths


def _pass_sites(node: Directive, chain: list[Directive]):
    """(chain of enclosing blocks, directive) for each *_pass reachable from a request."""
    for d in node.block or []:
        if d.name in PASS_DIRECTIVES and d.args:
            yield chain, d
        elif d.block is not None and d.name in ("location", "if", "limit_except"):
            if d.name == "location" and any(c.name == "internal" for c in d.block):
                continue
            yield from _pass_sites(d, [*chain, d])


def _closed(chain: list[Directive], client: IPAddress) -> tuple[bool, Directive | None]:
    acl_chain = [c for c in chain if c.name != "if"]
    allowed, decider = access_for(acl_chain, client)
    if not allowed:
        if _realip_bypass(acl_chain, client) is not None:
            return False, decider  # the client claims an allowed address (realip)
        return True, decider
    auth = auth_for(acl_chain)
    if auth is not None:
        return True, auth
    return False, None


def realip_trust(chain: list[Directive], client: IPAddress) -> list[Directive]:
    """`set_real_ip_from` lines (innermost level that has any) that trust this client."""
    for level in reversed(chain):
        found = [d for d in (level.block or []) if d.name == "set_real_ip_from" and d.args]
        if found:
            return [d for d in found if _addr_match(d.args[0], client)]
    return []


def _realip_bypass(chain: list[Directive], client: IPAddress) -> Directive | None:
    """The trusting `set_real_ip_from` when the client can claim an address the ACL allows."""
    trusted = realip_trust(chain, client)
    if not trusted:
        return None
    for level in reversed(chain):
        rules = [d for d in (level.block or []) if d.name in ("allow", "deny")]
        if rules:
            for d in rules:
                if d.name == "allow" and d.args:
                    rep = _representative(d.args[0])
                    if rep is not None and access_for(chain, rep)[0]:
                        return trusted[0]
            return None
    return None


def _representative(spec: str) -> IPAddress | None:
    if spec == "all":
        return DEFAULT_OUTSIDE
    try:
        net = ipaddress.ip_network(spec, strict=False)
    except ValueError:
        return None
    return net.network_address + 1 if net.num_addresses > 2 else net.network_address


def _http_path(srv: Server, chain: list[Directive], d: Directive, taint: Taint,
               client: IPAddress) -> ProxyPath | None:
    _, hostport, _ = split_target(d.args[0])
    checked = validated_vars(chain)
    used = [v for v in variables_in(hostport) if v not in checked]
    controlled = [v for v in used if taint.controlled(v)]
    closed, guard = _closed(chain, client)
    realip = _realip_bypass([c for c in chain if c.name != "if"], client) if guard else None
    extra = [taint.origin[v] for v in controlled if v in taint.origin]
    if controlled:
        literal = _port_literal(hostport)
        if literal is not None:
            port_fixed = not any(v in controlled
                                 for v in variables_in(hostport.rpartition(":")[2]))
        else:  # no port written: the client's value may carry one, unless a host-only capture
            port_fixed = ":" not in hostport and all(v in taint.host_only for v in controlled)
        return ProxyPath("http-host", d, srv, chain, not closed,
                         [_port_literal(hostport) or 80] if port_fixed else None, True, False,
                         guard, controlled, extra, realip=realip)
    if "host" in used and srv.arbitrary_hosts:
        port_part = hostport.rpartition(":")[2] if ":" in hostport.replace("$host", "") else ""
        any_port = bool(port_part) and any(taint.controlled(v) for v in variables_in(port_part))
        ports = None if any_port else [_port_literal(hostport) or 80]
        return ProxyPath("host", d, srv, chain, not closed, ports, True, False, guard, ["host"],
                         extra, realip=realip)
    return None


def validated_vars(chain: list[Directive]) -> set[str]:
    r"""Variables a whitelist guard checks before the proxy runs:
    `if ($v !~ "^(a|b)\.example$") { return 403; }` (anchored, no wildcard) or
    `if ($v != "a.example") { return 444; }` in the server or an enclosing location."""
    out: set[str] = set()
    for level in chain:
        if level.name == "if":
            continue
        for d in level.block or []:
            if d.name != "if" or len(d.args) != 3 or not d.block:
                continue
            var, op, value = d.args
            if not var.startswith("$") or not any(c.name == "return" for c in d.block):
                continue
            if op == "!=" or (op in ("!~", "!~*") and _anchored_whitelist(value)):
                out.add(var.lstrip("$").strip("{}"))
    return out


def _anchored_whitelist(regex: str) -> bool:
    r"""`^(www\.)?example\.com$`: anchored both ends, no `.`/`\S`-style wildcard runs."""
    if not (regex.startswith("^") and regex.endswith("$")):
        return False
    return re.search(r"(?<!\\)\.[*+]|\\[Ss][*+]|\[\^", regex) is None


def _port_literal(hostport: str) -> int | None:
    m = re.search(r":(\d+)$", hostport)
    return int(m.group(1)) if m else None


def _connect_path(srv: Server, base: list[Directive], d: Directive,
                  client: IPAddress) -> ProxyPath:
    closed, guard = _closed(base, client)
    realip = _realip_bypass(base, client) if guard else None
    allow = [x for x in srv.node.children("proxy_connect_allow")]
    ports: list[int] | None = [443, 563]
    if allow:
        ports = connect_ports(allow[-1].args)
    return ProxyPath("connect", d, srv, base, not closed, ports, True, True, guard,
                     extra=allow[-1:], realip=realip)


def connect_ports(args: list[str]) -> list[int] | None:
    """`proxy_connect_allow 443 563 1000-2000;` → ports (ranges expanded only for SMTP ports);
    None for `all`."""
    ports: list[int] = []
    for a in args:
        if a == "all":
            return None
        if "-" in a:
            lo, _, hi = a.partition("-")
            if is_digits(lo) and is_digits(hi):
                ports += [p for p in SMTP_PORTS if int(lo) <= p <= int(hi)]
                ports += [int(lo)]
        elif is_digits(a):
            ports.append(int(a))
    return sorted(set(ports))


def _stream_paths(srv: Server, base: list[Directive], taint: Taint,
                  client: IPAddress) -> list[ProxyPath]:
    out: list[ProxyPath] = []
    allowed, guard = access_for(base, client)
    closed = not allowed
    for d in srv.node.children("proxy_pass"):
        if not d.args:
            continue
        target = d.args[0]
        controlled = [v for v in variables_in(target) if taint.controlled(v)]
        if controlled:
            port_part = target.rpartition(":")[2] if ":" in target else ""
            fixed = ascii_int(port_part)
            out.append(ProxyPath("stream", d, srv, base, not closed,
                                 [fixed] if fixed is not None else None, True, True, guard,
                                 controlled))
            continue
        host, port = _upstream_target(target, base)
        if port in SMTP_PORTS:
            out.append(ProxyPath("stream", d, srv, base, not closed, [port],
                                 _is_loopback_name(host), True, guard,
                                 targets=[f"{host}:{port}"]))
    return out


def _upstream_target(target: str, base: list[Directive]) -> tuple[str, int | None]:
    """A stream proxy_pass target: `127.0.0.1:25` or an `upstream` name (first server)."""
    for level in base:
        for up in level.children("upstream"):
            if up.args and up.args[0] == target:
                servers = up.children("server")
                if servers and servers[0].args:
                    target = servers[0].args[0]
    host, _, port = target.rpartition(":")
    return host.strip("[]"), ascii_int(port)


def _is_loopback_name(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listener_reachable(listens: list[Listen], client: IPAddress) -> bool:
    """Can `client` connect to any of these listeners? (loopback binds, by address or as
    `localhost`, only from loopback; the rule every proxy auditor shares)."""
    return any(addresses.listener_reachable(lst.addr, client) for lst in listens)


# --------------------------------------------------------------------------------------------
# Edits: the least change that closes a path


def acl_edit(path: ProxyPath, lines: dict[str, list[str]]) -> Edit | None:
    """Insert `allow 127.0.0.1; deny all;` where it covers the path (not inside `if`)."""
    anchor = path.directive
    for block in reversed(path.chain):
        if block.name == "if":
            anchor = block
        else:
            break
    text = lines.get(anchor.path)
    if not text or anchor.line < 1 or anchor.line > len(text):
        return None
    indent = re.match(r"\s*", text[anchor.line - 1]).group(0)  # type: ignore[union-attr]
    return Edit(anchor.path, anchor.line, (), (f"{indent}allow 127.0.0.1;", f"{indent}deny all;"))


def read_lines(files: list[str]) -> dict[str, list[str]]:
    """The current lines of each file read, for edits that quote them."""
    return {f: lines for f in files if (lines := lines_of(f)) is not None}


# --------------------------------------------------------------------------------------------
# The Auditor


class NginxAuditor:
    """nginx (Debian layout: /etc/nginx/nginx.conf including conf.d and sites-enabled)."""

    name = "nginx"

    def candidates(self, root: Path) -> list[Path]:
        p = under_root("/etc/nginx/nginx.conf", root)
        return [p] if p.is_file() else []

    def recognise(self, path: Path) -> bool:
        if path.is_dir():
            return (path / "nginx.conf").is_file()
        if path.name == "nginx.conf" or "nginx" in path.parts:
            return True
        head = peek(path, 20000)
        return bool(re.search(r"^\s*(http|stream|events)\s*\{", head, re.M)) and \
            bool(re.search(r"^\s*(server|worker_processes|events)\b", head, re.M))

    def audit(self, path: Path, options: AuditOptions) -> AuditResult:
        from relayguard.audit.rules.nginx import findings_for, header_findings

        if path.is_dir():
            path = path / "nginx.conf"
        cfg = load(path, options.root)
        client = options.outside_client or DEFAULT_OUTSIDE
        paths = evaluate(cfg, client)
        result = AuditResult(server=self.name, config=str(path), files=list(cfg.files),
                             errors=list(cfg.errors))
        lines = read_lines(cfg.files)
        result.findings.extend(findings_for(paths, client, lines))
        result.findings.extend(header_findings(cfg.tree, lines))
        result.facts["proxy_paths"] = [f for p in paths
                                       for f in facts_for(p, client, str(path), lines)]
        return result

    def config_test(self, path: Path) -> tuple[bool, str] | None:
        return config_test(path)


PROBE_PORTS = (25, 80, 443, 465, 587)


def facts_for(p: ProxyPath, client: IPAddress, config: str,
              lines: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """`proxy_paths` facts (shape in relayguard.audit.cross), one per listener of the path."""
    ports = list(PROBE_PORTS) if p.ports is None else [x for x in p.ports]
    third_party = [] if p.targets is not None else ports
    loopback = ports if p.reaches_loopback else []
    edit = acl_edit(p, lines or {})
    out = []
    for lst in p.server.listens:
        reachable = listener_reachable([lst], client)
        open_ = p.open_to_client and reachable
        out.append({
            "server": "nginx", "config": config, "listen": lst.socket,
            "open_to_outside": open_,
            "reaches_ports": sorted(set(third_party)),
            "tunnel_ports": sorted(set(third_party)) if p.tunnel else [],
            "reaches_loopback": bool(loopback), "loopback_ports": sorted(set(loopback)),
            "clients": "outside" if open_ else _who(p),
            "kind": p.kind, "tunnel": p.tunnel, "source": _proxy_bind(p.chain),
            "targets": p.targets,
            "evidence": [{"path": d.path, "line": d.line, "text": d.render()}
                         for d in (p.directive, *p.extra)],
            "edits": [edit] if edit else [],
        })
    return out


def _who(p: ProxyPath) -> str:
    """Who may use a path the outside client may not: "loopback", "trusted" or "nobody"."""
    if p.open_to_client:
        return "loopback"  # open, but the listener is bound to loopback
    if p.guard is None or p.guard.name != "deny":
        return "trusted"  # auth, or an allow list the outside client is not on
    acl_chain = [c for c in p.chain if c.name != "if"]
    for level in reversed(acl_chain):
        rules = [d for d in (level.block or []) if d.name == "allow" and d.args]
        if any(d.name in ("allow", "deny") for d in (level.block or [])):
            if not rules:
                return "nobody"
            nets = []
            for d in rules:
                try:
                    nets.append(ipaddress.ip_network(d.args[0], strict=False))
                except ValueError:
                    return "trusted"
            return "loopback" if all(n.is_loopback for n in nets) else "trusted"
    return "trusted"


def _proxy_bind(chain: list[Directive]) -> str | None:
    for level in reversed(chain):
        for d in level.children("proxy_bind"):
            if d.args and d.args[0] != "off" and "$" not in d.args[0]:
                return d.args[0]
    return None


def config_test(path: Path) -> tuple[bool, str] | None:
    """`nginx -t -c CONF -p DIR`: nginx's own syntax check (None when nginx is absent).

    A copy of a Debian tree (e.g. --fix's scratch copy) still names `/etc/nginx/...` in its
    includes; nginx would then test the live files, so the check runs on a copy whose
    `include /etc/nginx/` lines point into the copy.
    """
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                    else None)
    if exe is None:
        return None
    if path.is_dir():
        path = path / "nginx.conf"
    conf_dir = path.resolve().parent
    with tempfile.TemporaryDirectory(prefix="relayguard-nginx-t-") as tmp:
        if conf_dir != Path("/etc/nginx") and _names_etc_nginx(conf_dir):
            copy = Path(tmp) / "conf"
            shutil.copytree(conf_dir, copy, symlinks=False, ignore_dangling_symlinks=True)
            for f in copy.rglob("*"):
                if f.is_file() and f.stat().st_size < MAX_TEST_FILE:
                    text = f.read_text(encoding="utf-8", errors="surrogateescape")
                    new = re.sub(r"(^|[;{\s])include(\s+)/etc/nginx/",
                                 lambda m: f"{m.group(1)}include{m.group(2)}{copy}/", text,
                                 flags=re.M)
                    if new != text:
                        f.write_text(new, encoding="utf-8", errors="surrogateescape")
            conf_dir, path = copy, copy / path.name
        try:
            proc = subprocess.run([exe, "-t", "-q", "-c", str(conf_dir / path.name),
                                   "-p", f"{conf_dir}/", "-g", "error_log stderr;"],
                                  capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


MAX_TEST_FILE = 4 * 1024 * 1024


def _names_etc_nginx(conf_dir: Path) -> bool:
    try:
        return any("/etc/nginx/" in f.read_text(encoding="utf-8", errors="replace")
                   for f in conf_dir.rglob("*.conf") if f.is_file())
    except OSError:
        return False
