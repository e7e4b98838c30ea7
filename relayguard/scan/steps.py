"""The four kinds of evidence `scan` gathers for a site, each through its capability's own API.

Every step returns a `Report` (never raises for a broken site: failures become ErrorEntry),
so one step that cannot run never stops the others, and a fleet keeps going.
"""

from __future__ import annotations

import glob
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from relayguard.audit.base import AuditOptions, AuditResult, under_root
from relayguard.findings import ErrorEntry, Report
from relayguard.logs.apacheconf import ApacheLogSettings, read_apache_config
from relayguard.scan.site import ScanOptions, Site

if TYPE_CHECKING:
    from relayguard.blocklist.zones import Zone

# Where Debian/RHEL keep the logs the logs capability reads, when no config names them.
STANDARD_LOGS: tuple[str, ...] = (
    "/var/log/apache2/access.log", "/var/log/apache2/other_vhosts_access.log",
    "/var/log/httpd/access_log", "/var/log/nginx/access.log", "/var/log/squid/access.log",
    "/var/log/mail.log", "/var/log/maillog",
)
MAX_LOG_FILES = 40  # rotated sets included; bounded so a huge /var/log cannot stall a scan
_LOG_DIR = "${APACHE_LOG_DIR}"
_MAILLOG = re.compile(r"^\s*maillog_file\s*=\s*(\S+)", re.M)


def _failed(step: str, source: str, exc: BaseException) -> Report:
    return Report(step, errors=(ErrorEntry(source, f"{step} failed: {type(exc).__name__}: "
                                           f"{exc}"),))


def audit_site(site: Site, outside_client: str | None,
               local: bool) -> tuple[Report, list[AuditResult]]:
    """Audit the site's configs (given ones, a backup root, or this machine's own)."""
    from relayguard.audit import run_audit
    from relayguard.errors import RelayguardError

    if not site.configs and site.config_root is None and not (local and site.discover_local):
        return Report("audit", notes=(f"{site.name}: no config given for this site; audit "
                                      "skipped (name its configs or a config backup)",)), []
    client = ipaddress.ip_address(outside_client) if outside_client else None
    options = AuditOptions(outside_client=client, root=site.config_root)
    try:
        return run_audit(list(site.configs), options=options)
    except RelayguardError as exc:
        return _failed("audit", site.name, exc), []
    except Exception as exc:  # a parser bug must not lose the other evidence
        return _failed("audit", site.name, exc), []


@dataclass
class LogPlan:
    """The logs to read for a site and what its Apache configs say about them."""

    paths: list[str] = field(default_factory=list)
    apache: ApacheLogSettings = field(default_factory=ApacheLogSettings)
    notes: list[str] = field(default_factory=list)


def on_disk(path: str, root: Path | None) -> str:
    """Where a path a config names is read: under the config backup's root, if any."""
    if root is None or not path.startswith("/") or Path(path).is_relative_to(root):
        return path
    return str(under_root(path, root))


def apache_settings(results: list[AuditResult], root: Path | None) -> tuple[
        ApacheLogSettings, list[str]]:
    """Every audited Apache tree read the way `logs --apache-config` reads it (includes,
    `${APACHE_LOG_DIR}` from envvars, the server's own LogFormat nicknames), with CustomLog
    paths mapped to where they are read. The proxy setup is kept only when one tree was read:
    two servers' setups cannot both judge the same logs."""
    from relayguard.errors import RelayguardError

    merged = ApacheLogSettings()
    proxies = []
    notes: list[str] = []
    for r in results:
        if r.server != "apache":
            continue
        try:
            found = read_apache_config(Path(r.config), root)
        except RelayguardError as exc:
            notes.append(f"{r.config}: its log settings could not be read: {exc}")
            continue
        for path, fmt in found.formats_by_path.items():
            if _LOG_DIR in path:  # no envvars beside the config: Debian's default
                path = "/var/log/apache2" + path.split(_LOG_DIR, 1)[1]
            merged.formats_by_path[on_disk(path, root)] = fmt
        merged.nicknames.update(found.nicknames)
        merged.server_names |= found.server_names
        merged.errors += found.errors
        proxies.append(found.proxy)
    merged.proxy = proxies[0] if len(proxies) == 1 else None
    return merged, notes


