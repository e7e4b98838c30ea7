"""Apache httpd config parser that follows what httpd itself does at startup.

Two passes, like httpd: the *syntax* pass turns each file into a tree of directives and
sections (file:line on every node); the *startup* pass walks it in order the way httpd does —
`Define`/`${VAR}`, `LoadModule`, `<IfModule>`/`<IfDefine>`/`<IfVersion>`/`<IfFile>` decided
at that point of the file, `Include`/`IncludeOptional` spliced in (globs, directories,
relative to ServerRoot) — and yields the effective tree that policy code evaluates.
Bad input never raises out of here: each problem becomes an `ErrorEntry` with file and line,
and everything else is still parsed.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from relayguard.audit.base import AuditOptions, AuditResult, under_root
from relayguard.audit.readfile import peek, read_text
from relayguard.audit.tree import Node
from relayguard.errors import InputError
from relayguard.findings import ErrorEntry

MAX_LINE_CHARS = 64 * 1024
MAX_INCLUDE_DEPTH = 128  # httpd's AP_MAX_INCLUDE_DEPTH
MAX_FILES = 10_000
MAX_NESTING = 200  # sections + includes: far past any real config, inside Python's stack

# Modules compiled into Debian's and upstream's httpd binaries (`apache2 -l`).
STATIC_MODULES = frozenset({
    "core.c", "mod_so.c", "mod_watchdog.c", "http_core.c", "mod_log_config.c", "mod_logio.c",
    "mod_version.c", "mod_unixd.c", "core_module", "so_module", "watchdog_module", "http_module",
    "log_config_module", "logio_module", "version_module", "unixd_module",
})
ASSUMED_VERSION = (2, 4, 62)
CONDITIONALS = frozenset({"ifmodule", "ifdefine", "ifversion", "iffile", "ifdirective",
                          "ifsection"})
_VAR = re.compile(r"\$\{([A-Za-z0-9_:.-]+)\}")
_WILDCARD = re.compile(r"[*?\[]")


@dataclass
class ApacheConfig:
    """The effective configuration: what httpd would run with, plus how we got there."""

    root_file: Path
    server_root: Path
    nodes: list[Node] = field(default_factory=list)
    modules: set[str] = field(default_factory=set)
    module_nodes: dict[str, Node] = field(default_factory=dict)
    defines: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    errors: list[ErrorEntry] = field(default_factory=list)

    def has_module(self, *names: str) -> bool:
        """True if any of `names` (identifier `proxy_module` or file `mod_proxy.c`) is loaded."""
        return any(n in self.modules for n in names)


# --------------------------------------------------------------------------- syntax pass

@dataclass(slots=True)
class _Raw:
    name: str
    argtext: str
    path: str
    line: int
    text: str
    is_section: bool = False
    end_line: int | None = None
    children: list[_Raw] = field(default_factory=list)


def read_config_text(path: Path) -> str:
    """Read a config file as text, refusing what is not one (binary, huge, a device)."""
    return read_text(path)


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash-continued lines; drop blanks and comments. Returns (first line, text)."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for n, line in enumerate(text.splitlines(), 1):
        if not pending:
            start = n
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        joined = "".join(pending).strip()
        pending = []
        if joined and not joined.startswith("#"):
            out.append((start, joined))
    if pending:
        joined = "".join(pending).strip()
        if joined and not joined.startswith("#"):
            out.append((start, joined))
    return out


def split_args(text: str) -> tuple[str, ...]:
    """Split directive arguments like httpd's ap_getword_conf: quotes group, `\\"` escapes."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        if text[i] in "\"'":
            quote = text[i]
            i += 1
            buf: list[str] = []
            while i < n and text[i] != quote:
                if text[i] == "\\" and i + 1 < n and text[i + 1] == quote:
                    i += 1
                buf.append(text[i])
                i += 1
            i += 1  # closing quote (httpd tolerates a missing one: the word runs to the end)
            words.append("".join(buf))
        else:
            start = i
            while i < n and not text[i].isspace():
                i += 1
            words.append(text[start:i])
    return tuple(words)


