"""`relayguard lab`: the incident replayed on this machine — hijack, detection, fix, proof.

1. start a real Apache with the forward proxy left open and a real Postfix that trusts
   loopback, both on one loopback address;
2. spammers relay through the proxy (CONNECT mx:25, stopped at RCPT), visitors browse;
3. `scan` the host: config, probe and logs each show the hole, told as one story;
4. apply the verified fix (`relayguard.audit.fix`), restart Apache;
5. replay: spammers are refused, visitors still served, the probe finds nothing: closed.
Everything is on loopback, every step bounded; daemons are stopped, the work directory and
any loopback address the lab added are removed on exit, error and Ctrl-C alike.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from relayguard.findings import Category, Report
from relayguard.lab import play, servers
from relayguard.lab.servers import LabError

DEFAULT_ADDRESS = "127.0.10.1"
WEB_PORT = 8080
SMTP_PORT = 25
SPAMMERS = 4
VISITORS = 6
_RELAY_PATHS = {Category.OPEN_HTTP_PROXY, Category.OPEN_CONNECT_PROXY, Category.SMTP_VIA_PROXY}

Say = Callable[[str], None]


@dataclass
class LabResult:
    """What happened, for the CLI to tell and for tests to verify."""

    address: str
    workdir: str
    attempts_before: list[play.Attempt] = field(default_factory=list)
    before: Report | None = None
    diff: str = ""
    backups: list[str] = field(default_factory=list)
    attempts_after: list[play.Attempt] = field(default_factory=list)
    after: Report | None = None
    closed: bool = False
    pids: set[int] = field(default_factory=set)
    added_address: bool = False


def _actors(address: str, base: int, count: int) -> list[str]:
    prefix = address.rsplit(".", 1)[0]
    return [f"{prefix}.{base + i}" for i in range(count)]


def check_requirements() -> None:
    """LabError naming exactly what is missing (packages, root)."""
    missing = servers.missing_packages()
    if missing:
        raise LabError("relayguard lab needs these Debian packages, which are not installed: "
                       f"{' '.join(missing)}\ninstall them with: "
                       f"sudo apt-get install --no-install-recommends {' '.join(missing)}")
    if os.geteuid() != 0:
        raise LabError("relayguard lab must run as root: Postfix switches to its own user and "
                       "needs a loopback address added to `lo` (`sudo relayguard lab`)")


def _scan(address: str, workdir: Path, logs: bool) -> Report:
    from relayguard.scan import ScanOptions, Site, scan_host

    site = Site(name="lab", host=address, ports=(SMTP_PORT, WEB_PORT),
                configs=(workdir / "web" / "httpd.conf", workdir / "mail" / "postfix"),
                logs=(str(workdir / "web" / "access.log"), str(workdir / "mail" / "maillog"))
                if logs else ())
    return scan_host(site, ScanOptions(blocklist=False, logs=logs, probe_timeout=2.0,
                                       probe_max_time=60.0, jobs=1))


def _fix(workdir: Path, result: LabResult, say: Say) -> None:
    """Plan the verified fix for Apache's config and write it (a backup is kept)."""
    from relayguard.audit import auditor_named, run_audit
    from relayguard.audit.base import AuditOptions
    from relayguard.audit.fix import findings_for, plan_fixes, write_fixes

    stranger = ipaddress.ip_address(_actors(result.address, 250, 1)[0])
    options = AuditOptions(outside_client=stranger)
    report, results = run_audit([workdir / "web" / "httpd.conf"], options=options)
    for r in results:
        plan = plan_fixes(auditor_named(r.server), r, findings_for(r, report.findings), options)
        result.diff += plan.diff()
        if plan.edits:
            result.backups += write_fixes(plan)
    if not result.backups:
        raise LabError("the audit offered no verified fix for the lab's Apache config")
    say(result.diff.rstrip())


