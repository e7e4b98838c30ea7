"""danted.conf as Dante 1.4 reads it (danted.conf(5)): global `keyword: value…` settings and
`client pass|block { … }` / `socks pass|block { … }` rules, each keeping its file:line.
Judging (first matching rule wins, method negotiation) lives in rules/dante.py.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from relayguard.audit.base import AuditOptions, AuditResult
from relayguard.audit.configtest import run_check
from relayguard.audit.directive import Directive, read_lines
from relayguard.audit.readfile import peek
from relayguard.findings import ErrorEntry

_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*:$")
_BLOCK_KINDS = ("client", "socks", "route", "monitor", "hostid")


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    line: int


@dataclass(frozen=True, slots=True)
class Setting:
    """`keyword: value…` (global, or inside a rule); `directive` cites its line."""

    key: str
    values: tuple[str, ...]
    directive: Directive


@dataclass
class DanteRule:
    """One `client|socks pass|block { … }` rule with its settings."""

    kind: str  # "client" | "socks" | "route" | "monitor" | "hostid"
    action: str  # "pass" | "block" | ""
    header: Directive
    settings: list[Setting] = field(default_factory=list)

    def get(self, key: str) -> Setting | None:
        found = [s for s in self.settings if s.key == key]
        return found[-1] if found else None


@dataclass
class DanteConfig:
    path: str
    settings: list[Setting] = field(default_factory=list)
    rules: list[DanteRule] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    errors: list[ErrorEntry] = field(default_factory=list)

    def setting(self, key: str) -> Setting | None:
        found = [s for s in self.settings if s.key == key]
        return found[-1] if found else None

    def all(self, key: str) -> list[Setting]:
        return [s for s in self.settings if s.key == key]


def _tokenize(lines: list[str]) -> list[Token]:
    out: list[Token] = []
    for n, text in enumerate(lines, 1):
        text = text.split("#", 1)[0]
        text = re.sub(r"([{}=])", r" \1 ", text)
        for t in text.split():
            out.append(Token(t, n))
    return out


def parse(path: Path) -> DanteConfig:
    """Read danted.conf at `path`; InputError only if it cannot be read."""
    shown = str(path)
    cfg = DanteConfig(path=shown)
    cfg.lines = read_lines(path, shown)
    cfg.files.append(shown)
    toks = _tokenize(cfg.lines)
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.text.lower() in _BLOCK_KINDS and not _KEY.match(t.text):
            j = i + 1
            action = ""
            if j < len(toks) and toks[j].text.lower() in ("pass", "block"):
                action = toks[j].text.lower()
                j += 1
            if j >= len(toks) or toks[j].text != "{":
                cfg.errors.append(ErrorEntry(shown, f"expected '{{' after {t.text!r}", t.line))
                i = j
                continue
            rule = DanteRule(t.text.lower(), action, _directive(cfg, t.line, t.text, action))
            i = j + 1
            while i < len(toks) and toks[i].text != "}":
                i = _setting(cfg, toks, i, rule.settings, inside=True)
            if i >= len(toks):
                cfg.errors.append(ErrorEntry(shown, f"{t.text} {action} rule is not closed "
                                             "with '}'", t.line))
            cfg.rules.append(rule)
            i += 1
            continue
        if t.text in ("{", "}"):
            cfg.errors.append(ErrorEntry(shown, f"unexpected {t.text!r}", t.line))
            i += 1
            continue
        i = _setting(cfg, toks, i, cfg.settings, inside=False)
    _check_methods(cfg)
    return cfg


def _check_methods(cfg: DanteConfig) -> None:
    """danted refuses a rule method that the global list lacks: report it like danted does."""
    for key in ("socksmethod", "clientmethod"):
        glob = cfg.setting(key)
        allowed = {v.lower() for v in glob.values} if glob else None
        for rule in cfg.rules:
            for s in rule.settings:
                if s.key != key or allowed is None:
                    continue
                extra = [v for v in s.values if v.lower() not in allowed]
                if extra:
                    cfg.errors.append(ErrorEntry(
                        cfg.path, f"{key} {' '.join(extra)} in a rule but not in the global "
                        f"{key} line (danted refuses to start)", s.directive.line))


def _directive(cfg: DanteConfig, line: int, name: str, *args: str) -> Directive:
    return Directive(cfg.path, line, name, tuple(a for a in args if a), cfg.lines[line - 1])


def _setting(cfg: DanteConfig, toks: list[Token], i: int, into: list[Setting],
             inside: bool) -> int:
    t = toks[i]
    if not _KEY.match(t.text):
        cfg.errors.append(ErrorEntry(cfg.path, f"expected 'keyword:' but found {t.text!r}",
                                     t.line))
        return i + 1
    j = i + 1
    values: list[str] = []
    while j < len(toks):
        x = toks[j].text
        if _KEY.match(x) or x in ("{", "}"):
            break
        if not inside and x.lower() in _BLOCK_KINDS and j + 1 < len(toks) and \
                toks[j + 1].text.lower() in ("pass", "block", "{"):
            break
        values.append(x)
        j += 1
    key = t.text[:-1].lower()
    if key == "method":
        key = "socksmethod"  # Dante 1.2 name
    into.append(Setting(key, tuple(values), _directive(cfg, t.line, key, *values)))
    return j


class DanteAuditor:
    """Dante SOCKS server (danted.conf)."""

    name = "dante"

    def candidates(self, root: Path) -> list[Path]:
        return [p for p in (root / "etc/danted.conf", root / "etc/sockd.conf") if p.is_file()]

    def recognise(self, path: Path) -> bool:
        if path.is_dir():
            return False  # danted.conf lives in /etc itself: a directory is not Dante's
        if path.name in ("danted.conf", "sockd.conf"):
            return True
        head = peek(path, 200000)
        return bool(re.search(r"^\s*(socks|client)\s+(pass|block)\b", head, re.M)) or \
            bool(re.search(r"^\s*internal:", head, re.M))

    def audit(self, path: Path, options: AuditOptions) -> AuditResult:
        from relayguard.audit.rules import dante as rules

        if path.is_dir():
            path = path / "danted.conf"
        cfg = parse(path)
        findings, facts = rules.check(cfg, options)
        return AuditResult(server=self.name, config=str(path), findings=findings,
                           errors=list(cfg.errors), files=list(cfg.files), facts=facts)

    def config_test(self, path: Path) -> tuple[bool, str] | None:
        exe = shutil.which("danted")
        if exe is None:
            return None
        ok, out = run_check([exe, "-V", "-f", str(path)])
        return ok and " error: " not in out, out
