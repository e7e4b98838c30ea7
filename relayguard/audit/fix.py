"""`relayguard audit --fix`: patches that close the holes, offered only once proven.

A finding's `edits` are applied to a scratch copy of its server's config directory; the
patch is offered only when re-auditing the copy shows the finding gone **and** the server's
own config test (`apache2 -t`, `nginx -t`, `squid -k parse`, `postfix check`, …) accepts it,
when that binary is installed. `--write` then applies the same edits to the real files,
keeping a backup of each.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from relayguard.audit.base import AuditOptions, Auditor, AuditResult
from relayguard.catalogue import rule_by_id
from relayguard.findings import Edit, Finding

MAX_COPY_FILES = 5000


@dataclass
class FixPlan:
    """What `--fix` found it can do for one server config."""

    server: str
    config: str
    offered: list[Finding] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    refused: list[tuple[Finding, str]] = field(default_factory=list)  # finding, why not
    config_test: str = ""  # what the server's own test said about the combined patch

    def diff(self) -> str:
        """The combined unified diff of every offered edit (for `patch -p0`)."""
        return unified_diff(self.edits)


def read_config(path: Path) -> str:
    """A config's text with its bytes and line endings kept: non-UTF-8 bytes (a Latin-1
    comment) survive as surrogates, so writing it back changes only the patched lines."""
    return path.read_bytes().decode("utf-8", "surrogateescape")


def write_config(path: Path, text: str) -> None:
    """Write text read by `read_config` back, byte for byte where it was not patched."""
    path.write_bytes(text.encode("utf-8", "surrogateescape"))


def _shown(text: str) -> str:
    """Text as the auditors quote it (undecodable bytes as U+FFFD)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def apply_edits(text: str, edits: Iterable[Edit]) -> str:
    """Apply edits to one file's text (bottom-up so line numbers stay valid), keeping its
    line endings (CRLF stays CRLF)."""
    lines = text.splitlines()
    newline = "\r\n" if "\r\n" in text else "\n"
    trailing = text.endswith("\n")
    for e in sorted(edits, key=lambda e: e.line, reverse=True):
        start = e.line - 1
        if tuple(_shown(ln) for ln in lines[start:start + len(e.old)]) != \
                tuple(map(_shown, e.old)):
            raise ValueError(f"{e.path}:{e.line}: the file no longer reads {e.old!r}")
        lines[start:start + len(e.old)] = list(e.new)
    return newline.join(lines) + (newline if trailing or not lines else "")


def edits_by_path(edits: Iterable[Edit]) -> dict[str, list[Edit]]:
    """The edits grouped per file, each distinct edit once (findings may share one)."""
    out: dict[str, list[Edit]] = {}
    for e in edits:
        if e not in out.setdefault(e.path, []):
            out[e.path].append(e)
    return out


def unified_diff(edits: Iterable[Edit]) -> str:
    """A unified diff of the edits against the files as they are now."""
    chunks: list[str] = []
    for path, group in sorted(edits_by_path(edits).items()):
        old = read_config(Path(path))
        new = apply_edits(old, group)
        chunks += difflib.unified_diff(_shown(old).splitlines(keepends=True),
                                       _shown(new).splitlines(keepends=True),
                                       fromfile=f"{path}", tofile=f"{path}")
    return "".join(chunks)


def _abs(path: str | Path) -> Path:
    """An absolute, normalised path without following symlinks: a config named `a.conf` or
    `.` and the edits that name it must agree on where it lives."""
    return Path(os.path.abspath(path))


def _config_dir(result: AuditResult) -> Path:
    p = _abs(result.config)
    return p if p.is_dir() else p.parent


def _copy_tree(src: Path, dest: Path) -> None:
    """Copy a config dir (symlinks kept) unless it is too big to copy for a check."""
    count = sum(len(files) for _, _, files in os.walk(src))
    if count > MAX_COPY_FILES:
        raise ValueError(f"{src} holds {count} files; too many to verify a fix in a copy")
    shutil.copytree(src, dest, symlinks=True)


def _relocate(copy: Path, src: Path) -> None:
    """Make the copy self-contained: absolute references to `src` inside it (an `Include
    /etc/apache2/x.conf`, a `ServerRoot`, a `cidr:/etc/postfix/x.cidr`) are rewritten to point
    into the copy. Runs after the edits, whose old lines quote the files as they really are."""
    names = {str(src), str(src.resolve())}
    pattern = re.compile(b"|".join(re.escape(n.encode()) for n in sorted(names, key=len,
                                                                          reverse=True))
                         + rb"(?=[/\s\"',;:)]|$)", re.MULTILINE)
    for dirpath, _, files in os.walk(copy):
        for name in files:
            f = Path(dirpath) / name
            if f.is_symlink() or f.stat().st_size > 4 * 1024 * 1024:
                continue
            data = f.read_bytes()
            if b"\x00" not in data and pattern.search(data):
                f.write_bytes(pattern.sub(str(copy).encode(), data))


def _apply_in_copy(copy: Path, origin: Path, edits: list[Edit]) -> None:
    for path, group in edits_by_path(edits).items():
        if not _abs(path).is_relative_to(origin):
            raise ValueError(f"it edits {path}, outside the config directory {origin}; "
                             "apply the rule's fix by hand")
        rel = _abs(path).relative_to(origin)
        target = copy / rel
        resolved = target.resolve()
        if resolved.is_relative_to(copy.resolve()):
            text = read_config(resolved)
        else:  # an absolute symlink would lead back to the real file: break it
            text = read_config(Path(path))
            target.unlink()
            resolved = target
        write_config(resolved, apply_edits(text, group))