def _mail_log(path: str) -> bool:
    """True when a file's first lines read as a mail (syslog) log, or an error log: logs
    an Apache proxy setup cannot misjudge."""
    from relayguard.logs.formats import detect_format
    from relayguard.logs.sources import open_binary

    try:
        stream = open_binary(path)
        try:
            head = stream.read(64 * 1024)
        finally:
            stream.close()
    except OSError:
        return False
    found = detect_format(head.decode("utf-8", "surrogateescape").split("\n")[:200])
    return found is not None and found.kind in ("mail", "skip")


def log_plan(site: Site, results: list[AuditResult], local: bool) -> LogPlan:
    """Log files to read: the site's own list, else those its configs name and the standard
    places (local only), expanded to their rotated siblings; plus what the Apache configs say
    about them. The Apache proxy setup judges the logs only when every file read is one of
    that Apache's own logs or a mail log: another server's access log (Squid, nginx) would
    be misjudged by it."""
    root = site.config_root
    plan = LogPlan()
    plan.apache, plan.notes = apache_settings(results, root)
    apache_logs = set(plan.apache.formats_by_path)
    wanted: list[str] = [on_disk(p, root) for p in site.logs]
    if not wanted:
        for r in results:
            if r.server != "postfix":
                continue
            for name in r.files:
                try:
                    text = Path(name).read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                wanted += [on_disk(m, root) for m in _MAILLOG.findall(text) if m.startswith("/")]
        wanted += [p for p in apache_logs if p.startswith("/")]
        if local and site.discover_local:
            wanted += [on_disk(p, root) for p in STANDARD_LOGS]
    given = set(wanted) if site.logs else set()  # the user's own: a missing one is an error
    read_bases: set[str] = set()
    for path in wanted:
        for p in [path, *sorted(glob.glob(glob.escape(path) + ".[0-9]*"))]:
            if p not in plan.paths and (Path(p).is_file() or p in given) \
                    and len(plan.paths) < MAX_LOG_FILES:
                plan.paths.append(p)
                read_bases.add(path)
    if plan.apache.proxy is not None:
        others = sorted(p for p in read_bases - apache_logs if not _mail_log(p))
        if others:
            plan.notes.append("Apache's proxy setup was not used to judge the logs: they "
                              f"include logs it does not write ({', '.join(others[:3])})")
            plan.apache.proxy = None
    return plan


def logs_site(site: Site, results: list[AuditResult], local: bool) -> Report:
    """Relaying that already happened, from the site's access and mail logs."""
    from relayguard.logs.analyze import LogOptions, analyse

    try:
        plan = log_plan(site, results, local)
        if not plan.paths:
            return Report("logs", notes=(f"{site.name}: no log file found to analyse",
                                         *plan.notes))
        options = LogOptions(
            server_names=frozenset({*site.server_names, *plan.apache.server_names}),
            mail_domains=frozenset(site.mail_domains),
            formats_by_path=plan.apache.formats_by_path,
            format_nicknames=plan.apache.nicknames, proxy_config=plan.apache.proxy, jobs=1)
        report = analyse(plan.paths, options)
        unread = {e.source for e in report.errors}
        read = [p for p in plan.paths if p not in unread]
        return Report("logs", report.findings, report.errors, report.stats,
                      (*([f"{site.name}: logs read: {', '.join(read)}"] if read else []),
                       *plan.notes, *report.notes))
    except Exception as exc:  # the logs capability reports bad input itself; this is a bug
        return _failed("logs", site.name, exc)


