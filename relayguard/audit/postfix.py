"""Postfix: main.cf and master.cf read the way Postfix reads them, and the relay decision for
a stranger evaluated per smtpd service.

Syntax: logical lines (a line starting with whitespace continues the previous one), last
assignment wins, `$name` / `${name}` / `${name?x}` / `${name:x}` and the 3.5+ `${{…} <level
{…} ? {…} : {…}}` expressions, built-in defaults from `postconf -d` (or the shipped snapshot).
master.cf `-o name=value` overrides apply per service. Semantics: each restriction list is
walked for an outside client with no SASL, forged sender/HELO, and a foreign recipient.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from relayguard.audit.base import AuditOptions, AuditResult, IPAddress, server_path, under_root
from relayguard.audit.readfile import peek, read_text
from relayguard.digits import ascii_int
from relayguard.errors import InputError
from relayguard.findings import ErrorEntry

DEFAULT_OUTSIDE = ipaddress.ip_address("198.51.100.77")
MAX_EXPAND_DEPTH = 25
MAX_EXPANSIONS = 20000  # per parameter lookup
MAX_VALUE = 1 << 20
MAX_FILE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Setting:
    """One `name = value` with where it was written (file, first and last physical line)."""

    name: str
    value: str
    path: str
    line: int
    end_line: int
    service: str | None = None  # master.cf service name for `-o` overrides

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def render(self) -> str:
        if self.service is not None:
            return f"-o {self.name}={self.value}"
        return f"{self.name} = {self.value}"


def parse_main_cf(text: str, path: str) -> tuple[dict[str, Setting], list[ErrorEntry]]:
    """`main.cf` → last assignment of each parameter; bad lines are reported, not fatal."""
    settings: dict[str, Setting] = {}
    errors: list[ErrorEntry] = []
    for start, end, logical in _logical_lines(text):
        name, eq, value = logical.partition("=")
        name = name.strip()
        if not eq or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            errors.append(ErrorEntry(path, f"not a 'name = value' line: {logical[:80]!r}", start))
            continue
        settings[name] = Setting(name, value.strip(), path, start, end)
    return settings, errors


def _logical_lines(text: str):
    """(first line, last line, joined text) for each logical line; comments and blanks skipped."""
    cur: list[str] = []
    start = end = 0
    for no, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[:1].isspace() and cur:
            cur.append(stripped)
            end = no
            continue
        if cur:
            yield start, end, " ".join(cur)
        cur, start, end = [stripped], no, no
    if cur:
        yield start, end, " ".join(cur)


@dataclass(slots=True)
class Service:
    """One master.cf entry."""

    name: str
    type: str
    command: str
    args: list[str]
    path: str
    line: int
    overrides: dict[str, Setting] = field(default_factory=dict)

    @property
    def is_smtpd(self) -> bool:
        return self.command == "smtpd" and self.type in ("inet", "pass")


def parse_master_cf(text: str, path: str) -> tuple[list[Service], list[ErrorEntry]]:
    """master.cf entries with their `-o` overrides (both `-o a=b` and `-o { a = b c }`)."""
    services: list[Service] = []
    errors: list[ErrorEntry] = []
    for start, end, logical in _logical_lines(text):
        fields = _split_master(logical)
        if len(fields) < 8:
            errors.append(ErrorEntry(path, "master.cf entry with fewer than 8 fields", start))
            continue
        svc = Service(fields[0], fields[1], fields[7].rsplit("/", 1)[-1], fields[8:], path,
                      start)
        args = fields[8:]
        i = 0
        while i < len(args):
            if args[i] == "-o" and i + 1 < len(args):
                spec = args[i + 1]
                i += 2
            elif args[i].startswith("-o") and len(args[i]) > 2:
                spec = args[i][2:]
                i += 1
            else:
                i += 1
                continue
            spec = spec.strip()
            if spec.startswith("{") and spec.endswith("}"):
                spec = spec[1:-1].strip()
            name, eq, value = spec.partition("=")
            if eq:
                line = _line_of(text, start, end, name.strip())
                svc.overrides[name.strip()] = Setting(name.strip(), value.strip(), path, line,
                                                      _brace_end(text, line, end),
                                                      service=svc.name)
        services.append(svc)
    return services, errors


def _line_of(text: str, start: int, end: int, name: str) -> int:
    lines = text.splitlines()
    for no in range(start, min(end, len(lines)) + 1):
        if re.search(rf"-o\s*\{{?\s*{re.escape(name)}\s*=", lines[no - 1]):
            return no
    return start


def _brace_end(text: str, line: int, limit: int) -> int:
    """Last physical line of an `-o { … }` that starts on `line`."""
    lines = text.splitlines()
    depth = 0
    for no in range(line, min(limit, len(lines)) + 1):
        depth += lines[no - 1].count("{") - lines[no - 1].count("}")
        if depth <= 0:
            return no
    return line


def _split_master(logical: str) -> list[str]:
    """Whitespace-split, keeping `{ … }` groups (Postfix 3.0 syntax) as one field."""
    out: list[str] = []
    i, n = 0, len(logical)
    while i < n:
        if logical[i].isspace():
            i += 1
            continue
        if logical[i] == "{":
            depth, j = 0, i
            while j < n:
                depth += {"{": 1, "}": -1}.get(logical[j], 0)
                j += 1
                if depth == 0:
                    break
            out.append(logical[i:j])
            i = j
            continue
        j = i
        while j < n and not logical[j].isspace():
            j += 1
        out.append(logical[i:j])
        i = j
    return out


# --------------------------------------------------------------------------------------------
# Defaults and expansion


@functools.lru_cache(maxsize=1)
def builtin_defaults() -> tuple[dict[str, str], str]:
    """Postfix's built-in defaults: `postconf -d` when installed, else the shipped snapshot."""
    exe = shutil.which("postconf") or ("/usr/sbin/postconf"
                                       if Path("/usr/sbin/postconf").exists() else None)
    if exe:
        try:
            proc = subprocess.run([exe, "-d"], capture_output=True, text=True, timeout=30,
                                  check=False)
            if proc.returncode == 0 and proc.stdout:
                return _parse_defaults(proc.stdout), "postconf -d"
        except (OSError, subprocess.TimeoutExpired):
            pass
    text = resources.files("relayguard").joinpath("data/postfix-defaults.txt").read_text(
        encoding="utf-8")
    return _parse_defaults(text), "relayguard/data/postfix-defaults.txt (Postfix 3.7.11)"


