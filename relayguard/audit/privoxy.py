"""Privoxy's main config and the actions files it names, as Privoxy 3.0 reads them.

Main config: `directive value…` per line, `#` comments, case-insensitive names; relayguard
keeps `listen-address`, `permit-access`/`deny-access` (in order), the remote-control
switches, forwarders, `confdir` and `actionsfile`. Actions files: `{ +action{param} … }`
sections followed by URL patterns, `{{alias}}` definitions expanded; only what decides
`limit-connect` for every URL (the pattern `/`) is kept. Judging lives in rules/privoxy.py.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from relayguard.audit.base import AuditOptions, AuditResult, under_root
from relayguard.audit.configtest import run_check
from relayguard.audit.directive import Directive, read_lines
from relayguard.audit.readfile import peek
from relayguard.errors import InputError
from relayguard.findings import ErrorEntry

DEFAULT_LISTEN = "127.0.0.1:8118"


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """`permit-access SRC [DST]` / `deny-access SRC [DST]`."""

    permit: bool
    src: str
    dst: str | None
    directive: Directive


@dataclass(frozen=True, slots=True)
class LimitConnect:
    """A `+limit-connect{ports}` (ports None for `-limit-connect`) applying to every URL."""

    ports: str | None
    path: str
    line: int


@dataclass
class PrivoxyConfig:
    path: str
    directives: list[Directive] = field(default_factory=list)
    listens: list[Directive] = field(default_factory=list)
    access: list[AccessEntry] = field(default_factory=list)
    actionsfiles: list[Path] = field(default_factory=list)
    limit_connect: list[LimitConnect] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    errors: list[ErrorEntry] = field(default_factory=list)

    def last(self, name: str) -> Directive | None:
        found = [d for d in self.directives if d.name == name]
        return found[-1] if found else None


def _tokens(text: str) -> list[str]:
    """Tokens before an unescaped `#` (Privoxy comments may start anywhere)."""
    out = ""
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] == "#":
            out += "#"
            i += 2
            continue
        if text[i] == "#":
            break
        out += text[i]
        i += 1
    return out.split()


def parse(path: Path, root: Path | None = None) -> PrivoxyConfig:
    """Read the Privoxy config at `path` and its actions files."""
    shown = str(path)
    cfg = PrivoxyConfig(path=shown)
    lines = read_lines(path, shown)
    cfg.files.append(shown)
    for n, text in enumerate(lines, 1):
        tokens = _tokens(text)
        if not tokens:
            continue
        d = Directive(shown, n, tokens[0].lower(), tuple(tokens[1:]), text)
        cfg.directives.append(d)
        if d.name == "listen-address":
            if d.args:
                cfg.listens.append(d)
            else:
                cfg.errors.append(ErrorEntry(shown, "listen-address without an address", n))
        elif d.name in ("permit-access", "deny-access"):
            if not d.args:
                cfg.errors.append(ErrorEntry(shown, f"{d.name} without a source address", n))
                continue
            cfg.access.append(AccessEntry(d.name == "permit-access", d.args[0],
                                          d.args[1] if len(d.args) > 1 else None, d))
    confdir_d = cfg.last("confdir")
    confdir = under_root(confdir_d.args[0], root) if confdir_d and confdir_d.args \
        else path.parent
    if not confdir.is_absolute():
        confdir = path.parent / confdir
    for d in cfg.directives:
        if d.name == "actionsfile" and d.args:
            target = confdir / d.args[0]
            cfg.actionsfiles.append(target)
            try:
                _parse_actions(cfg, target)
            except InputError as exc:
                cfg.errors.append(ErrorEntry(d.path, f"actionsfile {d.args[0]}: "
                                             f"{exc.message}", d.line))
    return cfg


def _parse_actions(cfg: PrivoxyConfig, path: Path) -> None:
    """Record every `limit-connect` that applies to all URLs (pattern `/`), in order."""
    lines = read_lines(path)
    cfg.files.append(str(path))
    aliases: dict[str, list[str]] = {}
    mode = "none"  # "alias", "skip", "actions"
    actions: list[str] = []
    start = 0
    i = 0
    while i < len(lines):
        text = lines[i]
        n = i + 1
        i += 1
        s = text.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("{{"):
            name = s.strip("{} \t").lower()
            mode = "alias" if name == "alias" else "skip"
            continue
        if s.startswith("{"):
            spec = s
            while "}" not in _close_brace(spec) and i < len(lines):
                spec = spec.rstrip("\\") + " " + lines[i].strip()
                i += 1
            mode, start = "actions", n
            actions = _expand(_action_tokens(spec.strip()[1:].rsplit("}", 1)[0]), aliases)
            continue
        if mode == "alias":
            name, eq, value = s.partition("=")
            if eq:
                aliases[name.strip().lower()] = _expand(_action_tokens(value), aliases)
            continue
        if mode == "actions" and s.split()[0] == "/":
            for a in actions:
                low = a.lower()
                if low.startswith("+limit-connect{"):
                    cfg.limit_connect.append(LimitConnect(a[len("+limit-connect{"):-1],
                                                          str(path), start))
                elif low == "-limit-connect":
                    cfg.limit_connect.append(LimitConnect(None, str(path), start))


def _close_brace(spec: str) -> str:
    """The part of a section header after its last parameter brace (to find the end `}`)."""
    depth = 0
    for idx, ch in enumerate(spec):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return spec[idx:]
    return ""


def _action_tokens(text: str) -> list[str]:
    """Split `+a{x, y} -b` on whitespace outside braces."""
    out: list[str] = []
    cur = ""
    depth = 0
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
        if ch in " \t\\" and depth == 0:
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def _expand(tokens: list[str], aliases: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    for t in tokens:
        if t[:1] in "+-":
            out.append(t)
        else:
            out += aliases.get(t.lower(), [])
    return out


class PrivoxyAuditor:
    """Privoxy (/etc/privoxy/config and its actions files)."""

    name = "privoxy"

    def candidates(self, root: Path) -> list[Path]:
        p = root / "etc/privoxy/config"
        return [p] if p.is_file() else []

    def recognise(self, path: Path) -> bool:
        if path.is_dir():
            return (path / "config").is_file() and (path / "default.action").exists()
        head = peek(path, 200000)
        return bool(re.search(r"^\s*listen-address\s", head, re.M | re.I)) and bool(
            re.search(r"^\s*(actionsfile|confdir|filterfile)\s", head, re.M | re.I))

    def audit(self, path: Path, options: AuditOptions) -> AuditResult:
        from relayguard.audit.rules import privoxy as rules

        if path.is_dir():
            path = path / "config"
        cfg = parse(path, options.root)
        findings, facts = rules.check(cfg, options)
        return AuditResult(server=self.name, config=str(path), findings=findings,
                           errors=list(cfg.errors), files=list(cfg.files), facts=facts)

    def config_test(self, path: Path) -> tuple[bool, str] | None:
        exe = shutil.which("privoxy")
        if exe is None:
            return None
        ok, out = run_check([exe, "--config-test", str(path)])
        return ok and "Fatal error" not in out, out