def mail_domains(site: Site, results: list[AuditResult], local: bool) -> list[str]:
    """The site's mail domains when none were given: those its Postfix/Exim configs name,
    and for this machine (no HOST) its FQDN and /etc/mailname (see maildomains.py)."""
    from relayguard.scan.maildomains import config_domains, this_machine_domains

    if site.mail_domains:
        return []
    found = config_domains(results, site.config_root)
    if local and site.discover_local and site.host is None:
        found += this_machine_domains()
    return list(dict.fromkeys(found))


def blocklist_targets(site: Site, local: bool) -> list[str]:
    """Public addresses and mail domains to check: given ones, else this host's public ones."""
    from relayguard.hostinfo import local_addresses, public_addresses

    wanted = [*site.public_addresses, *site.mail_domains]
    if not wanted and site.host is not None:
        try:
            if ipaddress.ip_address(site.host).is_global:
                wanted.append(site.host)
        except ValueError:
            wanted.append(site.host)  # a name: its A/AAAA and the domain itself are checked
    if not wanted and local and site.discover_local:
        wanted = public_addresses(local_addresses())
    return list(dict.fromkeys(wanted))


def zones_for(names: tuple[str, ...]) -> tuple[Zone, ...]:
    """Catalogue or generic zones for `--zones NAME[:ip|domain]` (the catalogue set if none)."""
    from relayguard.blocklist.zones import parse_zones, zone_set

    return parse_zones(names) if names else zone_set("default")


def blocklist_site(site: Site, options: ScanOptions, local: bool,
                   results: list[AuditResult] | None = None) -> Report:
    """Is the site's public address or mail domain on a DNS blocklist (self-tested lists).

    Mail domains found in the configs (`mail_domains`) are asked on the domain lists only:
    their A records are the web site's, not necessarily this host's addresses."""
    from dataclasses import replace

    from relayguard.blocklist.check import check
    from relayguard.blocklist.dnsclient import DnsClient, Nameserver
    from relayguard.blocklist.names import parse_target
    from relayguard.blocklist.report import build_report
    from relayguard.blocklist.zones import ZoneKind
    from relayguard.errors import InputError

    targets = blocklist_targets(site, local)
    found = [d for d in mail_domains(site, results or [], local) if d not in targets]
    notes: list[str] = []
    try:
        zones = zones_for(options.zones)
        if found and not any(z.kind is ZoneKind.DOMAIN for z in zones):
            notes.append(f"{site.name}: mail domains {', '.join(found)} not checked: no domain "
                         "list among the chosen zones")
            found = []
        elif found:
            notes.append(f"{site.name}: mail domains from the MTA configs and this host's name, "
                         f"checked on the domain lists: {', '.join(found)}")
    except InputError as exc:
        return Report("blocklist", errors=(ErrorEntry(exc.source, exc.message, exc.line),))
    if not targets and not found:
        return Report("blocklist", notes=(
            f"{site.name}: no public address or mail domain to check on blocklists (this "
            "host has no global address; give --public-address / --mail-domain)",))
    try:
        parsed = [parse_target(t) for t in targets]
        parsed += [replace(parse_target(d), resolve=False) for d in found]
        if options.resolvers:
            servers = [Nameserver.parse(r) for r in options.resolvers]
        else:
            import dns.resolver

            conf = dns.resolver.Resolver(configure=True)
            servers = [Nameserver.parse(str(ns)) for ns in conf.nameservers]
        client = DnsClient(servers, timeout=2.0, retries=1, deadline=options.blocklist_deadline)
        result = check(parsed, zones, client)
        return build_report(result, [str(s) for s in servers], tuple(notes))
    except InputError as exc:
        return Report("blocklist", errors=(ErrorEntry(exc.source, exc.message, exc.line),))
    except Exception as exc:  # no resolver configured, a bug: the other evidence still counts
        return _failed("blocklist", site.name, exc)