def run_lab(say: Say, address: str = DEFAULT_ADDRESS, keep: bool = False) -> LabResult:
    """Run the whole lab; `say` receives each line to show. Always cleans up."""
    check_requirements()
    if not ipaddress.ip_address(address).is_loopback:
        raise LabError(f"--address {address}: the lab runs on loopback only (127.0.0.0/8)")
    servers.ensure_free(address, (SMTP_PORT, WEB_PORT))
    workdir = Path(tempfile.mkdtemp(prefix="relayguard-lab-"))
    os.chmod(workdir, 0o755)
    result = LabResult(address=address, workdir=str(workdir))
    web = mta = None
    try:
        result.added_address = servers.add_loopback_address(address)
        say(f"1. Starting a real Postfix on {address}:{SMTP_PORT} (it trusts 127.0.0.0/8, "
            f"Debian's default; it can deliver nowhere) and a real Apache on "
            f"{address}:{WEB_PORT} with the forward proxy left open, as in the incident:")
        say("   " + servers.OPEN_PROXY_BODY.strip().replace("\n", "\n   "))
        for sub in ("web", "mail"):  # apart: --fix copies the web config dir to verify
            (workdir / sub).mkdir(mode=0o755)
        mta = servers.postfix(workdir / "mail", address, SMTP_PORT)
        mta.start()
        web = servers.apache(workdir / "web", address, WEB_PORT)
        web.start()
        result.pids |= mta.pids | web.pids
        say(f"   started: Postfix (pid {mta.pid}), Apache (pid {web.pid}), each in its own "
            "process group")

        say(f"\n2. {SPAMMERS} spammers relay through the proxy (CONNECT {address}:25, stopped "
            f"at RCPT: nothing is sent) while {VISITORS} visitors browse the site:")
        result.attempts_before = play.play((address, WEB_PORT), (address, SMTP_PORT),
                                           _actors(address, 60, SPAMMERS),
                                           _actors(address, 30, VISITORS))
        _tell(result.attempts_before, say)

        say(f"\n3. relayguard scan {address} (config + probe + logs):")
        result.before = _scan(address, workdir, logs=True)
        _tell_scan(result.before, say)

        say("\n4. Applying the fix (verified by re-auditing a scratch copy and by "
            "`apache2 -t` first), then restarting Apache:")
        _fix(workdir, result, say)
        web.restart()
        result.pids |= web.pids
        say(f"   Apache restarted (pid {web.pid})")

        say("\n5. Replaying the spammers and visitors against the fixed server:")
        result.attempts_after = play.play((address, WEB_PORT), (address, SMTP_PORT),
                                          _actors(address, 70, 2), _actors(address, 40, 2))
        _tell(result.attempts_after, say)
        result.after = _scan(address, workdir, logs=False)
        open_paths = [f for f in result.after.findings if f.category in _RELAY_PATHS
                      and f.rule.startswith("PROBE-")]
        spam_ok = not any(a.relayed for a in result.attempts_after)
        visitors_ok = all(" 200 " in f"{a.proxy_status} " for a in result.attempts_after
                          if a.actor == "visitor")
        result.closed = not open_paths and spam_ok and visitors_ok
        say(f"   probe after the fix: {len(open_paths)} open relay path(s); spammers relayed: "
            f"{'yes' if not spam_ok else 'no'}; visitors served: "
            f"{'yes' if visitors_ok else 'NO'}")
        say("\nRESULT: " + ("the hole is closed: detected by config, probe and logs, fixed, "
                            "and proven closed." if result.closed else
                            "the hole is NOT closed - see above."))
        return result
    finally:
        for proc in (web, mta):
            if proc is not None:
                proc.stop()
        if result.added_address:
            servers.remove_loopback_address(address)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        done = ["daemons stopped"]
        if result.added_address:
            done.append(f"{address} removed from lo")
        done.append("work directory removed" if not keep else f"files kept in {workdir}")
        say(f"\nCleaned up: {', '.join(done)}.")


def _tell(attempts: list[play.Attempt], say: Say) -> None:
    for a in attempts:
        if a.actor == "spammer":
            outcome = ("RELAYED: the MTA accepted a foreign recipient" if a.relayed
                       else "refused")
            detail = f"MTA: {a.rcpt_reply}" if a.rcpt_reply else ""
            say(f"   spammer {a.source}: proxy said {a.proxy_status!r} {detail} -> {outcome}")
        else:
            say(f"   visitor {a.source}: {a.proxy_status}")


def _tell_scan(report: Report, say: Say) -> None:
    from relayguard.scan.correlate import evidence_source

    stats = report.stats
    say(f"   VERDICT {stats.get('verdict')}: {stats.get('verdict_meaning')}")
    for story in stats.get("stories") or []:
        say(f"   story: {story['headline']}")
        if story.get("fix"):
            say("   fix first: " + story["fix"].replace("\n", "\n              "))
    for source in ("audit", "probe", "logs"):
        rules = sorted({f.rule for f in report.findings if evidence_source(f) == source})
        word = {"audit": "config", "probe": "probe ", "logs": "logs  "}[source]
        say(f"   {word}: {', '.join(rules) if rules else 'nothing'}")
    for note in report.notes:
        if note.startswith("TRUSTED SOURCE"):
            say(f"   note: {note}")
