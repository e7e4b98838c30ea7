"""`relayguard audit`: find the configs, hand each to its server family, merge the results.

Each family lives in its own module (`apache.py` parses, `rules/apache.py` judges) and is
listed once in `AUDITORS`. Cross-service rules (a proxy that reaches the local MTA) run on
the facts every family reports.
"""

from __future__ import annotations

from pathlib import Path

from relayguard.audit.base import AuditOptions, Auditor, AuditResult
from relayguard.errors import InputError, UsageError
from relayguard.findings import ErrorEntry, Report


def auditors() -> tuple[Auditor, ...]:
    """Every supported server family, in the order they are reported."""
    from relayguard.audit.apache import ApacheAuditor
    from relayguard.audit.exim import EximAuditor
    from relayguard.audit.nginx import NginxAuditor
    from relayguard.audit.postfix import PostfixAuditor
    from relayguard.audit.proxies import PROXY_AUDITORS

    return (ApacheAuditor(), NginxAuditor(), PostfixAuditor(), EximAuditor(), *PROXY_AUDITORS)


def auditor_named(name: str) -> Auditor:
    """The auditor for `--type NAME`."""
    for a in auditors():
        if a.name == name:
            return a
    names = ", ".join(a.name for a in auditors())
    raise UsageError(f"unknown server type {name!r} (one of: {names})")


def audit_paths(paths: list[Path], *, server_type: str | None = None,
                options: AuditOptions | None = None) -> Report:
    """Audit the given configs (or discover them when `paths` is empty) into one Report."""
    return run_audit(paths, server_type=server_type, options=options)[0]


def run_audit(paths: list[Path], *, server_type: str | None = None,
              options: AuditOptions | None = None) -> tuple[Report, list[AuditResult]]:
    """Like `audit_paths`, also returning each server's result (`--fix` re-audits those)."""
    options = options or AuditOptions()
    results: list[AuditResult] = []
    errors: list[ErrorEntry] = []
    notes: list[str] = []
    if paths:
        seen: set[Path] = set()
        audited: dict[tuple[str, str], Path] = {}
        for path in paths:
            if not path.exists():
                errors.append(ErrorEntry(str(path), "no such file or directory"))
                continue
            if path.resolve() in seen:
                notes.append(f"{path}: given more than once; audited once")
                continue
            seen.add(path.resolve())
            chosen = [auditor_named(server_type)] if server_type else \
                [a for a in auditors() if a.recognise(path)]
            if not chosen:
                errors.append(ErrorEntry(str(path), _why_not(path)))
                continue
            for a in chosen:
                result = _run(a, path, options, errors)
                key = (result.server, str(Path(result.config).resolve()))
                if key in audited:  # `/etc/squid` and `/etc/squid/squid.conf`
                    notes.append(f"{path}: the same {a.name} config as {audited[key]}; "
                                 "audited once")
                    continue
                audited[key] = path
                results.append(result)
    else:
        root = options.root or Path("/")
        pool = [auditor_named(server_type)] if server_type else list(auditors())
        for a in pool:
            found = a.candidates(root)
            if not found:
                notes.append(f"{a.name}: no config found at its standard locations under {root}")
            for path in found:
                notes.append(f"{a.name}: auditing {path}")
                results.append(_run(a, path, options, errors))
    if not results:
        where = ", ".join(map(str, paths)) if paths else str(options.root or Path("/"))
        errors.append(ErrorEntry(where, "no supported server config found: nothing was "
                                 "audited, so nothing can be called clean"))
    from relayguard.audit.cross import cross_findings

    findings = [f for r in results for f in r.findings] + cross_findings(results)
    for r in results:
        errors.extend(r.errors)
    stats = {
        "configs": len(results),
        "files_read": sum(len(r.files) for r in results),
        "servers": sorted({r.server for r in results}),
    }
    report = Report(command="audit", findings=tuple(findings), errors=tuple(errors),
                    stats=stats, notes=tuple(notes))
    return report, results


def _why_not(path: Path) -> str:
    """The most helpful reason no auditor took `path` (an auditor's own hint first)."""
    for a in auditors():
        hint = getattr(a, "why_not", None)
        reason = hint(path) if hint is not None else None
        if reason:
            return reason
    return "not recognised as a supported server's config; use --type to say which server it is"


def _run(auditor: Auditor, path: Path, options: AuditOptions,
         errors: list[ErrorEntry]) -> AuditResult:
    try:
        return auditor.audit(path, options)
    except InputError as exc:
        errors.append(ErrorEntry(exc.source, exc.message, exc.line))
        return AuditResult(server=auditor.name, config=str(path))


__all__ = ["AuditOptions", "AuditResult", "Auditor", "audit_paths", "auditors", "run_audit"]
