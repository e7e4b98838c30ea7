"""The four kinds of evidence `scan` gathers for a site, each through its capability's own API.

Every step returns a `Report` (never raises for a broken site: failures become ErrorEntry),
so one step that cannot run never stops the others, and a fleet keeps going.
"""

from __future__ import annotations

import glob
import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING

from relayguard.audit.base import AuditOptions, AuditResult
from relayguard.findings import ErrorEntry, Report
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


def log_paths(site: Site, results: list[AuditResult], local: bool) -> tuple[list[str],
                                                                            dict[str, str]]:
    """Log files to read: the site's own list, else those its configs name and the standard
    places (local only), expanded to their rotated siblings; plus Apache LogFormats by path."""
    from relayguard.logs.formats import formats_from_apache_config

    formats: dict[str, str] = {}
    wanted: list[str] = list(site.logs)
    if not wanted:
        for r in results:
            for name in r.files:
                try:
                    text = Path(name).read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                if r.server == "apache":
                    text = text.replace("${APACHE_LOG_DIR}", "/var/log/apache2")
                    formats.update(formats_from_apache_config(text))
                elif r.server == "postfix":
                    wanted += [m for m in _MAILLOG.findall(text) if m.startswith("/")]
        wanted += [p for p in formats if p.startswith("/")]
        if local and site.discover_local:
            wanted += list(STANDARD_LOGS)
    out: list[str] = []
    for path in wanted:
        root = site.config_root
        real = str(root / path.lstrip("/")) if root is not None and path.startswith("/") \
            else path
        for p in [real, *sorted(glob.glob(glob.escape(real) + ".[0-9]*"))]:
            if p not in out and Path(p).is_file() and len(out) < MAX_LOG_FILES:
                out.append(p)
    return out, formats


def logs_site(site: Site, results: list[AuditResult], local: bool) -> Report:
    """Relaying that already happened, from the site's access and mail logs."""
    from relayguard.logs.analyze import LogOptions, analyse

    try:
        paths, formats = log_paths(site, results, local)
        if not paths:
            return Report("logs", notes=(f"{site.name}: no log file found to analyse",))
        options = LogOptions(server_names=frozenset(site.server_names),
                             mail_domains=frozenset(site.mail_domains),
                             formats_by_path=formats, jobs=1)
        report = analyse(paths, options)
        return Report("logs", report.findings, report.errors, report.stats,
                      (f"{site.name}: logs read: {', '.join(paths)}", *report.notes))
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
    from relayguard.blocklist.names import to_alabel
    from relayguard.blocklist.zones import Zone as CatalogueZone
    from relayguard.blocklist.zones import ZoneKind, lookup, zone_set
    from relayguard.errors import InputError

    if not names:
        return zone_set("default")
    out: list[CatalogueZone] = []
    for item in names:
        name, _, kind = item.partition(":")
        if kind not in ("", "ip", "domain"):
            raise InputError("--zones", f"{item!r}: kind must be `ip` or `domain`")
        name = to_alabel(name)
        zone = lookup(name) or CatalogueZone.generic(name, ZoneKind(kind or "ip"))
        if zone.name not in {z.name for z in out}:
            out.append(zone)
    return tuple(out)


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
