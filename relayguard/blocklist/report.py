"""Turn a blocklist `CheckResult` into the shared `Report`: findings, errors, notes, stats.

Listings become `blocklisted` findings (one per target, list and class of code) with the DNS
answer as evidence; inconclusive targets become errors (exit 2), so nothing that could not be
checked looks clean; refused/unknown answers and unusable lists are explained in notes, and
every (target, list) state is in `stats["targets"]` for scripts.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from relayguard.blocklist.check import CheckResult, ListResult, State, TargetResult, Verdict
from relayguard.blocklist.rules import RULE_FOR_CLASS
from relayguard.blocklist.zones import (
    CATALOGUE_DATE,
    LIKELY_CAUSE,
    REFUSAL_REMEDY,
    CodeClass,
    Zone,
    ZoneStatus,
)
from relayguard.findings import Confidence, ErrorEntry, Evidence, Finding, Location, Report


def build_report(result: CheckResult, resolvers: list[str],
                 notes: tuple[str, ...] = ()) -> Report:
    """The Report for `relayguard blocklist`; `notes` come first (e.g. which resolver)."""
    findings: list[Finding] = []
    errors = [ErrorEntry(source, message) for source, message in result.errors]
    out_notes = [*notes, *result.notes]
    for zone in result.zones:
        if zone.status is ZoneStatus.DEAD:
            out_notes.append(f"{zone.name} is marked dead in the catalogue ({CATALOGUE_DATE}): "
                             f"{zone.notes}; its answers count only if it passes the self-test")
        elif not zone.catalogued:
            out_notes.append(f"{zone.name} is not in the catalogue ({CATALOGUE_DATE}): used only "
                             "after its RFC 5782 self-test passes; its codes are not decoded")
    refusal_seen = False
    for health in result.health:
        if health.family.value == "ipv6" and health.reason == "empty" and not any(
                z.catalogued for z in result.zones if z.name == health.zone):
            out_notes.append(f"{health.zone} has no IPv6 test entry: not used for IPv6 targets")
        elif not health.usable:
            out_notes.append(f"list {health.zone} is unusable for {health.family.value} targets "
                             f"({health.reason}): {health.detail}")
            refusal_seen = refusal_seen or health.reason in ("refused", "empty")
    for target in result.targets:
        if target.verdict is Verdict.SKIPPED:
            continue
        findings.extend(_findings_for(target))
        trouble = [r for r in target.lists if r.state in (State.REFUSED, State.UNKNOWN)]
        refusal_seen = refusal_seen or any(r.state is State.REFUSED for r in trouble)
        if target.verdict is Verdict.INCONCLUSIVE:
            errors.append(ErrorEntry(target.value, _inconclusive_message(target)))
        else:
            for r in trouble:
                out_notes.append(f"{target.value}: {r.zone.name} {r.state.value}: {r.detail}")
        out_notes.append(f"{target.value}: {target.verdict.value} ({target.answered} of "
                         f"{target.applicable} lists answered, {target.required} needed)")
    if result.targets and all(t.verdict is Verdict.SKIPPED for t in result.targets):
        errors.append(ErrorEntry("blocklist", "nothing was checked: every target is a private "
                                 "or reserved address that public blocklists cannot list"))
    if refusal_seen:
        out_notes.append(f"next step: {REFUSAL_REMEDY}")
    report = Report(command="blocklist", findings=tuple(findings), errors=tuple(errors),
                    stats=_stats(result, resolvers), notes=tuple(out_notes))
    keyed = [z for z in result.zones if z.secret]
    return _scrub(report, keyed) if keyed else report


def _scrub(obj: Any, keyed: list[Zone]) -> Any:
    """`obj` with every access key masked in every string it holds (names, query names in
    evidence, notes, stats keys), whatever the nesting: reports are shared."""
    if isinstance(obj, enum.Enum):  # str-valued enums are names, never keys
        return obj
    if isinstance(obj, str):
        for zone in keyed:
            obj = zone.hide(obj)
        return obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_scrub(x, keyed) for x in obj)
    if isinstance(obj, dict):
        return {_scrub(k, keyed): _scrub(v, keyed) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _scrub(getattr(obj, f.name), keyed)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def _inconclusive_message(target: TargetResult) -> str:
    if not target.applicable:
        return (f"inconclusive: no list in the chosen set covers {target.family.value} "
                "targets")
    if target.required > target.applicable and target.answered == target.applicable:
        return (f"inconclusive, not clean: --min-lists {target.required} asks for more lists "
                f"than the {target.applicable} that apply to {target.family.value} targets, "
                f"and all {target.answered} answered not listed")
    parts = [f"{r.zone.name} {r.state.value} "
             f"({r.detail.split(':')[0] if r.state is State.UNUSABLE else r.detail})"
             for r in target.lists if r.state not in (State.LISTED, State.NOT_LISTED)]
    return (f"inconclusive, not clean: only {target.answered} of {target.applicable} lists "
            f"answered ({target.required} needed): " + "; ".join(parts))


def _findings_for(target: TargetResult) -> list[Finding]:
    out: list[Finding] = []
    for res in target.lists:
        if res.state is not State.LISTED:
            continue
        classes: dict[CodeClass, list[str]] = {}
        for d in res.decoded:
            if d.code.cls.is_listing:
                classes.setdefault(d.code.cls, []).append(f"{d.value} = {d.code.meaning}")
        for cls, meanings in classes.items():
            out.append(_finding(target, res, cls, meanings))
    return out


def _finding(target: TargetResult, res: ListResult, cls: CodeClass,
             meanings: list[str]) -> Finding:
    rule = RULE_FOR_CLASS[cls]
    zone = res.zone
    dns_lines = [res.answer.presentation()] if res.answer else []
    if res.txt_answer is not None:
        dns_lines.append(res.txt_answer.presentation())
    about = [f"meaning: {m}" for m in meanings]
    about.append(f"class: {cls.value}")
    if res.txt:
        about.append("reason (TXT): " + " | ".join(res.txt))
    url = zone.url_for(target.value)
    if url:
        about.append(f"lookup: {url}")
    if zone.delist:
        about.append(f"delisting: {zone.delist}")
    about.append(f"likely cause: {LIKELY_CAUSE[cls]}")
    short = "; ".join(m.split(" = ", 1)[1] for m in meanings)
    fix_parts = [LIKELY_CAUSE[cls]]
    if url or zone.delist:
        fix_parts.append("Then get delisted: " + " - ".join(p for p in (url, zone.delist) if p))
    return rule.finding(
        f"{target.value} is listed on {zone.name}: {short}",
        location=Location(host=target.value),
        evidence=(Evidence("dns", "\n".join(dns_lines)), Evidence("note", "\n".join(about))),
        confidence=Confidence.CONFIRMED if zone.catalogued else Confidence.LIKELY,
        fix="\n".join(fix_parts),
    )


def _list_stats(res: ListResult, target: str) -> dict[str, Any]:
    """One (target, list) state for scripts and reports, with the way off a listing."""
    out: dict[str, Any] = {"state": res.state.value}
    if res.decoded:
        out["codes"] = [{"value": d.value, "meaning": d.code.meaning, "class": d.code.cls.value}
                        for d in res.decoded]
    if res.txt:
        out["txt"] = list(res.txt)
    if res.answer is not None:
        out["answer"] = res.answer.presentation()
    if res.detail:
        out["detail"] = res.detail
    if res.remedy:
        out["remedy"] = res.remedy
    if res.state is State.LISTED:
        if res.zone.url_for(target):
            out["lookup"] = res.zone.url_for(target)
        if res.zone.delist:
            out["delist"] = res.zone.delist
    return out


def _stats(result: CheckResult, resolvers: list[str]) -> dict[str, Any]:
    verdicts = {v.value: 0 for v in Verdict}
    targets: dict[str, Any] = {}
    for t in result.targets:
        verdicts[t.verdict.value] += 1
        entry: dict[str, Any] = {"kind": t.family.value, "from": t.origin,
                                 "verdict": t.verdict.value}
        if t.skipped:
            entry["skipped"] = t.skipped
        else:
            entry.update(answered=t.answered, required=t.required, applicable=t.applicable,
                         lists={r.zone.name: _list_stats(r, t.value) for r in t.lists})
        targets[t.value] = entry
    zones: dict[str, Any] = {
        z.name: {"kind": z.kind.value, "catalogued": z.catalogued, "status": z.status.value,
                 "selftest": {}} for z in result.zones}
    for h in result.health:
        zones[h.zone]["selftest"][h.family.value] = {
            "usable": h.usable, "reason": h.reason, "detail": h.detail,
            "answers": [a.presentation() for a in h.answers]}
    return {
        "verdicts": ", ".join(f"{n} {v}" for v, n in verdicts.items() if n) or "no targets",
        "resolver": ", ".join(resolvers),
        "catalogue_date": CATALOGUE_DATE,
        "queries": result.queries,
        "cache_hits": result.cache_hits,
        "elapsed_seconds": round(result.elapsed, 3),
        "summary": verdicts,
        "zones": zones,
        "targets": targets,
    }