def parse_syntax(path: Path, text: str, errors: list[ErrorEntry]) -> list[_Raw]:
    """One file into a tree of sections and directives; structural errors are recorded."""
    spath = str(path)
    top: list[_Raw] = []
    stack: list[_Raw] = []
    for lineno, line in logical_lines(text):
        if len(line) > MAX_LINE_CHARS:
            errors.append(ErrorEntry(spath, f"line longer than {MAX_LINE_CHARS} characters; "
                                     "skipped", lineno))
            continue
        target = stack[-1].children if stack else top
        if line.startswith("</"):
            name = line[2:].rstrip(">").strip()
            if not line.endswith(">"):
                errors.append(ErrorEntry(spath, f"section close {line!r} lacks '>'", lineno))
            if not stack:
                errors.append(ErrorEntry(spath, f"</{name}> without matching <{name}> "
                                         "section", lineno))
                continue
            if stack[-1].name.lower() != name.lower():
                errors.append(ErrorEntry(spath, f"expected </{stack[-1].name}> (opened at line "
                                         f"{stack[-1].line}) but saw </{name}>", lineno))
                continue
            stack[-1].end_line = lineno
            stack.pop()
            continue
        if line.startswith("<"):
            if not line.endswith(">"):
                errors.append(ErrorEntry(spath, f"section {line.split()[0]!r} lacks closing "
                                         "'>'", lineno))
                continue
            inner = line[1:-1].strip()
            name, _, argtext = inner.partition(" ")
            if not name:
                errors.append(ErrorEntry(spath, "empty section tag '<>'", lineno))
                continue
            sec = _Raw(name, argtext.strip(), spath, lineno, line, is_section=True)
            target.append(sec)
            stack.append(sec)
            continue
        parts = line.split(None, 1)
        target.append(_Raw(parts[0], parts[1] if len(parts) > 1 else "", spath, lineno, line))
    for sec in reversed(stack):
        errors.append(ErrorEntry(spath, f"<{sec.name}> section is never closed "
                                 f"(missing </{sec.name}>)", sec.line))
    return top


# --------------------------------------------------------------------------- startup pass

@dataclass
class _Walk:
    config: ApacheConfig
    options: AuditOptions
    env: dict[str, str]
    stack: list[str] = field(default_factory=list)
    depth: int = 0  # sections and includes being walked


def _substitute(text: str, w: _Walk) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in w.config.defines:
            return w.config.defines[name]
        if name in w.env:
            return w.env[name]
        return m.group(0)  # httpd leaves undefined variables as written (with a warning)

    return _VAR.sub(repl, text)


def _version_matches(args: tuple[str, ...], version: tuple[int, int, int]) -> bool:
    if not args:
        return False
    op, want = ("=", args[0]) if len(args) == 1 else (args[0], args[1])
    negate = op.startswith("!")
    op = op.lstrip("!")
    vstr = ".".join(map(str, version))
    if want.startswith("/") and want.endswith("/") and len(want) > 1:
        op, want = "~", want[1:-1]
    if op == "~":
        try:
            result = re.search(want, vstr) is not None
        except re.error:
            result = False
    else:
        parts = [int(p) for p in re.findall(r"\d+", want)[:3]]
        mine = list(version[: len(parts)])
        result = {"=": mine == parts, "==": mine == parts, ">": mine > parts,
                  ">=": mine >= parts, "<": mine < parts, "<=": mine <= parts}.get(op, False)
    return result != negate


def _condition(raw: _Raw, args: tuple[str, ...], w: _Walk) -> bool:
    key = raw.name.lower()
    arg = args[0] if args else ""
    if key == "ifversion":
        return _version_matches(args, ASSUMED_VERSION)
    negate = arg.startswith("!")
    arg = arg[1:] if negate else arg
    if key == "ifmodule":
        result = arg in w.config.modules or arg in STATIC_MODULES
    elif key == "ifdefine":
        result = arg in w.config.defines
    elif key == "iffile":
        p = Path(arg)
        if not p.is_absolute():
            p = w.config.server_root / p
        result = under_root(p, w.options.root).exists()
    else:  # IfDirective / IfSection: we cannot know every module's directives; assume present
        result = True
    return result != negate


def _include_targets(arg: str, optional: bool, node: _Raw, w: _Walk) -> list[Path]:
    p = Path(arg)
    p = under_root(p, w.options.root) if p.is_absolute() else w.config.server_root / p
    if _WILDCARD.search(str(p)):
        matches = sorted(glob.glob(str(p)))
        if not matches and not optional:
            w.config.errors.append(ErrorEntry(node.path, f"Include {arg}: no file matches the "
                                              "wildcard (httpd refuses to start; "
                                              "IncludeOptional would not)", node.line))
        out: list[Path] = []
        for m in matches:
            mp = Path(m)
            out += _directory_files(mp) if mp.is_dir() else [mp]
        return out
    if p.is_dir():
        return _directory_files(p)
    if p.exists():
        return [p]
    if not optional:
        w.config.errors.append(ErrorEntry(node.path, f"Include {arg}: could not open "
                                          f"{p}: no such file or directory", node.line))
    return []


