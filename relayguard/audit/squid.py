"""Squid's squid.conf as Squid reads it: continuation lines, `if/else/endif`, `include` globs,
`acl` lines accumulating per name, `http_access` / `follow_x_forwarded_for` rule lists and
`http_port` listeners — each with the file:line it came from. Judging lives in rules/squid.py.
"""

from __future__ import annotations

import glob
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from relayguard.audit.base import AuditOptions, AuditResult, under_root
from relayguard.audit.configtest import run_check
from relayguard.audit.directive import Directive, read_lines
from relayguard.audit.readfile import peek
from relayguard.digits import is_digits
from relayguard.errors import InputError
from relayguard.findings import ErrorEntry

MAX_INCLUDE_DEPTH = 16  # Squid's own limit for nested include
MODES = ("intercept", "transparent", "tproxy", "accel")


@dataclass(frozen=True, slots=True)
class Acl:
    """One `acl NAME TYPE [-flags] VALUE…` line (values read from a quoted file included)."""

    name: str
    type: str
    flags: tuple[str, ...]
    values: tuple[str, ...]
    directive: Directive | None  # None for Squid's built-in ACLs


@dataclass(frozen=True, slots=True)
class AccessRule:
    """`http_access allow|deny [!]acl…` (all ACLs on the line must match)."""

    action: str
    acls: tuple[tuple[bool, str], ...]  # (negated, acl name)
    directive: Directive


@dataclass(frozen=True, slots=True)
class HttpPort:
    """`http_port [addr:]port [mode] [options]`: host None means every address."""

    host: str | None
    port: int
    mode: str  # "forward", "intercept", "tproxy" or "accel"
    directive: Directive
    name: str = ""  # `name=` option, else the port specification as written (myportname)

    @property
    def listen(self) -> str:
        host = self.host or "*"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


# Squid 4+ predefines these (squid.conf.documented, TAG: acl "Predefined ACLs").
BUILTIN_ACLS: dict[str, tuple[Acl, ...]] = {
    "all": (Acl("all", "src", (), ("0.0.0.0/0", "::/0"), None),),
    "localhost": (Acl("localhost", "src", (), ("127.0.0.1/32", "::1/128"), None),),
    "to_localhost": (Acl("to_localhost", "dst", (),
                         ("127.0.0.0/8", "0.0.0.0/32", "::1/128", "::/128"), None),),
    "CONNECT": (Acl("CONNECT", "method", (), ("CONNECT",), None),),
    "manager": (Acl("manager", "url_regex", ("-i",),
                    ("^cache_object://", "^https?://[^/]+/squid-internal-mgr/"), None),),
}


@dataclass
class SquidConfig:
    """The effective squid.conf: every directive in order plus the parts relayguard judges."""

    path: str
    directives: list[Directive] = field(default_factory=list)
    acls: dict[str, list[Acl]] = field(default_factory=dict)
    http_access: list[AccessRule] = field(default_factory=list)
    follow_xff: list[AccessRule] = field(default_factory=list)
    proxy_protocol: list[AccessRule] = field(default_factory=list)
    http_ports: list[HttpPort] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    errors: list[ErrorEntry] = field(default_factory=list)
    replaced_builtins: set[str] = field(default_factory=set)

    def acl(self, name: str) -> tuple[Acl, ...]:
        """Definitions of `name`: user lines accumulate onto a built-in of that name, or
        replace it when they give another type (old configs' `acl manager proto …`)."""
        builtin = () if name in self.replaced_builtins else BUILTIN_ACLS.get(name, ())
        return (*builtin, *self.acls.get(name, ()))

    def last(self, name: str) -> Directive | None:
        found = [d for d in self.directives if d.name == name]
        return found[-1] if found else None


def parse(path: Path, root: Path | None = None) -> SquidConfig:
    """Read squid.conf at `path` (and its includes); InputError only if `path` is unreadable."""
    cfg = SquidConfig(path=str(path))
    _parse_file(cfg, path, root, depth=0)
    return cfg


