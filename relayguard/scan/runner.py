"""`scan`: gather every kind of evidence for each site, then tell each site's story once.

Flow per run (one site, or a fleet from an inventory):
1. resolve each site and audit its configs (bounded thread pool; one broken site is an error
   in its own report, never an exception);
2. pick the probe source address (a stranger's, when one exists: see sources.py);
3. find the ports that answer (a bounded TCP connect sweep), probe them all in ONE probe run
   (one canary for the whole fleet; the probe's own concurrency caps apply), split by host;
4. read each site's logs and check its public names on blocklists (thread pool);
5. correlate into stories and a verdict per site; a fleet summary on top.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from relayguard.audit.base import AuditResult
from relayguard.findings import ErrorEntry, Finding, Report
from relayguard.hostinfo import is_local_host, local_addresses
from relayguard.probe.targets import addresses_of
from relayguard.scan import steps
from relayguard.scan.correlate import VERDICT_MEANINGS, stories, verdict
from relayguard.scan.discover import listeners, other_addresses, ports_serving
from relayguard.scan.site import ScanOptions, Site
from relayguard.scan.sources import (
    choose_source,
    trusted_by,
    trusted_networks,
    withhold_trusted_relays,
)

STEPS = ("audit", "probe", "logs", "blocklist")  # each a ScanOptions switch (--no-<step>)
RESOLVE_TIMEOUT = 5.0
SWEEP_TIMEOUT = 1.5  # seconds to accept a TCP connection in the reachability sweep
SWEEP_CONCURRENCY = 32
Progress = Callable[[str], None]


@dataclass
class _SiteRun:
    """Everything gathered for one site while the run is in progress."""

    site: Site
    address: str | None = None
    local: bool = False
    ports: list[int] = field(default_factory=list)
    open_ports: list[int] = field(default_factory=list)
    # This machine's services bound to another of its own addresses (not the one strangers
    # reach by default): probed at their own address, (address, port).
    extra: list[tuple[str, int]] = field(default_factory=list)
    open_extra: list[tuple[str, int]] = field(default_factory=list)
    audit: Report = field(default_factory=lambda: Report("audit"))
    audit_results: list[AuditResult] = field(default_factory=list)
    probe: list[Finding] = field(default_factory=list)
    probe_errors: list[ErrorEntry] = field(default_factory=list)
    logs: Report = field(default_factory=lambda: Report("logs"))
    blocklist: Report = field(default_factory=lambda: Report("blocklist"))
    errors: list[ErrorEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _local_targets(run: _SiteRun, others: list[str]) -> None:
    """This machine: the address strangers reach, and the ports listening there (and at the
    `others` addresses the site's name also resolves to)."""
    socks = listeners()
    if run.site.host is None:
        from relayguard.probe.runner import route_local_address

        try:
            run.address = route_local_address("192.0.2.1")
        except OSError:
            run.address = "127.0.0.1"
        loopback_only = sorted({s.port for s in socks if not s.wildcard
                                and ipaddress.ip_address(s.address).is_loopback})
        if loopback_only:
            run.notes.append("listening on loopback only (not probed; strangers reach them "
                             f"only through a proxy, which the audit checks): ports "
                             f"{', '.join(map(str, loopback_only))}")
        if run.site.ports is None:
            run.extra, note = other_addresses(run.address, socks)
            if note:
                run.notes.append(note)
    assert run.address is not None
    if run.site.ports is None:
        if ipaddress.ip_address(run.address).is_loopback and run.site.host is not None:
            # A loopback address named on purpose (a lab, a test): only what is bound to it,
            # not every wildcard service of the machine.
            socks = [s for s in socks if not s.wildcard]
        run.ports = ports_serving(run.address, socks)
        run.extra += [(a, p) for a in others for p in ports_serving(a, socks)]
        if not run.ports and not run.extra:
            run.notes.append(f"nothing listens on {run.address} (read from /proc/net/tcp)")


def _prepare(run: _SiteRun, options: ScanOptions, addresses: list[str]) -> None:
    """Resolve the site, decide local vs remote and its ports, audit (first pass)."""
    site = run.site
    started = time.monotonic()
    others: list[str] = []
    note: str | None = None
    if site.host is not None:
        try:
            (run.address, *others), note = addresses_of(site.host)
        except (OSError, UnicodeError) as exc:
            run.errors.append(ErrorEntry(site.host, f"cannot resolve: {exc}; site not probed"))
    run.local = site.host is None or (run.address is not None
                                      and is_local_host(run.address, addresses))
    if site.ports is not None:
        run.ports = list(site.ports)
    elif run.local:
        _local_targets(run, others)
    else:
        from relayguard.probe.context import DEFAULT_PORTS

        run.ports = list(DEFAULT_PORTS)
    if site.ports is not None or not run.local:  # a local site's ports are per address
        run.extra += [(a, p) for a in others for p in run.ports]
    if note:
        run.notes.append(note)
    if options.audit:
        run.audit, run.audit_results = steps.audit_site(site, None, run.local)
    run.timings["audit"] = round(time.monotonic() - started, 3)


def _sweep(runs: list[_SiteRun]) -> None:
    """Which of each site's ports accept a TCP connection (bounded, concurrent)."""
    jobs = [(r, r.address, p) for r in runs if r.address is not None for p in r.ports]
    jobs += [(r, a, p) for r in runs for a, p in r.extra]

    def knock(job: tuple[_SiteRun, str, int]) -> bool:
        _run, address, port = job
        try:
            with socket.create_connection((address, port), timeout=SWEEP_TIMEOUT):
                return True
        except OSError:
            return False

    with ThreadPoolExecutor(max_workers=SWEEP_CONCURRENCY) as pool:
        answers = list(pool.map(knock, jobs))
    for (run, address, port), ok in zip(jobs, answers, strict=True):
        if ok and address == run.address:
            run.open_ports.append(port)
        elif ok:
            run.open_extra.append((address, port))
    for run in runs:
        if run.address is not None and run.ports and not run.open_ports and not run.open_extra:
            run.errors.append(ErrorEntry(
                run.site.host or run.address,
                f"unreachable: none of {len(run.ports)} port(s) accepted a connection within "
                f"{SWEEP_TIMEOUT:g}s (down, filtered, or the wrong address); not probed"))


def _probe(runs: list[_SiteRun], options: ScanOptions, source: str | None) -> Report:
    """One probe run over every site's open ports (one canary), split back per site."""
    from relayguard.probe.context import ProbeOptions
    from relayguard.probe.runner import run_probe
    from relayguard.probe.targets import Target

    targets = [Target(r.address, p) for r in runs if r.address for p in r.open_ports]
    targets += [Target(a, p) for r in runs for a, p in r.open_extra]
    if not targets:
        return Report("probe")
    popts = ProbeOptions(
        ports=tuple(sorted({t.port for t in targets if t.port})), timeout=options.probe_timeout,
        banner_wait=0.5, concurrency=options.concurrency, per_host=4, source=source,
        canary_host=options.canary_host, canary_bind=options.canary_bind,
        smtp_check_target=options.smtp_check_target,
        max_time=options.probe_max_time, target_time=max(20.0, 12 * options.probe_timeout))
    return asyncio.run(run_probe(targets, popts))


def _split_probe(report: Report, runs: list[_SiteRun]) -> list[str]:
    """Hand each probe finding and error to its site; run-wide problems go to every site."""
    by_host = {r.address: r for r in runs if r.address}
    by_host.update({a: r for r in runs for a, _p in r.open_extra})
    for f in report.findings:
        run = by_host.get(f.location.host or "")
        if run is not None:
            run.probe.append(f)
    for e in report.errors:
        host = e.source.rsplit(":", 1)[0].strip("[]") if ":" in e.source else e.source
        targets = [by_host[host]] if host in by_host else [
            r for r in runs if r.open_ports or r.open_extra]
        for run in targets:
            run.probe_errors.append(e)
    return list(report.notes)


def _idle_steps(run: _SiteRun, skipped: list[str], logs_read: bool,
                blocklist_asked: bool) -> list[str]:
    """Steps that were on but had nothing to look at (no config, no log, no public
    address): they assessed nothing, so a clean result may not lean on them."""
    idle = []
    if "audit" not in skipped and not (run.audit_results or run.audit.findings
                                       or run.audit.errors):
        idle.append("audit (no config)")
    if "logs" not in skipped and not (logs_read or run.logs.findings or run.logs.errors):
        idle.append("logs (no log file)")
    if "blocklist" not in skipped and not (blocklist_asked or run.blocklist.findings
                                           or run.blocklist.errors):
        idle.append("blocklist (no public address or mail domain)")
    return idle


def _finish(run: _SiteRun, probe_stats: dict[str, Any], source: str | None,
            shared_notes: list[str], skipped: list[str]) -> Report:
    """Merge the four kinds of evidence into the site's report, stories and verdict."""
    mta = [m for r in run.audit_results for m in r.facts.get("mta", [])]
    probe, withheld = withhold_trusted_relays(run.probe, source, mta)
    findings = [*run.audit.findings, *probe, *run.logs.findings, *run.blocklist.findings]
    errors = [*run.errors, *run.audit.errors, *run.probe_errors, *run.logs.errors,
              *run.blocklist.errors]
    logs_stats = run.logs.stats if isinstance(run.logs.stats, dict) else {}
    bl = run.blocklist.stats if isinstance(run.blocklist.stats, dict) else {}
    idle = _idle_steps(run, skipped, "files" in logs_stats, "targets" in bl)
    not_run = [*skipped, *idle]
    if len(not_run) == len(STEPS):
        errors.append(ErrorEntry(run.site.name, "nothing was checked (" + ", ".join(not_run)
                                 + "): name configs (--config/--root), logs (--log) or a "
                                 "public address (--public-address), or let the probe run"))
    told = stories(findings, logs_stats.get("incidents") or [])
    word = verdict(findings, errors)
    host = run.site.host or run.address or "this machine"
    notes = [*shared_notes, *withheld, *run.notes, *run.audit.notes, *run.logs.notes,
             *run.blocklist.notes]
    stats: dict[str, Any] = {
        "site": run.site.name,
        "host": host,
        "address": run.address,
        "local": run.local,
        "verdict": word,
        "verdict_meaning": VERDICT_MEANINGS[word] + (
            f" (not run: {', '.join(not_run)})" if not_run and word == "CLEAN" else ""),
        "skipped": skipped,
        "not_run": not_run,  # skipped, plus steps that had nothing to look at
        "stories": [s.to_dict() for s in told],
        "probe_source": source,
        "ports": {"considered": run.ports, "open": run.open_ports,
                  **({"other_addresses": [f"{a}:{p}" for a, p in run.open_extra]}
                     if run.extra else {})},
        "evidence": {
            "audit": len(run.audit.findings), "probe": len(probe),
            "logs": len(run.logs.findings), "blocklist": len(run.blocklist.findings),
        },
        "configs": run.audit.stats.get("configs", 0) if isinstance(run.audit.stats, dict)
        else 0,
        "timings_s": run.timings,
        "probe": {k: v for k, v in probe_stats.items() if k in ("services", "connections",
                                                                 "duration_s", "canary")},
    }
    for key in ("incidents", "requests_timeline"):
        if key in logs_stats:
            stats[key] = logs_stats[key]
    if "files" in logs_stats:  # which logs were read, and in which format
        stats["log_files"] = logs_stats["files"]
    if "targets" in bl:
        stats["blocklist"] = {"targets": bl["targets"], "resolver": bl.get("resolver"),
                              "catalogue_date": bl.get("catalogue_date")}
    return Report("scan", tuple(findings), tuple(errors), stats, tuple(notes))


def scan_sites(sites: list[Site], options: ScanOptions,
               progress: Progress | None = None) -> list[Report]:
    """Scan every site (concurrently, bounded); one Report per site, in the order given."""
    say = progress or (lambda _msg: None)
    runs = [_SiteRun(site) for site in sites]
    addresses = local_addresses()
    workers = max(1, min(options.jobs, len(runs)))

    def guarded(fn: Callable[[_SiteRun], None], step: str) -> Callable[[_SiteRun], None]:
        def wrapper(run: _SiteRun) -> None:
            try:
                fn(run)
            except Exception as exc:  # one broken site never stops the others
                run.errors.append(ErrorEntry(run.site.name, f"{step} failed: "
                                             f"{type(exc).__name__}: {exc}"))
        return wrapper

    say("auditing configs")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(guarded(lambda r: _prepare(r, options, addresses), "prepare"), runs))
    nets = trusted_networks(m for r in runs for a in r.audit_results
                            for m in a.facts.get("mta", []))
    probe_hosts = [r.address for r in runs if r.address]
    own = any(r.local for r in runs)
    probe_hosts += [a for r in runs for a, _p in r.extra if a not in probe_hosts]
    source, source_notes = choose_source(probe_hosts, options.source, nets, own, addresses)
    if source is not None and options.audit and probe_hosts and not trusted_by(source, nets) \
            and all(
            ipaddress.ip_address(h).is_loopback for h in probe_hosts):
        # Judge the configs for the same stranger the probes play (loopback labs and tests).
        with ThreadPoolExecutor(max_workers=workers) as pool:
            def reaudit(run: _SiteRun) -> None:
                run.audit, run.audit_results = steps.audit_site(run.site, source, run.local)
            list(pool.map(guarded(reaudit, "audit"), runs))

    def gather(run: _SiteRun) -> None:
        started = time.monotonic()
        if options.logs:
            run.logs = steps.logs_site(run.site, run.audit_results, run.local)
        run.timings["logs"] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        if options.blocklist:
            run.blocklist = steps.blocklist_site(run.site, options, run.local,
                                                 run.audit_results)
        run.timings["blocklist"] = round(time.monotonic() - started, 3)

    say("reading logs and blocklists (before probing: our probes must not count as abuse)")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(guarded(gather, "logs/blocklist"), runs))
    probe_report = Report("probe")
    probe_notes: list[str] = []
    if options.probe:
        say("probing")
        started = time.monotonic()
        _sweep(runs)
        try:
            probe_report = _probe(runs, options, source)
        except Exception as exc:
            probe_report = Report("probe", errors=(ErrorEntry(
                "probe", f"probe failed: {type(exc).__name__}: {exc}"),))
        probe_notes = _split_probe(probe_report, runs)
        for run in runs:
            run.timings["probe"] = round(time.monotonic() - started, 3)
    else:  # no probe sent (--no-probe): no report may name a probe source
        source, source_notes = None, []

    stats = probe_report.stats if isinstance(probe_report.stats, dict) else {}
    skipped = [name for name in STEPS if not getattr(options, name)]
    out = []
    for run in runs:
        hosts = {a for a in (run.address, *(a for a, _p in run.extra)) if a}
        mine = [n for n in probe_notes
                if any(n.startswith((h, f"[{h}]")) for h in hosts)]
        out.append(_finish(run, stats, source, [*source_notes, *mine], skipped))
    return out


