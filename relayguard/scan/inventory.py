"""`--inventory sites.toml`: the client sites of a fleet scan.

    [defaults]                 # optional, applies to every site
    ports = [25, 80, 3128, 8080]

    [[site]]
    name = "client-a"          # required, unique
    host = "203.0.113.10"      # required: name or address
    ports = [25, 8080]         # optional: else [defaults] ports, else the probe's defaults
    config_root = "backups/client-a"   # optional: an unpacked config backup to audit
    configs = ["backups/client-a/etc/apache2"]   # optional: config files/dirs to audit
    logs = ["backups/client-a/access.log"]        # optional
    public_addresses = ["203.0.113.10"]          # optional: for blocklists
    mail_domains = ["client-a.example"]          # optional: for blocklists

Relative paths are relative to the inventory file. Every problem is an InputError naming the
file and the site, never a traceback.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from relayguard.errors import InputError
from relayguard.scan.site import Site

MAX_SITES = 10_000
_KEYS = {"name", "host", "ports", "config_root", "configs", "logs", "public_addresses",
         "mail_domains", "server_names"}


def _strings(value: Any, where: str, key: str, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(source, f"{where}: `{key}` must be a string or a list of strings")
    return tuple(value)


def _ports(value: Any, where: str, source: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(
            isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in value):
        raise InputError(source, f"{where}: `ports` must be a non-empty list of 1-65535")
    return tuple(dict.fromkeys(value))


def load_inventory(path: Path) -> list[Site]:
    """Parse and validate an inventory file into Sites."""
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(source, f"cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(source, f"not valid TOML: {exc}") from None
    unknown = set(data) - {"defaults", "site"}
    if unknown:
        raise InputError(source, f"unknown top-level key(s): {', '.join(sorted(unknown))} "
                         "(expected [defaults] and [[site]])")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise InputError(source, "[defaults] must be a table")
    entries = data.get("site", [])
    if not isinstance(entries, list) or not entries:
        raise InputError(source, "no [[site]] entries")
    if len(entries) > MAX_SITES:
        raise InputError(source, f"{len(entries)} sites; at most {MAX_SITES} per run")
    base = path.parent
    sites: list[Site] = []
    names: set[str] = set()
    for i, raw in enumerate(entries, 1):
        if not isinstance(raw, dict):
            raise InputError(source, f"site #{i} must be a table")
        entry = {**defaults, **raw}
        where = f"site #{i}"
        bad = set(entry) - _KEYS
        if bad:
            raise InputError(source, f"{where}: unknown key(s) {', '.join(sorted(bad))}")
        name, host = entry.get("name"), entry.get("host")
        if not isinstance(name, str) or not name.strip():
            raise InputError(source, f"{where}: `name` is required")
        where = f"site {name!r}"
        if name in names:
            raise InputError(source, f"{where}: duplicate name")
        names.add(name)
        if not isinstance(host, str) or not host.strip():
            raise InputError(source, f"{where}: `host` is required")

        def local(p: str) -> Path:
            q = Path(p).expanduser()
            return q if q.is_absolute() else base / q

        root = entry.get("config_root")
        if root is not None and not isinstance(root, str):
            raise InputError(source, f"{where}: `config_root` must be a path")
        sites.append(Site(
            name=name.strip(), host=host.strip(),
            ports=_ports(entry["ports"], where, source) if "ports" in entry else None,
            configs=tuple(local(p) for p in _strings(entry.get("configs", []), where,
                                                      "configs", source)),
            config_root=local(root) if root else None,
            logs=tuple(str(local(p)) for p in _strings(entry.get("logs", []), where, "logs",
                                                       source)),
            public_addresses=_strings(entry.get("public_addresses", []), where,
                                      "public_addresses", source),
            mail_domains=_strings(entry.get("mail_domains", []), where, "mail_domains", source),
            server_names=_strings(entry.get("server_names", []), where, "server_names", source),
            discover_local=False,
        ))
    return sites