def _parse_file(cfg: SquidConfig, path: Path, root: Path | None, depth: int,
                chain: tuple[str, ...] = ()) -> None:
    """Read one file; `chain` holds the (resolved) files whose includes led here."""
    shown = str(path)
    lines = read_lines(path, shown)
    cfg.files.append(shown)
    chain = (*chain, str(path.resolve()))
    stack: list[tuple[bool, bool]] = []  # (branch active, condition line) per open `if`
    i = 0
    while i < len(lines):
        start = i
        text = lines[i]
        raw = [lines[i]]
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1] + lines[i]
            raw.append(lines[i])
        i += 1
        tokens = _tokens(text)
        if not tokens:
            continue
        d = Directive(shown, start + 1, tokens[0], tuple(tokens[1:]), "\n".join(raw))
        name = d.name
        if name == "if":
            stack.append((_condition(cfg, d), all(a for a, _ in stack)))
            continue
        if name in ("else", "endif"):
            if not stack:
                cfg.errors.append(ErrorEntry(shown, f"'{name}' without a matching 'if'",
                                             d.line))
                continue
            if name == "else":
                active, outer = stack.pop()
                stack.append((not active, outer))
            else:
                stack.pop()
            continue
        if not all(active for active, _ in stack):
            continue
        if name == "include":
            _include(cfg, d, path, root, depth, chain)
            continue
        cfg.directives.append(d)
        _interpret(cfg, d, path, root)
    if stack:
        cfg.errors.append(ErrorEntry(shown, "'if' without a matching 'endif'", None))


def _tokens(text: str) -> list[str]:
    """Whitespace-separated tokens; a token starting with `#` starts a comment."""
    out: list[str] = []
    for tok in text.split():
        if tok.startswith("#"):
            break
        out.append(tok)
    return out


def _condition(cfg: SquidConfig, d: Directive) -> bool:
    """`if true|false|A = B` with Squid's ${process_number}-style macros (one worker)."""
    macros = {"${process_number}": "1", "${process_name}": "squid-1",
              "${service_name}": "squid", "${kid_number}": "1"}
    args = [macros.get(a, a) for a in d.args]
    if args == ["true"]:
        return True
    if args == ["false"]:
        return False
    if len(args) == 3 and args[1] == "=":
        return args[0] == args[2]
    cfg.errors.append(ErrorEntry(d.path, f"cannot evaluate 'if {' '.join(d.args)}'; "
                                 "assuming it is true", d.line))
    return True


def _include(cfg: SquidConfig, d: Directive, path: Path, root: Path | None, depth: int,
             chain: tuple[str, ...]) -> None:
    if depth + 1 > MAX_INCLUDE_DEPTH:
        cfg.errors.append(ErrorEntry(d.path, "include nested too deeply (Squid stops at "
                                     f"{MAX_INCLUDE_DEPTH})", d.line))
        return
    if not d.args:
        cfg.errors.append(ErrorEntry(d.path, "include without a file name", d.line))
        return
    for pattern in d.args:
        target = under_root(pattern, root)
        if not target.is_absolute():
            target = path.parent / target
        matches = sorted(glob.glob(str(target))) if glob.has_magic(str(target)) else \
            ([str(target)] if target.exists() else [])
        if not matches:
            cfg.errors.append(ErrorEntry(d.path, f"include {pattern}: no such file "
                                         "(Squid refuses to start)", d.line))
            continue
        for m in matches:
            if str(Path(m).resolve()) in chain:
                cfg.errors.append(ErrorEntry(d.path, f"include {m}: include loop ({m} is "
                                             "already being read); not followed, and Squid "
                                             "refuses to start (includes nested too deeply)",
                                             d.line))
                continue
            try:
                _parse_file(cfg, Path(m), root, depth + 1, chain)
            except InputError as exc:
                cfg.errors.append(ErrorEntry(d.path, f"include {m}: {exc.message}", d.line))


def _interpret(cfg: SquidConfig, d: Directive, path: Path, root: Path | None) -> None:
    if d.name == "acl":
        _acl(cfg, d, path, root)
    elif d.name in ("http_access", "follow_x_forwarded_for", "proxy_protocol_access"):
        rule = _access_rule(cfg, d)
        if rule is not None:
            {"http_access": cfg.http_access, "follow_x_forwarded_for": cfg.follow_xff,
             "proxy_protocol_access": cfg.proxy_protocol}[d.name].append(rule)
    elif d.name == "http_port":
        port = _http_port(cfg, d)
        if port is not None:
            cfg.http_ports.append(port)