def _directory_files(d: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(d):
        dirnames.sort()
        out += [Path(dirpath) / f for f in sorted(filenames)]
        if len(out) > MAX_FILES:
            break
    return out


def _include_file(path: Path, via: _Raw, chain: tuple[tuple[str, int], ...],
                  out: list[Node], w: _Walk) -> None:
    try:
        real = str(path.resolve())
    except OSError:
        real = str(path)
    if real in w.stack:
        loop = " -> ".join([*w.stack[w.stack.index(real):], real])
        w.config.errors.append(ErrorEntry(via.path, f"include loop: {loop}", via.line))
        return
    if len(w.stack) >= MAX_INCLUDE_DEPTH:
        w.config.errors.append(ErrorEntry(via.path, f"includes nested deeper than "
                                          f"{MAX_INCLUDE_DEPTH} levels", via.line))
        return
    if len(w.config.files) >= MAX_FILES:
        w.config.errors.append(ErrorEntry(via.path, f"more than {MAX_FILES} files included; "
                                          "stopped", via.line))
        return
    try:
        text = read_config_text(path)
    except InputError as exc:
        w.config.errors.append(ErrorEntry(exc.source, exc.message, exc.line))
        return
    w.config.files.append(str(path))
    raws = parse_syntax(path, text, w.config.errors)
    w.stack.append(real)
    try:
        _walk(raws, chain, out, w)
    finally:
        w.stack.pop()


def _walk(raws: list[_Raw], chain: tuple[tuple[str, int], ...], out: list[Node],
          w: _Walk) -> None:
    """Walk one level of sections, bounded: garbage such as an HTML page in an included
    directory (thousands of unclosed `<div>`) must not exhaust Python's recursion."""
    if w.depth >= MAX_NESTING:
        if raws:
            w.config.errors.append(ErrorEntry(raws[0].path, "sections and includes nested "
                                              f"deeper than {MAX_NESTING} levels; the deeper "
                                              "part was not read", raws[0].line))
        return
    w.depth += 1
    try:
        _walk_level(raws, chain, out, w)
    finally:
        w.depth -= 1


def _walk_level(raws: list[_Raw], chain: tuple[tuple[str, int], ...], out: list[Node],
                w: _Walk) -> None:
    cfg = w.config
    for raw in raws:
        args = split_args(_substitute(raw.argtext, w))
        key = raw.name.lower()
        if raw.is_section and key in CONDITIONALS:
            if _condition(raw, args, w):
                _walk(raw.children, chain, out, w)
            continue
        node = Node(raw.name, args, raw.path, raw.line, is_section=raw.is_section,
                    raw=raw.text, end_line=raw.end_line, included_from=chain)
        if raw.is_section:
            _walk(raw.children, chain, node.children, w)
            out.append(node)
            continue
        if key in ("include", "includeoptional"):
            for target in ([] if not args else
                           _include_targets(args[0], key == "includeoptional", raw, w)):
                _include_file(target, raw, (*chain, (raw.path, raw.line)), out, w)
            continue
        if key == "define" and args:
            cfg.defines[args[0]] = args[1] if len(args) > 1 else ""
        elif key == "undefine" and args:
            cfg.defines.pop(args[0], None)
        elif key == "loadmodule" and len(args) >= 2:
            ident = args[0]
            source = Path(args[1]).name
            source = source[:-3] + ".c" if source.endswith(".so") else source
            for name in (ident, source):
                cfg.modules.add(name)
                cfg.module_nodes.setdefault(name, node)
        elif key == "serverroot" and args:
            cfg.server_root = under_root(args[0], w.options.root)
        out.append(node)


# --------------------------------------------------------------------------- entry points

ROOT_NAMES = ("apache2.conf", "httpd.conf", "conf/httpd.conf")


def find_root_file(path: Path) -> Path:
    """The main config file for a path the user gave (a file, or a server's config dir)."""
    if path.is_dir():
        for name in ROOT_NAMES:
            if (path / name).is_file():
                return path / name
        raise InputError(str(path), "no apache2.conf or httpd.conf in this directory")
    return path


def default_server_root(root_file: Path) -> Path:
    """httpd's compiled-in ServerRoot: the config's directory (`conf/..` for RHEL layouts)."""
    parent = root_file.parent
    return parent.parent if parent.name == "conf" else parent


def read_envvars(path: Path) -> dict[str, str]:
    """Debian's `envvars` (`export APACHE_LOG_DIR=/var/log/apache2$SUFFIX`), simply evaluated."""
    env: dict[str, str] = {"SUFFIX": ""}
    try:
        text = read_config_text(path)
    except InputError:
        return env
    assign = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
    for line in text.splitlines():
        m = assign.match(line)
        if not m:
            continue
        value = m.group(2).strip().strip("'\"")
        value = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
                       lambda v: env.get(v.group(1), ""), value)
        env[m.group(1)] = value
    return env