def _parse_defaults(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#") or (" = " not in line and not line.rstrip().endswith(" =")):
            continue
        name, _, value = line.partition("=")
        out[name.strip()] = value.strip()
    # Host-specific ones are computed from the config, never from this machine.
    for host_specific in ("myhostname", "mydomain", "mynetworks", "process_id"):
        out.pop(host_specific, None)
    return out


def _level(text: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", text)
    return tuple(int(p) for p in parts[:3]) or (0,)


class Params:
    """Effective parameters of one smtpd service: defaults < main.cf < master.cf `-o`."""

    def __init__(self, main: dict[str, Setting], overrides: dict[str, Setting] | None = None,
                 defaults: dict[str, str] | None = None) -> None:
        self.main = main
        self.overrides = overrides or {}
        self.defaults = builtin_defaults()[0] if defaults is None else defaults

    def setting(self, name: str) -> Setting | None:
        """Where the effective value was written (None: built-in default)."""
        return self.overrides.get(name) or self.main.get(name)

    def raw(self, name: str) -> str:
        s = self.setting(name)
        if s is not None:
            return s.value
        if name == "myhostname":
            return "localhost.localdomain"
        if name == "mydomain":
            return "localdomain"
        return self.defaults.get(name, "")

    def get(self, name: str) -> str:
        """Expanded value, as Postfix sees it."""
        self._budget = MAX_EXPANSIONS
        return self.expand(self.raw(name), 0)

    def expand(self, text: str, depth: int) -> str:
        if depth > MAX_EXPAND_DEPTH or "$" not in text or len(text) > MAX_VALUE:
            return text
        self._budget = getattr(self, "_budget", MAX_EXPANSIONS) - 1
        if self._budget < 0:  # $a = $b $b, $b = $c $c, …: stop instead of exploding
            return text
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if c != "$" or i + 1 >= n:
                out.append(c)
                i += 1
                continue
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
            elif nxt in "{(":
                close = "}" if nxt == "{" else ")"
                j = _matching(text, i + 1, nxt, close)
                out.append(self._expand_braced(text[i + 2:j], depth))
                i = j + 1
            elif nxt.isalnum() or nxt == "_":
                m = re.match(r"[A-Za-z0-9_]+", text[i + 1:])
                assert m is not None
                out.append(self.expand(self.raw(m.group(0)), depth + 1))
                i += 1 + len(m.group(0))
            else:
                out.append(c)
                i += 1
        return "".join(out)

    def _expand_braced(self, inner: str, depth: int) -> str:
        m = re.fullmatch(r"\s*\{(.*?)\}\s*(==|!=|<level|<=level|>level|>=level)\s*\{(.*?)\}\s*"
                         r"\?\s*\{(.*?)\}\s*:\s*\{(.*)\}\s*", inner, re.S)
        if m:
            left = self.expand(m.group(1).strip(), depth + 1)
            right = self.expand(m.group(3).strip(), depth + 1)
            op = m.group(2)
            if op.endswith("level"):
                lv, rv = _level(left), _level(right)
                result = {"<level": lv < rv, "<=level": lv <= rv, ">level": lv > rv,
                          ">=level": lv >= rv}[op]
            else:
                result = (left == right) == (op == "==")
            return self.expand((m.group(4) if result else m.group(5)).strip(), depth + 1)
        m = re.fullmatch(r"([A-Za-z0-9_]+)([?:])(.*)", inner, re.S)
        if m:
            value = self.expand(self.raw(m.group(1)), depth + 1)
            want = bool(value.strip()) if m.group(2) == "?" else not value.strip()
            return self.expand(m.group(3), depth + 1) if want else ""
        return self.expand(self.raw(inner.strip()), depth + 1)


def _matching(text: str, start: int, open_c: str, close_c: str) -> int:
    depth = 0
    for j in range(start, len(text)):
        if text[j] == open_c:
            depth += 1
        elif text[j] == close_c:
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


def split_list(value: str) -> list[str]:
    """A Postfix list: whitespace/comma separated, `{ … }` kept whole (inline: maps)."""
    out: list[str] = []
    cur = ""
    depth = 0
    for c in value:
        if c == "{":
            depth += 1
        elif c == "}":
            depth = max(0, depth - 1)
        if depth == 0 and (c.isspace() or c == ","):
            if cur:
                out.append(cur)
            cur = ""
            continue
        cur += c
    if cur:
        out.append(cur)
    return out


# --------------------------------------------------------------------------------------------
# Tables (maps) and networks


@dataclass(frozen=True, slots=True)
class TableEntry:
    key: str
    result: str
    path: str
    line: int


@dataclass(slots=True)
class Table:
    """A lookup table's source entries (`cidr:`, `hash:`→ the text file, `inline:{…}`…)."""

    spec: str
    kind: str
    entries: list[TableEntry] = field(default_factory=list)
    readable: bool = True


def note(errors: list[ErrorEntry], entry: ErrorEntry) -> None:
    """Record an error once: a table entry is evaluated again for every client and service
    decided."""
    if entry not in errors:
        errors.append(entry)


def load_table(spec: str, root: Path | None, errors: list[ErrorEntry],
               files: list[str]) -> Table:
    kind, _, rest = spec.partition(":")
    table = Table(spec, kind)
    if kind == "inline" or (rest.startswith("{") and kind in ("static", "inline")):
        body = rest.strip()
        if body.startswith("{") and body.endswith("}"):
            body = body[1:-1]
        for item in split_list(body):
            k, _, v = item.strip("{}").partition("=")
            table.entries.append(TableEntry(k.strip(), v.strip(), spec, 0))
        return table
    if kind in ("cidr", "regexp", "pcre") and rest.strip().startswith("{"):
        body = rest.strip()[1:-1]  # cidr:{ {rule}, {rule} } (Postfix 3.7 inline form)
        for rule_text in re.findall(r"\{([^{}]*)\}", body):
            parts = rule_text.strip().split(None, 1)
            if parts:
                table.entries.append(TableEntry(parts[0], parts[1] if len(parts) > 1 else "",
                                                spec, 0))
        return table
    if kind == "static":
        table.entries.append(TableEntry("*", rest.strip("{} "), spec, 0))
        return table
    if kind in ("cidr", "hash", "btree", "lmdb", "cdb", "dbm", "texthash", "regexp", "pcre"):
        src = under_root(rest, root)
        try:
            text = read_text(src, limit=MAX_FILE_BYTES)
        except InputError as exc:
            table.readable = False
            note(errors, ErrorEntry(spec, f"table source {src}: {exc.message}; its entries "
                                    "were not evaluated"))
            return table
        files.append(str(src))
        for no, line in enumerate(text.splitlines(), 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            parts = _regex_entry(s) if kind in ("regexp", "pcre") else None
            parts = parts or s.split(None, 1)
            table.entries.append(TableEntry(parts[0], parts[1] if len(parts) > 1 else "",
                                            str(src), no))
        return table
    table.readable = False
    return table


def _regex_entry(line: str) -> list[str] | None:
    """`[!]/pattern/flags result` split at the closing `/` (the pattern may hold spaces)."""
    start = 1 if line.startswith("!") else 0
    if line[start:start + 1] != "/":
        return None
    i = start + 1
    while i < len(line) and line[i] != "/":
        i += 2 if line[i] == "\\" else 1
    if i >= len(line):
        return None
    end = i + 1
    while end < len(line) and line[end].isalpha():
        end += 1
    return [line[:end], line[end:].strip()]


def regex_key_matches(key: str, text: str) -> bool:
    """Does a regexp:/pcre: table key (`[!]/pattern/flags`) match `text`? Matching is
    case-insensitive unless the `i` flag toggles it (regexp_table(5), pcre_table(5));
    ValueError when the key cannot be evaluated here (a bad pattern, an `if` block)."""
    m = re.fullmatch(r"(!?)/(.*)/([A-Za-z]*)", key, re.S)
    if m is None:
        raise ValueError(f"{key!r} is not a /pattern/ this check can evaluate "
                         "(if/endif blocks and other delimiters are not modelled)")
    flags = 0 if "i" in m.group(3) else re.IGNORECASE
    try:
        hit = re.search(m.group(2), text, flags) is not None
    except re.error as exc:
        raise ValueError(f"pattern {m.group(2)!r}: {exc}") from None
    return hit != bool(m.group(1))


def _is_permit_result(result: str) -> bool:
    r = result.strip().split()[0] if result.strip() else ""
    if re.fullmatch(r"\d+", r):  # numeric results are OK in access(5)
        return True
    return r.lower() in ("ok", "relay", "permit") or r.lower().startswith("permit_")


def _is_reject_result(result: str) -> bool:
    r = result.strip().split()[0].lower() if result.strip() else ""
    return r in ("reject", "defer", "defer_if_permit", "discard") or bool(
        re.fullmatch(r"[45]\d\d", r)) or r.startswith("reject_") or r == "reject_unauth_destination"


def client_matches(key: str, client: IPAddress, kind: str) -> bool:
    """Does a client-access key (CIDR, IP, hash octet prefix, /regex/) match this client
    address (whose name is "unknown": the modelled outside client has no reverse DNS)?"""
    if kind in ("regexp", "pcre"):  # the name is looked up too: "unknown" without rDNS
        return any(regex_key_matches(key, t) for t in ("unknown", str(client)))
    key = key.strip("[]")
    if kind == "cidr":
        try:
            return client in ipaddress.ip_network(key.replace("[", "").replace("]", ""),
                                                  strict=False)
        except ValueError:
            return False
    text = str(client)
    if key == text:
        return True
    if isinstance(client, ipaddress.IPv4Address) and re.fullmatch(r"\d+(\.\d+){0,2}", key):
        return text.startswith(key + ".")
    return False


@dataclass(slots=True)
class Networks:
    """The evaluated `mynetworks`: networks with the line or table entry that named them."""

    nets: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str, int, bool]]
    names: list[str]
    implicit_style: str | None = None  # "subnet"/"class"/"host" when mynetworks is unset

    def contains(self, client: IPAddress) -> tuple[bool, tuple[str, int] | None]:
        for net, path, line, negated in self.nets:
            if client in net:
                return (not negated), (path, line)
        return False, None

    def strings(self) -> list[str]:
        return [("!" if neg else "") + str(n) for n, _, _, neg in self.nets]


def parse_networks(value: str, where: Setting | None, root: Path | None,
                   errors: list[ErrorEntry], files: list[str]) -> Networks:
    nets: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str, int, bool]] = []
    names: list[str] = []
    path = where.path if where else "(built-in default)"
    line = where.line if where else 0

    def add(item: str, p: str, ln: int) -> None:
        neg = item.startswith("!")
        item = item.lstrip("!")
        cleaned = re.sub(r"^\[(.*)\](/\d+)?$", lambda m: m.group(1) + (m.group(2) or ""), item)
        try:
            nets.append((ipaddress.ip_network(cleaned, strict=False), p, ln, neg))
        except ValueError:
            names.append(item)

    for item in split_list(value):
        if item.startswith("/"):
            src = under_root(item, root)
            try:
                text = read_text(src, limit=MAX_FILE_BYTES)
            except InputError as exc:
                errors.append(ErrorEntry(path, f"mynetworks file {src}: {exc.message}", line))
                continue
            files.append(str(src))
            for no, ln in enumerate(text.splitlines(), 1):
                for tok in split_list(ln.split("#", 1)[0]):
                    add(tok, str(src), no)
        elif re.match(r"^[a-z]+:", item):
            table = load_table(item, root, errors, files)
            for e in table.entries:
                add(e.key, e.path, e.line)
        else:
            add(item, path, line)
    return Networks(nets, names)


