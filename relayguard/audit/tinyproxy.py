"""tinyproxy.conf as tinyproxy 1.11 reads it: one case-insensitive `Name value` per line,
`#` comment lines, quoted strings; `Allow`/`Deny` kept in order (first match wins), plus the
listeners, `ConnectPort` list and `BasicAuth`. Judging lives in rules/tinyproxy.py.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from relayguard.audit.base import AuditOptions, AuditResult
from relayguard.audit.directive import Directive, read_lines
from relayguard.audit.readfile import peek
from relayguard.digits import is_digits
from relayguard.findings import ErrorEntry

# tinyproxy 1.11 src/conf.c directive table; anything else is a syntax error for tinyproxy.
KNOWN = frozenset((
    "logfile", "pidfile", "anonymous", "viaproxyname", "defaulterrorfile", "statfile",
    "stathost", "xtinyproxy", "syslog", "bindsame", "disableviaheader", "port", "maxclients",
    "maxspareservers", "minspareservers", "startservers", "maxrequestsperchild", "timeout",
    "connectport", "user", "group", "listen", "allow", "deny", "bind", "basicauth",
    "basicauthrealm", "errorfile", "addheader", "filter", "filterurls", "filterextended",
    "filterdefaultdeny", "filtercasesensitive", "filtertype", "reversebaseurl", "reverseonly",
    "reversemagic", "reversepath", "upstream", "loglevel",
))


@dataclass(frozen=True, slots=True)
class AclEntry:
    """`Allow x` / `Deny x`: x is an address, a CIDR, or a host/domain name (reverse DNS)."""

    allow: bool
    value: str
    directive: Directive


@dataclass
class TinyproxyConfig:
    path: str
    directives: list[Directive] = field(default_factory=list)
    acl: list[AclEntry] = field(default_factory=list)
    listens: list[Directive] = field(default_factory=list)
    connect_ports: list[tuple[int, Directive]] = field(default_factory=list)
    basic_auth: list[Directive] = field(default_factory=list)
    port: Directive | None = None
    files: list[str] = field(default_factory=list)
    errors: list[ErrorEntry] = field(default_factory=list)


def _split(text: str) -> list[str]:
    """Split on whitespace, keeping "quoted strings" whole (quotes removed)."""
    out: list[str] = []
    cur = ""
    quoted = False
    had = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            had = True
        elif ch in " \t" and not quoted:
            if cur or had:
                out.append(cur)
            cur, had = "", False
        else:
            cur += ch
    if cur or had:
        out.append(cur)
    return out


def parse(path: Path) -> TinyproxyConfig:
    """Read tinyproxy.conf at `path`; InputError only if the file cannot be read."""
    shown = str(path)
    cfg = TinyproxyConfig(path=shown)
    lines = read_lines(path, shown)
    cfg.files.append(shown)
    for n, text in enumerate(lines, 1):
        s = text.strip()
        if not s or s.startswith("#"):
            continue
        tokens = _split(s)
        if not tokens:
            continue
        d = Directive(shown, n, tokens[0].lower(), tuple(tokens[1:]), text)
        if d.name not in KNOWN:
            cfg.errors.append(ErrorEntry(shown, f"unknown directive {tokens[0]!r} "
                                         "(tinyproxy: syntax error, it will not start)", n))
            continue
        if not d.args:
            cfg.errors.append(ErrorEntry(shown, f"{tokens[0]} needs a value", n))
            continue
        cfg.directives.append(d)
        _interpret(cfg, d)
    if cfg.port is None:
        cfg.errors.append(ErrorEntry(shown, "no Port line (tinyproxy refuses to start)"))
    return cfg


def _interpret(cfg: TinyproxyConfig, d: Directive) -> None:
    if d.name in ("allow", "deny"):
        cfg.acl.append(AclEntry(d.name == "allow", d.args[0], d))
    elif d.name == "listen":
        cfg.listens.append(d)
    elif d.name == "port":
        if is_digits(d.args[0]) and 0 < int(d.args[0]) < 65536:
            cfg.port = d
        else:
            cfg.errors.append(ErrorEntry(d.path, f"Port {d.args[0]!r} is not a port number",
                                         d.line))
    elif d.name == "connectport":
        if is_digits(d.args[0]):
            cfg.connect_ports.append((int(d.args[0]), d))
        else:
            cfg.errors.append(ErrorEntry(d.path, f"ConnectPort {d.args[0]!r} is not a number",
                                         d.line))
    elif d.name == "basicauth":
        if len(d.args) < 2:
            cfg.errors.append(ErrorEntry(d.path, "BasicAuth needs a user and a password",
                                         d.line))
        else:
            cfg.basic_auth.append(d)


class TinyproxyAuditor:
    """tinyproxy (tinyproxy.conf)."""

    name = "tinyproxy"

    def candidates(self, root: Path) -> list[Path]:
        return [p for p in (root / "etc/tinyproxy/tinyproxy.conf", root / "etc/tinyproxy.conf")
                if p.is_file()]

    def recognise(self, path: Path) -> bool:
        if path.is_dir():
            return (path / "tinyproxy.conf").is_file()
        if path.name == "tinyproxy.conf":
            return True
        head = peek(path, 65536).lower()
        return "viaproxyname" in head or ("\nconnectport" in head and "\nport " in head)

    def audit(self, path: Path, options: AuditOptions) -> AuditResult:
        from relayguard.audit.rules import tinyproxy as rules

        if path.is_dir():
            path = path / "tinyproxy.conf"
        cfg = parse(path)
        findings, facts = rules.check(cfg, options)
        return AuditResult(server=self.name, config=str(path), findings=findings,
                           errors=list(cfg.errors), files=list(cfg.files), facts=facts)

    def config_test(self, path: Path) -> tuple[bool, str] | None:
        """tinyproxy has no check-only flag: run `tinyproxy -d -c COPY` briefly on a copy
        whose listener, pid/log files and user lines point at a throw-away loopback port
        (same line numbers), and call it accepted if it is still running after 0.8 s (it
        reports syntax errors and exits within milliseconds)."""
        exe = shutil.which("tinyproxy")
        if exe is None:
            return None
        try:
            lines = read_lines(path)
        except Exception as exc:  # any read problem is a failed test
            return False, str(exc)
        env_only = {"port", "listen", "bind", "pidfile", "logfile", "syslog", "user", "group"}
        out_lines = ["" if (_split(ln.strip()) or [""])[0].lower() in env_only else ln
                     for ln in lines]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out_lines += [f"Port {port}", "Listen 127.0.0.1"]
        with tempfile.TemporaryDirectory(prefix="rg-tinyproxy-check-") as tmp:
            conf = Path(tmp) / "tinyproxy.conf"
            conf.write_text("\n".join(out_lines) + "\n", encoding="utf-8")
            proc = subprocess.Popen([exe, "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            deadline = time.monotonic() + 0.8
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            running = proc.poll() is None
            if running:
                proc.terminate()
            try:
                output, _ = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
            text = output.decode("utf-8", "replace")[-8000:]
            with contextlib.suppress(Exception):
                text = text.replace(str(conf), str(path))
        ok = running and "Syntax error" not in text
        return ok, text
