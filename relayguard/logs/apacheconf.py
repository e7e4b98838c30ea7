"""What `--apache-config` tells `relayguard logs`: log formats by file, the site's own names,
and whether the server can relay at all (its forward-proxy setup).

The config is read by the audit's own Apache parser (Include/IncludeOptional, `${APACHE_LOG_DIR}`
from Debian's envvars, `<IfModule>` decided as httpd does) and judged by the audit's own proxy
rules, so `logs` and `audit` never disagree about the same file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relayguard.findings import ErrorEntry
from relayguard.logs.formats import APACHE_FORMATS


@dataclass(frozen=True)
class ProxyConfig:
    """Can the server relay? True/False from its config, None when the config cannot say.

    `connect`: CONNECT tunnels (ProxyRequests On with mod_proxy_connect); `http`: absolute-URI
    requests to other hosts (ProxyRequests On with mod_proxy_http; a RewriteRule [P] or
    ProxyPassMatch with a variable host makes it None: some may be forwarded)."""

    http: bool | None
    connect: bool | None
    evidence: str


@dataclass
class ApacheLogSettings:
    """Everything the logs command takes from one Apache config tree."""

    formats_by_path: dict[str, str] = field(default_factory=dict)
    nicknames: dict[str, str] = field(default_factory=dict)  # LogFormat nickname -> string
    server_names: set[str] = field(default_factory=set)
    proxy: ProxyConfig | None = None
    errors: list[ErrorEntry] = field(default_factory=list)


def _unquote(fmt: str) -> str:
    return fmt.replace('\\"', '"')


def log_formats(directives: Iterable[tuple[str, tuple[str, ...]]],
                server_root: Path | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(CustomLog path -> format string, LogFormat nickname -> string) from directives in
    config order. Nicknames are resolved after the whole config is read, as mod_log_config
    does (Debian defines them in apache2.conf and uses them in sites-enabled)."""
    nicknames = dict(APACHE_FORMATS)
    customs: list[tuple[str, str]] = []
    for key, args in directives:
        if key == "logformat" and len(args) >= 2:
            nicknames[args[1]] = _unquote(args[0])
        elif key == "customlog" and len(args) >= 2 and not args[0].startswith("|"):
            path = args[0]
            if server_root is not None and not Path(path).is_absolute():
                path = str(server_root / path)
            customs.append((path, args[1]))
    out: dict[str, str] = {}
    for path, fmt in customs:
        if fmt in nicknames:
            out[path] = nicknames[fmt]
        elif "%" in fmt:
            out[path] = _unquote(fmt)
    return out, nicknames


def site_names(directives: Iterable[tuple[str, tuple[str, ...]]]) -> set[str]:
    """`ServerName` / `ServerAlias` host names (ports and schemes stripped, no wildcards)."""
    names: set[str] = set()
    for key, args in directives:
        if key not in ("servername", "serveralias"):
            continue
        for word in args:
            host = word.split("://", 1)[-1].rsplit(":", 1)[0].strip("\"'").lower()
            if host and "*" not in host and "?" not in host:
                names.add(host)
    return names


def read_apache_config(path: Path, root: Path | None = None) -> ApacheLogSettings:
    """Parse the Apache config at `path` (file or directory) for the logs command.

    `root` is the audit's `--root`: absolute paths inside the config (Include, ServerRoot)
    are read under it, as in a config backup; absolute CustomLog paths stay as the config
    names them (relative ones are joined to the ServerRoot, which is under `root`).
    Raises `relayguard.errors.InputError` when the root file cannot be read; problems in
    included files are returned in `errors` and the rest is still used."""
    from relayguard.audit.apache import parse_apache
    from relayguard.audit.base import AuditOptions
    from relayguard.audit.rules.apache import check

    options = AuditOptions(root=root)
    cfg = parse_apache(path, options)
    nodes = [n for top in cfg.nodes for n in top.walk()]
    pairs = [(n.key, n.args) for n in nodes if not n.is_section]
    formats, nicknames = log_formats(pairs, cfg.server_root)
    settings = ApacheLogSettings(formats, nicknames, site_names(pairs), errors=list(cfg.errors))
    _findings, facts = check(cfg, options)
    settings.proxy = _proxy_config(
        facts.get("proxy_paths", []), cfg.has_module("proxy_http_module", "mod_proxy_http.c"),
        cfg.has_module("proxy_connect_module", "mod_proxy_connect.c"), len(cfg.files))
    return settings


def _proxy_config(paths: list[dict[str, Any]], http_module: bool, connect_module: bool,
                  nfiles: int) -> ProxyConfig:
    """The audit's proxy paths as relay capability (see ProxyConfig)."""
    forward = [p for p in paths if p.get("kind") == "forward-proxy"]
    other = [p for p in paths if p.get("kind") != "forward-proxy"]
    where = [f"{e['path']}:{e['line']}: {e['text']}" for p in forward + other
             for e in p.get("evidence", [])[:1]]
    if forward:
        return ProxyConfig(http=http_module, connect=connect_module,
                           evidence="forward proxying is on: " + "; ".join(where[:3]))
    if other:
        return ProxyConfig(http=None, connect=False,
                           evidence="no forward proxy; some requests are proxied by host: " +
                           "; ".join(where[:3]))
    return ProxyConfig(http=False, connect=False,
                       evidence=f"no forward proxy (no effective ProxyRequests On, "
                                f"{nfiles} config file(s) read)")