def default_networks(style: str, interfaces: list[str] | None = None) -> Networks:
    """What Postfix computes when mynetworks is unset, from the addresses it listens on
    (`inet_interfaces`; "all" = this machine's interfaces, unknown here: loopback stands
    in). `subnet` uses each address's netmask (127.0.0.1 is a /8 on lo; others unknown, so
    only the address itself), `class` its whole class A/B/C network, `host` the address."""
    addrs: list[IPAddress] = []
    for item in interfaces or ["all"]:
        item = item.strip("[]").lower()
        if item in ("all", "loopback-only", "localhost"):
            addrs += [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
            continue
        try:
            addrs.append(ipaddress.ip_address(item))
        except ValueError:
            continue  # a host name: resolved by Postfix at start, unknown here
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for a in addrs:
        if style == "host" or a.version == 6:
            nets.append(ipaddress.ip_network(a))
        elif style == "class":
            first = int(str(a).split(".")[0])
            prefix = 8 if first < 128 else 16 if first < 192 else 24
            nets.append(ipaddress.ip_network(f"{a}/{prefix}", strict=False))
        elif str(a) == "127.0.0.1":
            nets.append(ipaddress.ip_network("127.0.0.0/8"))
        else:
            nets.append(ipaddress.ip_network(a))
    unique = list(dict.fromkeys(nets))
    return Networks([(n, "(built-in default)", 0, False) for n in unique], [],
                    implicit_style=style)


# --------------------------------------------------------------------------------------------
# Restriction lists


REQUIRED = ("reject_unauth_destination", "defer_unauth_destination", "reject", "defer",
            "defer_if_permit", "check_relay_domains", "reject_unverified_recipient")
ACCESS_CHECKS = {
    "check_client_access": "client", "check_reverse_client_name_access": "name",
    "check_client_a_access": "client", "check_ccert_access": "cert",
    "check_sender_access": "forgeable", "check_helo_access": "forgeable",
    "check_sender_mx_access": "forgeable", "check_sender_ns_access": "forgeable",
    "check_sender_a_access": "forgeable", "check_helo_mx_access": "forgeable",
    "check_helo_ns_access": "forgeable", "check_helo_a_access": "forgeable",
    "check_recipient_access": "recipient", "check_recipient_mx_access": "recipient",
    "check_recipient_ns_access": "recipient", "check_recipient_a_access": "recipient",
}


@dataclass(slots=True)
class Verdict:
    """How one restriction list ends for the client."""

    outcome: str  # "permit" | "reject" | "pass"
    item: str = ""
    index: int = -1
    entry: TableEntry | None = None
    forgeable: bool = False  # permitted on something the client invents (sender, HELO, MX)


@dataclass(slots=True)
class Context:
    params: Params
    trusted: bool
    client: IPAddress
    root: Path | None
    errors: list[ErrorEntry]
    files: list[str]
    tables: dict[str, Table] = field(default_factory=dict)

    def table(self, spec: str) -> Table:
        if spec not in self.tables:
            self.tables[spec] = load_table(spec, self.root, self.errors, self.files)
        return self.tables[spec]


def evaluate_list(items: list[str], ctx: Context, depth: int = 0) -> Verdict:
    """Walk one restriction list for the modelled client (first permit/reject decides)."""
    classes = set(split_list(ctx.params.get("smtpd_restriction_classes")))
    i = 0
    while i < len(items):
        item = items[i]
        low = item.lower()
        if low in ("warn_if_reject",):
            i += 2
            continue
        if low == "permit":
            return Verdict("permit", item, i)
        if low in REQUIRED:
            return Verdict("reject", item, i)
        if low == "permit_mynetworks" and ctx.trusted:
            return Verdict("permit", item, i)
        if low == "permit_mx_backup" and not ctx.params.get("permit_mx_backup_networks").strip():
            return Verdict("permit", item, i, forgeable=True)
        if low == "permit_tls_all_clientcerts":
            return Verdict("permit", item, i, forgeable=True)
        if low in ACCESS_CHECKS and i + 1 < len(items):
            kind = ACCESS_CHECKS[low]
            spec = items[i + 1]
            v = _check_access(kind, item, spec, i, ctx)
            if v is not None:
                return v
            i += 2
            continue
        if item in classes and depth < 5:
            inner = evaluate_list(split_list(ctx.params.get(item)), ctx, depth + 1)
            if inner.outcome != "pass":
                inner.item = f"{item} ({inner.item})"
                inner.index = i
                return inner
        i += 1
    return Verdict("pass")


def _check_access(kind: str, item: str, spec: str, index: int, ctx: Context) -> Verdict | None:
    table = ctx.table(spec)
    if kind == "client":
        for e in table.entries:
            try:
                hit = e.key == "*" or client_matches(e.key, ctx.client, table.kind)
            except ValueError as exc:
                note(ctx.errors, ErrorEntry(e.path, f"{spec}: {exc}; this entry and the "
                                            "ones after it were not evaluated", e.line or None))
                return None
            if hit:
                if _is_permit_result(e.result):
                    return Verdict("permit", f"{item} {spec}", index, e)
                if _is_reject_result(e.result):
                    return Verdict("reject", f"{item} {spec}", index, e)
                return None
        return None
    if kind == "forgeable":
        for e in table.entries:
            if _is_permit_result(e.result):
                return Verdict("permit", f"{item} {spec}", index, e, forgeable=True)
    return None


RELAY_LISTS = ("smtpd_client_restrictions", "smtpd_helo_restrictions",
               "smtpd_sender_restrictions", "smtpd_relay_restrictions",
               "smtpd_recipient_restrictions")


@dataclass(slots=True)
class RelayDecision:
    """The outcome of RCPT TO:<foreign> for one client on one service."""

    accepted: bool
    verdicts: dict[str, Verdict]
    fatal: bool = False  # smtpd refuses to run (no working reject before a literal permit)

    @property
    def opener(self) -> tuple[str, Verdict] | None:
        """The relay-gate list and verdict that let the mail through, if it was a permit."""
        for name in ("smtpd_relay_restrictions", "smtpd_recipient_restrictions",
                     "smtpd_client_restrictions", "smtpd_sender_restrictions",
                     "smtpd_helo_restrictions"):
            v = self.verdicts.get(name)
            if v and v.outcome == "permit":
                return name, v
        return None


def decide(params: Params, trusted: bool, client: IPAddress, root: Path | None,
           errors: list[ErrorEntry], files: list[str],
           tables: dict[str, Table] | None = None) -> RelayDecision:
    """Does the modelled client get a foreign recipient accepted? `tables`: the maps read
    so far (a config's, shared by all its decisions, so each is read once)."""
    ctx = Context(params, trusted, client, root, errors, files,
                  tables if tables is not None else {})
    verdicts = {name: evaluate_list(split_list(params.get(name)), ctx) for name in RELAY_LISTS}
    accepted = all(v.outcome != "reject" for v in verdicts.values())
    return RelayDecision(accepted, verdicts, _fatal(params))


def _fatal(params: Params) -> bool:
    def working(name: str) -> bool:
        for item in split_list(params.get(name)):
            if item.lower() == "permit":
                return False
            if item.lower() in REQUIRED:
                return True
        return False

    return not (working("smtpd_relay_restrictions") or working("smtpd_recipient_restrictions"))


# --------------------------------------------------------------------------------------------
# Loading a whole config


@dataclass(slots=True)
class PostfixConfig:
    directory: Path
    main: dict[str, Setting]
    services: list[Service]
    main_text: list[str]
    master_text: list[str]
    files: list[str] = field(default_factory=list)
    errors: list[ErrorEntry] = field(default_factory=list)
    master_path: str | None = None
    # Postfix's built-in defaults, `config_directory` being where this main.cf lives as the
    # server sees it (`postfix -c DIR`): a copy audited elsewhere (or under --root) finds its
    # `cidr:${config_directory}/…` maps beside it, not in this machine's /etc/postfix
    defaults: dict[str, str] = field(default_factory=lambda: builtin_defaults()[0])
    tables: dict[str, Table] = field(default_factory=dict)  # lookup tables read, by spec

    def smtpd_services(self) -> list[Service]:
        return [s for s in self.services if s.is_smtpd]

    def params(self, overrides: dict[str, Setting] | None = None) -> Params:
        """The effective parameters (main.cf, a service's overrides, the defaults)."""
        return Params(self.main, overrides, self.defaults)


def load(path: Path, root: Path | None = None) -> PostfixConfig:
    """Read `DIR/main.cf` (+ `master.cf` beside it) or a main.cf file."""
    main_path = path / "main.cf" if path.is_dir() else path
    if not main_path.is_file():
        raise InputError(str(path), "no main.cf here")
    text = read_text(main_path, errors="surrogateescape", limit=MAX_FILE_BYTES)
    main, errors = parse_main_cf(text, str(main_path))
    cfg = PostfixConfig(main_path.parent, main, [], text.splitlines(), [], [str(main_path)],
                        errors, defaults={**builtin_defaults()[0], "config_directory":
                                          server_path(main_path.parent, root)})
    master_path = main_path.parent / "master.cf"
    if master_path.is_file():
        mtext = read_text(master_path, errors="surrogateescape", limit=MAX_FILE_BYTES)
        cfg.services, merr = parse_master_cf(mtext, str(master_path))
        cfg.errors.extend(merr)
        cfg.master_text = mtext.splitlines()
        cfg.files.append(str(master_path))
        cfg.master_path = str(master_path)
    else:
        cfg.services = [Service("smtp", "inet", "smtpd", [], "(stock master.cf)", 0)]
    return cfg


PORT_NAMES = {"smtp": 25, "submission": 587, "smtps": 465, "submissions": 465}


def service_listen(svc: Service, params: Params, all_services: list[Service]) -> list[str]:
    """`addr:port` strings the service accepts connections on."""
    names = [svc.name]
    if svc.type == "pass":  # postscreen hands connections over
        names = [s.name for s in all_services if s.type == "inet" and s.command == "postscreen"]
    out: list[str] = []
    interfaces = split_list(params.get("inet_interfaces")) or ["all"]
    for name in names:
        host, _, port = name.rpartition(":")
        port_no = PORT_NAMES.get(port, ascii_int(port) or 0)
        hosts = [host.strip("[]")] if host else [
            "*" if i in ("all",) else ("127.0.0.1" if i == "loopback-only" else i)
            for i in interfaces]
        out += [f"{h}:{port_no}" for h in hosts]
    return out


def _loopback(text: str) -> bool:
    h = text.rpartition(":")[0].strip("[]")
    if h in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


class PostfixAuditor:
    """Postfix (main.cf + master.cf in /etc/postfix)."""

    name = "postfix"

    def candidates(self, root: Path) -> list[Path]:
        p = under_root("/etc/postfix", root)
        return [p] if (p / "main.cf").is_file() else []

    def why_not(self, path: Path) -> str | None:
        """Why a path that looks like Postfix's cannot be audited (main.cf missing)."""
        if path.is_dir() and not (path / "main.cf").exists() and (
                (path / "master.cf").is_file() or path.name == "postfix"):
            return ("looks like a Postfix config directory, but main.cf is missing (Postfix "
                    "cannot start without it): nothing to audit")
        if path.name == "master.cf":
            return "master.cf alone cannot be audited: give the directory holding main.cf"
        return None

    def recognise(self, path: Path) -> bool:
        if path.is_dir():
            return (path / "main.cf").is_file()
        if path.name == "main.cf":
            return True
        if path.name == "master.cf":
            return False
        head = peek(path, 20000)
        return bool(re.search(r"^\s*(smtpd_\w+|mynetworks|myhostname|mydestination)\s*=",
                              head, re.M))

    def audit(self, path: Path, options: AuditOptions) -> AuditResult:
        from relayguard.audit.rules.postfix import audit_config

        cfg = load(path, options.root)
        client = options.outside_client or DEFAULT_OUTSIDE
        result = AuditResult(server=self.name, config=str(path))
        findings, facts = audit_config(cfg, client, options.root)
        result.findings.extend(findings)
        result.facts["mta"] = facts
        result.files = list(dict.fromkeys(cfg.files))
        result.errors = list(cfg.errors)
        return result

    def config_test(self, path: Path) -> tuple[bool, str] | None:
        exe = shutil.which("postfix") or ("/usr/sbin/postfix"
                                           if Path("/usr/sbin/postfix").exists() else None)
        if exe is None:
            return None
        directory = path if path.is_dir() else path.parent
        # Postfix reports through syslog/its tty; `script` gives it a tty so errors show.
        cmd = [exe, "-c", str(directory), "check"]
        if shutil.which("script"):
            cmd = ["script", "-qec", shlex.join(cmd), "/dev/null"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
        out = (proc.stdout + proc.stderr).strip()
        return proc.returncode == 0 and "fatal" not in out, out