def scan_host(site: Site, options: ScanOptions, progress: Progress | None = None) -> Report:
    """Scan one site into one Report."""
    return scan_sites([site], options, progress)[0]


def fleet_summary(reports: list[Report]) -> Report:
    """The fleet's own report: every site's findings, a per-site verdict table in stats."""
    findings = [f for r in reports for f in r.findings]
    errors = [ErrorEntry(f"{r.stats.get('site')}: {e.source}", e.message, e.line)
              for r in reports for e in r.errors]
    table = [{"site": r.stats.get("site"), "host": r.stats.get("host"),
              "verdict": r.stats.get("verdict"), "findings": len(r.findings),
              "errors": len(r.errors),
              "headline": (r.stats.get("stories") or [{}])[0].get("headline", "")}
             for r in reports]
    counts: dict[str, int] = {}
    for row in table:
        counts[str(row["verdict"])] = counts.get(str(row["verdict"]), 0) + 1
    stats = {"sites": len(reports), "verdicts": counts, "fleet": table,
             "verdict": _fleet_verdict([str(r.stats.get("verdict")) for r in reports])}
    return Report("scan", tuple(findings), tuple(errors), stats)


def _fleet_verdict(words: list[str]) -> str:
    order = ["OPEN", "ABUSED", "LISTED", "INCOMPLETE", "AT-RISK", "CLEAN"]
    return min(words, key=order.index) if words else "CLEAN"
