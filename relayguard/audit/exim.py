"""Exim (Debian exim4): rebuild the runtime config as `update-exim4.conf` does (debconf
macros from update-exim4.conf.conf, then exim4.conf.template or the split conf.d), apply
Exim's own preprocessor (macros, `.ifdef`/`.ifndef`/`.else`/`.endif`, `.include`,
backslash continuations), and evaluate the RCPT ACL for a stranger.

A plain Exim configure file (not Debian's layout) is read directly.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from relayguard.audit.base import AuditOptions, AuditResult, IPAddress, under_root
from relayguard.audit.readfile import peek, read_text
from relayguard.errors import InputError
from relayguard.findings import ErrorEntry

DEFAULT_OUTSIDE = ipaddress.ip_address("198.51.100.77")
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_INCLUDE_DEPTH = 10
MAX_LINE = 1 << 20
SPLIT_SECTIONS = ("main", "acl", "router", "transport", "retry", "rewrite", "auth")
VERBS = ("accept", "deny", "require", "drop", "defer", "discard", "warn")


@dataclass(frozen=True, slots=True)
class Line:
    """A logical config line (continuations joined) and where it starts."""

    text: str
    path: str
    line: int
    raw: str = ""  # before macro expansion


@dataclass(slots=True)
class Macro:
    name: str
    value: str
    path: str
    line: int


@dataclass(slots=True)
class Source:
    """Everything read: logical lines after preprocessing, macros with their origin."""

    lines: list[Line] = field(default_factory=list)
    macros: dict[str, Macro] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    errors: list[ErrorEntry] = field(default_factory=list)
    debconf: dict[str, tuple[str, int, str]] = field(default_factory=dict)  # name→(val,line,path)


def _read(path: Path) -> str:
    return read_text(path, errors="surrogateescape", limit=MAX_FILE_BYTES)


def parse_debconf(text: str, path: str) -> dict[str, tuple[str, int, str]]:
    """update-exim4.conf.conf: shell assignments `dc_x='value'`."""
    out: dict[str, tuple[str, int, str]] = {}
    for no, raw in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", raw)
        if not m:
            continue
        value = m.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[m.group(1)] = (value, no, path)
    return out


def debconf_macros(dc: dict[str, tuple[str, int, str]]) -> dict[str, Macro]:
    """The macros update-exim4.conf seeds from the debconf values (see its `seed_macro`)."""

    def val(name: str) -> str:
        return dc.get(name, ("", 0, ""))[0]

    def semi(value: str) -> str:
        if ";" in value and not value.lstrip().startswith("<"):
            return "<; " + value
        return value

    def where(name: str) -> tuple[str, int]:
        v = dc.get(name)
        return (v[2], v[1]) if v else ("(update-exim4.conf)", 0)

    macros: dict[str, Macro] = {}

    def seed(name: str, value: str, src: str) -> None:
        p, ln = where(src)
        macros[name] = Macro(name, value, p, ln)

    if val("dc_local_interfaces"):
        seed("MAIN_LOCAL_INTERFACES", semi(val("dc_local_interfaces")), "dc_local_interfaces")
    others = val("dc_other_hostnames").replace(";", ":")
    seed("MAIN_LOCAL_DOMAINS", "@:localhost" + (f":{others}" if others else ""),
         "dc_other_hostnames")
    seed("MAIN_RELAY_TO_DOMAINS", semi(val("dc_relay_domains")), "dc_relay_domains")
    nets = semi(val("dc_relay_nets").lower())
    nets = f"{nets} ; 127.0.0.1 ; ::1" if nets.startswith("<;") else \
        f"{nets} : 127.0.0.1 : ::::1"
    seed("MAIN_RELAY_NETS", nets, "dc_relay_nets")
    ctype = val("dc_eximconfig_configtype").lower() or "local"
    seed("DC_eximconfig_configtype", ctype, "dc_eximconfig_configtype")
    seed(f"DCconfig_{ctype}", "1", "dc_eximconfig_configtype")
    seed("DCsmarthost", val("dc_smarthost"), "dc_smarthost")
    if val("dc_minimaldns") == "true":
        seed("DC_minimaldns", "1", "dc_minimaldns")
    return macros


def load(path: Path, root: Path | None = None) -> Source:
    """Read a Debian /etc/exim4 directory, its update-exim4.conf.conf, or an Exim config."""
    src = Source()
    directory: Path | None = None
    if path.is_dir():
        directory = path
    elif path.name == "update-exim4.conf.conf":
        directory = path.parent
    if directory is not None:
        ue = directory / "update-exim4.conf.conf"
        if ue.is_file():
            src.debconf = parse_debconf(_read(ue), str(ue))
            src.files.append(str(ue))
        src.macros.update(debconf_macros(src.debconf))
        plain = directory / "exim4.conf"
        if plain.is_file():
            parts = [plain]
        elif src.debconf.get("dc_use_split_config", ("false",))[0].lower() == "true":
            parts = [f for sec in SPLIT_SECTIONS
                     for f in sorted((directory / "conf.d" / sec).glob("*"))
                     if f.is_file() and not f.name.endswith((".dpkg-dist", ".dpkg-old", "~"))]
        else:
            parts = [p for p in (directory / "exim4.conf.localmacros",
                                 directory / "exim4.conf.template") if p.is_file()]
        if not parts:
            raise InputError(str(path), "no exim4.conf, exim4.conf.template or conf.d here")
    else:
        read_text(path)  # refuses devices, binary and huge files by name before anything else
        parts = [path]
        if path.name == "exim4.conf.template":
            ue = path.parent / "update-exim4.conf.conf"
            if ue.is_file():
                src.debconf = parse_debconf(_read(ue), str(ue))
                src.files.append(str(ue))
            src.macros.update(debconf_macros(src.debconf))
    state: list[bool] = []
    for p in parts:
        _preprocess(p, src, state, root, 0)
    if state:
        src.errors.append(ErrorEntry(str(parts[-1]), "missing .endif at end of file"))
    return src


def _logical(text: str):
    """(line number, text) with backslash continuations joined, comments dropped."""
    buf, start = "", 0
    for no, raw in enumerate(text.splitlines(), 1):
        s = raw.strip() if buf else raw.rstrip()
        if not buf and (not s.strip() or s.lstrip().startswith("#")):
            continue
        if not buf:
            start = no
        if s.endswith("\\") and not s.endswith("\\\\"):
            buf += s[:-1]
            continue
        yield start, buf + s
        buf = ""
    if buf:
        yield start, buf


MACRO_DEF = re.compile(r"^([A-Z][A-Za-z0-9_]*)\s*(==|=)\s*(.*)$")


def _preprocess(path: Path, src: Source, state: list[bool], root: Path | None,
                depth: int) -> None:
    try:
        text = _read(path)
    except InputError as exc:
        if depth == 0:
            raise
        src.errors.append(ErrorEntry(exc.source, exc.message, exc.line))
        return
    src.files.append(str(path))
    for no, raw in _logical(text):
        s = raw.strip()
        active = all(state)
        if s.startswith("."):
            word, _, arg = s[1:].partition(" ")
            arg = arg.strip()
            if word in ("ifdef", "ifndef"):
                defined = _macro_defined(arg, src)
                state.append(defined if word == "ifdef" else not defined)
            elif word in ("elifdef", "elifndef"):
                if state:
                    state[-1] = False  # approximate: first branch already decided
            elif word == "else":
                if state:
                    state[-1] = not state[-1]
                else:
                    src.errors.append(ErrorEntry(str(path), ".else without .ifdef", no))
            elif word == "endif":
                if state:
                    state.pop()
                else:
                    src.errors.append(ErrorEntry(str(path), ".endif without .ifdef", no))
            elif word in ("include", "include_if_exists") and active:
                target = under_root(_expand(arg, src), root)
                if depth >= MAX_INCLUDE_DEPTH:
                    src.errors.append(ErrorEntry(str(path), "includes nested too deep", no))
                elif target.exists():  # a device or directory: the reader says why not
                    _preprocess(target, src, state, root, depth + 1)
                elif word == "include":
                    src.errors.append(ErrorEntry(str(path), f".include {arg}: no such file", no))
            continue
        if not active:
            continue
        m = MACRO_DEF.match(s)
        if m and not s.startswith(("begin ",)):
            name, op, value = m.groups()
            if op == "==" or name not in src.macros:
                src.macros[name] = Macro(name, _expand(value, src), str(path), no)
            continue
        src.lines.append(Line(_expand(s, src), str(path), no, s))


def _macro_defined(name: str, src: Source) -> bool:
    return name in src.macros or (name.startswith("_HAVE_") and name in (
        "_HAVE_TLS", "_HAVE_DKIM", "_HAVE_SPF"))


def _expand(text: str, src: Source) -> str:
    """Substitute macros (names start with an upper-case letter), bounded."""
    if not src.macros:
        return text
    names = sorted(src.macros, key=len, reverse=True)
    pattern = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, names)) +
                         r")(?![A-Za-z0-9_])")
    for _ in range(10):
        try:
            new = pattern.sub(_Substitute(src, len(text)), text)
        except _TooLong:
            return text
        if new == text:
            break
        text = new
    return text


class _TooLong(Exception):
    """A macro expansion grew past MAX_LINE."""


class _Substitute:
    """Replacement function for one pass that stops a line growing past MAX_LINE (macros
    doubling themselves line after line would otherwise exhaust memory)."""

    def __init__(self, src: Source, start: int) -> None:
        self.src = src
        self.total = start

    def __call__(self, m: re.Match[str]) -> str:
        value = self.src.macros[m.group(1)].value
        self.total += len(value)
        if self.total > MAX_LINE:
            raise _TooLong
        return value


# --------------------------------------------------------------------------------------------
# The configuration model


@dataclass(slots=True)
class Statement:
    verb: str
    conditions: list[tuple[str, str, Line]]  # (name incl. leading "!", value, where)
    where: Line


@dataclass(slots=True)
class EximConfig:
    main: dict[str, Line]  # option name → last line that set it
    named_lists: dict[str, tuple[str, str, Line]]  # name → (kind, value, line)
    acls: dict[str, list[Statement]]
    acl_lines: dict[str, Line]
    # authenticator name → (its `name:` line, option → line)
    authenticators: dict[str, tuple[Line, dict[str, Line]]] = field(default_factory=dict)


def model(src: Source) -> EximConfig:
    cfg = EximConfig({}, {}, {}, {})
    auth: dict[str, Line] | None = None
    section = "main"
    current: list[Statement] | None = None
    for ln in src.lines:
        s = ln.text.strip()
        if s.startswith("begin "):
            section = s.split(None, 1)[1].strip()
            current = None
            continue
        if section == "main":
            m = re.match(r"^(hostlist|domainlist|addresslist|localpartlist)\s+(\w+)\s*=\s*(.*)$",
                         s)
            if m:
                cfg.named_lists[m.group(2)] = (m.group(1), m.group(3).strip(), ln)
                continue
            name, eq, _ = s.partition("=")
            if eq:
                cfg.main[name.strip()] = ln
            continue
        if section == "authenticators":
            m = re.match(r"^([\w.-]+):\s*$", s)
            if m:
                auth = {}
                cfg.authenticators[m.group(1)] = (ln, auth)
            elif auth is not None:
                name, eq, _ = s.partition("=")
                if eq:
                    auth[name.strip()] = ln
            continue
        if section != "acl":
            continue
        m = re.match(r"^(\w+):\s*$", s)
        if m:
            current = cfg.acls.setdefault(m.group(1), [])
            cfg.acl_lines[m.group(1)] = ln
            continue
        if current is None:
            continue
        word, *more = s.split(None, 1) or [""]  # Exim takes a tab after the verb too
        if word in VERBS:
            st = Statement(word, [], ln)
            current.append(st)
            rest = more[0].strip() if more else ""
            if rest:
                _add_condition(st, rest, ln)
        elif current:
            _add_condition(current[-1], s, ln)
    return cfg


def _add_condition(st: Statement, text: str, ln: Line) -> None:
    name, eq, value = text.partition("=")
    if eq:
        st.conditions.append((name.strip().replace(" ", ""), value.strip(), ln))


def option(cfg: EximConfig, name: str) -> str | None:
    ln = cfg.main.get(name)
    return ln.text.partition("=")[2].strip() if ln else None


def split_exim_list(value: str) -> list[str]:
    """An Exim list: `:` separated (`::` is a literal colon), or `<;` to change separator."""
    value = value.strip()
    sep = ":"
    m = re.match(r"^<\s*(\S)\s*", value)
    if m:
        sep, value = m.group(1), value[m.end():]
    if sep == ":":
        parts = re.split(r"(?<!:):(?!:)", value.replace("::", "\x00"))
        parts = [p.replace("\x00", ":") for p in parts]
    else:
        parts = value.split(sep)
    return [p.strip() for p in parts if p.strip()]


# --------------------------------------------------------------------------------------------
# Evaluation for a stranger

Tri = bool | None  # True / False / None = the client chooses (forgeable)


def host_in(item_list: str, client: IPAddress, cfg: EximConfig, depth: int = 0) -> bool:
    """Does `client` (no reverse DNS) match an Exim host list? Negated items are honoured."""
    for item in split_exim_list(item_list):
        neg = item.startswith("!")
        item = item.lstrip("!").strip()
        if item.startswith("+") and depth < 5:
            named = cfg.named_lists.get(item[1:])
            hit = named is not None and host_in(named[1], client, cfg, depth + 1)
        else:
            hit = _host_item(item, client)
        if hit:
            return not neg
    return False


def _host_item(item: str, client: IPAddress) -> bool:
    if item == "*":
        return True
    try:
        return client in ipaddress.ip_network(item, strict=False)
    except ValueError:
        return False


def domain_in(item_list: str, domain: str, cfg: EximConfig, depth: int = 0) -> bool:
    for item in split_exim_list(item_list):
        neg = item.startswith("!")
        item = item.lstrip("!").strip()
        if item.startswith("+") and depth < 5:
            named = cfg.named_lists.get(item[1:])
            hit = named is not None and domain_in(named[1], domain, cfg, depth + 1)
        elif item == "*":
            hit = True
        elif item.startswith("*"):
            hit = domain.endswith(item[1:])
        elif item.startswith("^"):
            try:
                hit = re.search(item, domain) is not None
            except re.error:
                hit = False
        else:
            hit = item.lower() == domain
        if hit:
            return not neg
    return False


FOREIGN = "relay-test.relayguard.invalid"
FORGEABLE = ("senders", "sender_domains", "local_parts", "recipients", "verify", "encrypted",
             "condition")


def condition_value(name: str, value: str, client: IPAddress, cfg: EximConfig,
                    authenticated: bool) -> Tri:
    neg = name.startswith("!")
    base = name.lstrip("!")
    result: Tri
    if base == "hosts":
        result = host_in(value, client, cfg)
    elif base == "domains":
        result = domain_in(value, FOREIGN, cfg)
    elif base == "authenticated":
        result = authenticated
    elif base in ("dnslists", "acl", "ratelimit", "spf", "malware", "spam"):
        result = False
    elif base == "condition":
        result = None if "$sender" in value or "$h_" in value or "$local_part" in value \
            else False
    elif base in FORGEABLE:
        result = None
    else:
        return True  # a modifier (message, control, log_message, set…): no condition
    if result is None:
        return None
    return (not result) if neg else result


@dataclass(slots=True)
class RcptVerdict:
    accepted: bool
    statement: Statement | None  # the one that decided (None: implicit deny / ACL unset)
    relay_check: Statement | None  # first statement that rejects foreign domains
    acl_name: str | None


def evaluate_rcpt(cfg: EximConfig, client: IPAddress, authenticated: bool = False
                  ) -> RcptVerdict:
    acl_name = option(cfg, "acl_smtp_rcpt")
    if not acl_name:
        return RcptVerdict(False, None, None, None)
    stmts = cfg.acls.get(acl_name.strip())
    if stmts is None:
        return RcptVerdict(False, None, None, acl_name)
    relay_check: Statement | None = None
    for st in stmts:
        values = [condition_value(n, v, client, cfg, authenticated)
                  for n, v, _ in st.conditions]
        if st.verb in ("accept", "discard"):
            if all(v is not False for v in values):
                return RcptVerdict(True, st, relay_check, acl_name)
        elif st.verb in ("deny", "drop", "defer"):
            if (values and all(v is True for v in values)) or not values:
                return RcptVerdict(False, st, relay_check or st, acl_name)
        elif st.verb == "require" and any(v is False for v in values):
            if any(n.lstrip("!") == "domains" for n, _, _ in st.conditions):
                relay_check = relay_check or st
            return RcptVerdict(False, st, relay_check or st, acl_name)
    return RcptVerdict(False, None, relay_check, acl_name)


# --------------------------------------------------------------------------------------------
# The Auditor


def find_exim() -> list[str] | None:
    """The exim binary (installed, or unpacked by the tests into a cache dir)."""
    for name in ("exim4", "exim"):
        exe = shutil.which(name)
        if exe:
            return [exe]
    return None


class EximAuditor:
    """Exim 4 (Debian: /etc/exim4 with update-exim4.conf.conf)."""

    name = "exim"

    def candidates(self, root: Path) -> list[Path]:
        p = under_root("/etc/exim4", root)
        return [p] if p.is_dir() and any((p / f).exists() for f in (
            "update-exim4.conf.conf", "exim4.conf", "exim4.conf.template")) else []

    def recognise(self, path: Path) -> bool:
        if path.is_dir():
            return any((path / f).is_file() for f in ("update-exim4.conf.conf", "exim4.conf",
                                                        "exim4.conf.template"))
        if path.name in ("update-exim4.conf.conf", "exim4.conf.template", "exim4.conf",
                         "exim.conf", "configure"):
            return True
        head = peek(path, 50000)
        return bool(re.search(r"^\s*begin\s+(acl|routers)\s*$", head, re.M))

    def audit(self, path: Path, options: AuditOptions) -> AuditResult:
        from relayguard.audit.rules.exim import audit_source

        src = load(path, options.root)
        client = options.outside_client or DEFAULT_OUTSIDE
        result = AuditResult(server=self.name, config=str(path), files=list(src.files),
                             errors=list(src.errors))
        findings, facts = audit_source(src, client)
        result.findings.extend(findings)
        result.facts["mta"] = facts
        return result

    def config_test(self, path: Path) -> tuple[bool, str] | None:
        exe = find_exim()
        if exe is None or path.is_dir() or path.name == "update-exim4.conf.conf":
            return None  # the Debian layout needs update-exim4.conf first
        try:
            proc = subprocess.run([*exe, "-C", str(path), "-bV"], capture_output=True,
                                  text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
        return proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