def _acl(cfg: SquidConfig, d: Directive, path: Path, root: Path | None) -> None:
    if len(d.args) < 2:
        cfg.errors.append(ErrorEntry(d.path, "acl needs a name and a type", d.line))
        return
    name, acltype, rest = d.args[0], d.args[1], list(d.args[2:])
    flags: list[str] = []
    while rest and rest[0].startswith("-") and len(rest[0]) > 1 and not rest[0][1].isdigit():
        flags.append(rest.pop(0))
    values: list[str] = []
    for v in rest:
        if len(v) >= 2 and v.startswith('"') and v.endswith('"'):
            values += _values_file(cfg, d, v[1:-1], path, root)
        else:
            values.append(v)
    previous = cfg.acl(name)
    if name in BUILTIN_ACLS and name not in cfg.acls and previous[0].type != acltype:
        cfg.replaced_builtins.add(name)
        previous = ()
    if previous and previous[0].type != acltype:
        cfg.errors.append(ErrorEntry(d.path, f"acl {name!r} already has type "
                                     f"{previous[0].type!r} (Squid refuses this line)", d.line))
        return
    cfg.acls.setdefault(name, []).append(Acl(name, acltype, tuple(flags), tuple(values), d))


def _values_file(cfg: SquidConfig, d: Directive, name: str, path: Path,
                 root: Path | None) -> list[str]:
    target = under_root(name, root)
    if not target.is_absolute():
        target = path.parent / target
    try:
        lines = read_lines(target)
    except InputError as exc:
        cfg.errors.append(ErrorEntry(d.path, f"acl values file {name}: {exc.message}", d.line))
        return []
    cfg.files.append(str(target))
    return [t for ln in lines for t in _tokens(ln)]


def _access_rule(cfg: SquidConfig, d: Directive) -> AccessRule | None:
    if not d.args or d.args[0] not in ("allow", "deny"):
        cfg.errors.append(ErrorEntry(d.path, f"{d.name} must start with allow or deny", d.line))
        return None
    acls: list[tuple[bool, str]] = []
    for a in d.args[1:]:
        neg = a.startswith("!")
        name = a[1:] if neg else a
        if not name:
            cfg.errors.append(ErrorEntry(d.path, "'!' without an ACL name", d.line))
            return None
        if not cfg.acl(name):
            cfg.errors.append(ErrorEntry(d.path, f"{d.name} uses undefined acl {name!r} "
                                         "(Squid refuses to start)", d.line))
            return None
        acls.append((neg, name))
    return AccessRule(d.args[0], tuple(acls), d)


def _http_port(cfg: SquidConfig, d: Directive) -> HttpPort | None:
    if not d.args:
        cfg.errors.append(ErrorEntry(d.path, "http_port without a port", d.line))
        return None
    spec = d.args[0]
    host: str | None = None
    port_text = spec
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port_text = rest.lstrip(":")
    elif ":" in spec:
        host, _, port_text = spec.rpartition(":")
    if not is_digits(port_text) or not 0 < int(port_text) < 65536:
        cfg.errors.append(ErrorEntry(d.path, f"http_port {spec}: not a valid port", d.line))
        return None
    mode = next((m for m in d.args[1:] if m in MODES), "forward")
    name = next((a[5:] for a in d.args[1:] if a.startswith("name=")), spec)
    return HttpPort(host or None, int(port_text), "intercept" if mode == "transparent" else mode,
                    d, name)


class SquidAuditor:
    """Squid (squid.conf)."""

    name = "squid"

    def candidates(self, root: Path) -> list[Path]:
        return [p for p in (root / "etc/squid/squid.conf", root / "etc/squid3/squid.conf")
                if p.is_file()]

    def recognise(self, path: Path) -> bool:
        if path.is_dir():
            return (path / "squid.conf").is_file()
        if path.name == "squid.conf":
            return True
        head = peek(path, 65536)
        return "http_access" in head and "http_port" in head

    def audit(self, path: Path, options: AuditOptions) -> AuditResult:
        from relayguard.audit.rules import squid as squid_rules

        if path.is_dir():
            path = path / "squid.conf"
        cfg = parse(path, options.root)
        findings, facts = squid_rules.check(cfg, options)
        return AuditResult(server=self.name, config=str(path), findings=findings,
                           errors=list(cfg.errors), files=list(cfg.files), facts=facts)

    def config_test(self, path: Path) -> tuple[bool, str] | None:
        exe = shutil.which("squid")
        if exe is None:
            return None
        return run_check([exe, "-k", "parse", "-f", str(path)])