def parse_apache(path: Path, options: AuditOptions | None = None) -> ApacheConfig:
    """Parse the config rooted at `path` (file or directory) into its effective tree."""
    options = options or AuditOptions()
    root_file = find_root_file(path)
    text = read_config_text(root_file)  # an unreadable root file is fatal: InputError
    cfg = ApacheConfig(root_file=root_file, server_root=default_server_root(root_file))
    for d in options.defines:
        name, _, value = d.partition("=")
        cfg.defines[name] = value
    env = read_envvars(root_file.parent / "envvars")
    w = _Walk(config=cfg, options=options, env=env)
    cfg.files.append(str(root_file))
    w.stack.append(str(root_file.resolve()))
    _walk(parse_syntax(root_file, text, cfg.errors), (), cfg.nodes, w)
    return cfg


def httpd_binary() -> str | None:
    """The installed httpd (`apache2` on Debian, `httpd` elsewhere), if any."""
    for name in ("apache2", "httpd"):
        found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                       else None)
        if found:
            return found
    return None


_APACHE_HINTS = re.compile(
    r"^\s*(<VirtualHost|<Directory|<IfModule|<Proxy|LoadModule\s|ProxyRequests\s|ServerRoot\s|"
    r"DocumentRoot\s|ProxyPass|RewriteRule\s|Listen\s+\S+\s*$)", re.IGNORECASE | re.MULTILINE)


class ApacheAuditor:
    """Apache httpd 2.2/2.4: Debian (`/etc/apache2`) and RHEL (`/etc/httpd`) layouts."""

    name = "apache"

    def candidates(self, root: Path) -> list[Path]:
        found = [root / "etc/apache2/apache2.conf", root / "etc/httpd/conf/httpd.conf"]
        return [p for p in found if p.is_file()]

    def recognise(self, path: Path) -> bool:
        if path.is_dir():
            return any((path / n).is_file() for n in ROOT_NAMES)
        if path.name in ("apache2.conf", "httpd.conf"):
            return True
        head = peek(path, 256 * 1024)
        return len(_APACHE_HINTS.findall(head)) >= 1 and "http_access" not in head \
            and "server {" not in head and "server{" not in head

    def audit(self, path: Path, options: AuditOptions) -> AuditResult:
        from relayguard.audit.rules.apache import check

        cfg = parse_apache(path, options)
        result = AuditResult(server=self.name, config=str(cfg.root_file), files=cfg.files,
                             errors=list(cfg.errors))
        result.findings, result.facts = check(cfg, options)
        return result

    def config_test(self, path: Path) -> tuple[bool, str] | None:
        binary = httpd_binary()
        if binary is None:
            return None
        root_file = find_root_file(path)
        env = dict(os.environ)
        env.update({k: v for k, v in read_envvars(root_file.parent / "envvars").items()
                    if k != "SUFFIX"})
        with tempfile.TemporaryDirectory(prefix="relayguard-httpd-t-") as scratch:
            # A syntax check must not depend on run-time dirs a never-started httpd lacks
            # (Debian's /var/run/apache2 is made by apache2ctl at start).
            for var in ("APACHE_RUN_DIR", "APACHE_LOCK_DIR", "APACHE_LOG_DIR"):
                if var in env and not Path(env[var]).is_dir():
                    env[var] = scratch
            if "APACHE_PID_FILE" in env and not Path(env["APACHE_PID_FILE"]).parent.is_dir():
                env["APACHE_PID_FILE"] = f"{scratch}/apache2.pid"
            try:
                proc = subprocess.run(
                    [binary, "-t", "-f", str(root_file.resolve()),
                     "-d", str(default_server_root(root_file).resolve())],
                    capture_output=True, text=True, timeout=60, env=env, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return False, f"{binary} -t could not run: {exc}"
        return proc.returncode == 0, (proc.stdout + proc.stderr).strip()