def _moved_line(path: Path, line: int, edits: list[Edit]) -> int:
    """Where `line` of `path` is after the edits (the start of a replaced block it was in)."""
    mine = [e for e in edits if _abs(e.path) == path]
    anchor = next((e.line for e in mine if e.line <= line < e.line + len(e.old)), line)
    return anchor + sum(len(e.new) - len(e.old) for e in mine if e.line + len(e.old) <= anchor)


def _place(f: Finding, copy: Path, origin: Path) -> tuple[str, str, str | None, int | None]:
    """A finding of the audited copy keyed as if it were in the real config directory."""
    path = None
    if f.location.path is not None:
        p = _abs(f.location.path)
        path = str(origin / p.relative_to(copy)) if p.is_relative_to(copy) else str(p)
    return f.rule, f.category.value, path, f.location.line


def _still_open(targets: list[Finding], before: list[Finding], after: list[Finding],
                edits: list[Edit], copy: Path, origin: Path) -> list[Finding]:
    """The targets the patched copy still reports at their (moved) place. A rule that fires
    as often as before counts as not closed at all: the patch moved the hole, not closed it."""
    seen = {_place(a, copy, origin) for a in after}
    remaining: list[Finding] = []
    for t in targets:
        path = _abs(t.location.path) if t.location.path is not None else None
        line = t.location.line
        if path is not None and line is not None:
            line = _moved_line(path, line, edits)
        key = (t.rule, t.category.value, str(path) if path else None, line)
        fixed_here = sum(1 for x in targets if x.rule == t.rule and x in before)
        now = sum(1 for a in after if a.rule == t.rule)
        was = sum(1 for b in before if b.rule == t.rule)
        if key in seen or (fixed_here and now > was - fixed_here):
            remaining.append(t)
    return remaining


def _verify(auditor: Auditor, result: AuditResult, edits: list[Edit],
            targets: list[Finding], options: AuditOptions) -> tuple[list[Finding], str, str]:
    """(findings still present, refusal reason or "", config-test output) for these edits."""
    origin = _config_dir(result)
    with tempfile.TemporaryDirectory(prefix="relayguard-fix-") as tmp:
        copy = Path(tmp) / (origin.name or "root")
        try:
            _copy_tree(origin, copy)
            _apply_in_copy(copy, origin, edits)
            _relocate(copy, origin)
        except (OSError, ValueError) as exc:
            return targets, f"cannot verify in a copy: {exc}", ""
        config = _abs(result.config)
        copied_config = copy / config.relative_to(origin) if config != origin else copy
        after = auditor.audit(copied_config, options)
        remaining = _still_open(targets, result.findings, after.findings, edits, copy, origin)
        tested = auditor.config_test(copied_config)
        if tested is None:
            return remaining, "", f"{auditor.name}: its config test is not installed here"
        ok, out = tested
        if not ok:
            return remaining, f"the server's own config test rejects the patch: {out}", out
        return remaining, "", out or "config test passed"


def plan_fixes(auditor: Auditor, result: AuditResult, findings: list[Finding],
               options: AuditOptions) -> FixPlan:
    """Verify each finding's edits alone, then the combination, and keep what holds."""
    plan = FixPlan(server=result.server, config=result.config)
    for f in findings:
        if not f.edits:
            plan.refused.append((f, "no automatic fix for this rule; see its fix text"))
            continue
        remaining, why, _ = _verify(auditor, result, list(f.edits), [f], options)
        if why:
            plan.refused.append((f, why))
        elif remaining:
            plan.refused.append((f, "the patched config still has this hole"))
        else:
            plan.offered.append(f)
            plan.edits += [e for e in f.edits if e not in plan.edits]
    if plan.edits:
        remaining, why, out = _verify(auditor, result, plan.edits, plan.offered, options)
        plan.config_test = out
        if why or remaining:
            plan.refused += [(f, why or "the combined patch leaves it open")
                             for f in plan.offered]
            plan.offered, plan.edits = [], []
    return plan


def write_fixes(plan: FixPlan) -> list[str]:
    """Apply a verified plan to the real files; returns the backup paths written."""
    backups: list[str] = []
    stamp = time.strftime("%Y%m%d%H%M%S")
    for path, group in edits_by_path(plan.edits).items():
        real = Path(path).resolve()
        new = apply_edits(read_config(real), group)
        backup = real.with_name(f"{real.name}.relayguard-{stamp}.bak")
        shutil.copy2(real, backup)
        tmp = real.with_name(f".{real.name}.relayguard-tmp")
        write_config(tmp, new)
        shutil.copymode(real, tmp)
        os.replace(tmp, real)
        backups.append(str(backup))
    return backups


def findings_for(result: AuditResult, findings: Iterable[Finding]) -> list[Finding]:
    """The report's findings that belong to this server result (by rule family)."""
    mine = {id(f) for f in result.findings}
    out = [f for f in findings if id(f) in mine]
    for f in findings:
        rule = rule_by_id(f.rule)
        if id(f) not in mine and f.edits and rule is not None and rule.server == result.server \
                and all(_abs(e.path).is_relative_to(_config_dir(result)) for e in f.edits):
            out.append(f)
    return out
