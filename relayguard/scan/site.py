"""What to scan: one `Site` per host (a fleet is several), and the options every site shares.

A site is this machine (`host=None`) or a host name/address. The local machine gets the full
treatment (its configs, listening ports, logs); a remote site gets probe + blocklist, plus an
audit of a config backup and logs when the inventory names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Site:
    """One host to scan and what is known about it."""

    name: str
    host: str | None = None  # None: this machine
    ports: tuple[int, ...] | None = None  # None: listening ports (local) or probe defaults
    configs: tuple[Path, ...] = ()  # config files/dirs to audit (empty: discover, local only)
    config_root: Path | None = None  # an unpacked config backup / system image to audit
    logs: tuple[str, ...] = ()  # log files (empty: found from configs and standard places)
    public_addresses: tuple[str, ...] = ()  # addresses to check on blocklists
    mail_domains: tuple[str, ...] = ()  # mail domains to check on domain blocklists
    server_names: tuple[str, ...] = ()  # the site's own names (not proxying, in logs)
    # When the site is this machine: audit its standard config locations and read its
    # standard logs if none are named. Off for inventory sites (client sites are never this
    # machine's /etc, even when a lab puts them on loopback).
    discover_local: bool = True


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """Knobs shared by every site of one run; defaults are bounded and polite."""

    source: str | None = None  # probe from this address (default: picked, see sources.py)
    canary_host: str | None = None
    canary_bind: str | None = None  # where the canary listens when targets reach it via NAT
    smtp_check_target: tuple[str, int] | None = None
    probe: bool = True
    audit: bool = True
    logs: bool = True
    blocklist: bool = True
    resolvers: tuple[str, ...] = ()  # blocklist nameservers (default: /etc/resolv.conf)
    zones: tuple[str, ...] = ()  # blocklist zones (default: the catalogue's default set)
    probe_timeout: float = 3.0
    probe_max_time: float = 300.0
    blocklist_deadline: float = 30.0
    jobs: int = 4  # sites audited / analysed at once
    concurrency: int = 32  # probe connections open at once, in total
