"""`watch.toml`: what to follow, how incidents are paced, where alerts go, how to respond.

Parsed with the standard `tomllib` into frozen dataclasses; every unknown key or wrong type is
an InputError naming the key, so a typo never silently disables an alert channel.
See contrib/watch.toml for a commented example.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from typing import Any

from relayguard.errors import InputError
from relayguard.findings import Severity
from relayguard.logs.formats import zone

DEFAULT_STATE = "/var/lib/relayguard/watch.sqlite"


@dataclass(frozen=True)
class EmailConfig:
    host: str
    to: tuple[str, ...]
    sender: str = "relayguard@localhost"
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0
    ca_file: str | None = None  # trust this CA (PEM) instead of the system store


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0


@dataclass(frozen=True)
class SyslogConfig:
    address: str = "/dev/log"  # a unix socket path, or host:port (UDP)
    facility: str = "daemon"


@dataclass(frozen=True)
class AlertConfig:
    stdout: bool = True  # JSON lines on stdout unless [alerts] says otherwise
    syslog: SyslogConfig | None = None
    email: EmailConfig | None = None
    webhook: WebhookConfig | None = None
    command: tuple[str, ...] | None = None
    batch_window: float = 0.2  # seconds to gather alerts into one delivery
    retry_min: float = 1.0
    retry_max: float = 300.0
    min_severity: Severity = Severity.LOW

    def channels(self) -> list[str]:
        out = ["stdout"] if self.stdout else []
        out += [n for n in ("syslog", "email", "webhook", "command") if getattr(self, n)]
        return out


@dataclass(frozen=True)
class RespondConfig:
    mode: str = "none"  # none | nftables | command
    dry_run: bool = True
    timeout: int = 3600
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    kinds: tuple[str, ...] = ("proxy-smtp", "proxy-connect", "proxy-http", "smtp-relayed")
    verdicts: tuple[str, ...] = ("relayed", "unknown")
    nft: tuple[str, ...] = ("nft",)
    family: str = "inet"
    table: str = "relayguard"
    set4: str = "blocked4"
    set6: str = "blocked6"
    block_command: tuple[str, ...] = ()
    unblock_command: tuple[str, ...] = ()


@dataclass(frozen=True)
class BlocklistConfig:
    targets: tuple[str, ...] = ()
    interval: float = 3600.0
    zones: tuple[str, ...] = ()
    zone_set: str = "default"
    resolvers: tuple[str, ...] = ()
    timeout: float = 2.0


@dataclass(frozen=True)
class WatchConfig:
    files: tuple[str, ...] = ()
    state: str = DEFAULT_STATE
    start: str = "end"  # where to start in a file seen for the first time: end | beginning
    poll_interval: float = 0.25
    linger: float = 30.0
    inotify: bool = True
    server_names: frozenset[str] = frozenset()
    mail_domains: frozenset[str] = frozenset()
    trusted_clients: frozenset[str] = frozenset({"127.0.0.1", "::1"})
    formats: tuple[tuple[str, str], ...] = ()  # path -> forced log format
    tz: str | None = None  # zone the syslog (mail) logs are written in; None: this machine's
    metrics: str | None = None
    update_interval: float = 60.0
    quiet: float = 300.0
    checkpoint_interval: float = 1.0
    line_digest: bool = False
    alerts: AlertConfig = field(default_factory=AlertConfig)
    respond: RespondConfig = field(default_factory=RespondConfig)
    blocklist: BlocklistConfig = field(default_factory=BlocklistConfig)


# Every key each section accepts (contrib/watch.toml must show them all: tests/watch).
ALLOWED_KEYS: dict[str, set[str]] = {
    "": {"watch", "incidents", "alerts", "respond", "blocklist"},
    "watch": {"files", "state", "start", "poll_interval", "linger", "inotify", "server_names",
              "mail_domains", "trusted_clients", "formats", "tz", "metrics",
              "checkpoint_interval", "line_digest"},
    "incidents": {"update_interval", "quiet", "min_severity"},
    "alerts": {"stdout", "syslog", "email", "webhook", "command", "batch_window", "retry_min",
               "retry_max"},
    "alerts.syslog": {"address", "facility"},
    "alerts.email": {"host", "port", "from", "to", "starttls", "ssl", "username", "password",
                     "password_file", "timeout", "ca_file"},
    "alerts.webhook": {"url", "headers", "timeout"},
    "alerts.command": {"argv"},
    "respond": {"mode", "dry_run", "timeout", "allow", "kinds", "verdicts", "nft", "family",
                "table", "set4", "set6", "block_command", "unblock_command"},
    "blocklist": {"targets", "interval", "zones", "zone_set", "resolvers", "timeout"},
}


class _Reader:
    def __init__(self, source: str, data: dict[str, Any], section: str) -> None:
        self.source, self.data, self.section = source, data, section
        unknown = set(data) - ALLOWED_KEYS[section]
        if unknown:
            where = f"[{section}]" if section else "top level"
            raise InputError(source, f"unknown key(s) in {where}: {', '.join(sorted(unknown))}")

    def _err(self, key: str, what: str) -> InputError:
        return InputError(self.source, f"{self.section}.{key}: {what}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self._err(key, f"expected {getattr(kind, '__name__', kind)}, "
                                 f"got {type(value).__name__}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key, list, None)
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            raise self._err(key, "expected a list of strings")
        return tuple(value)

    def sub(self, key: str) -> _Reader | None:
        value = self.get(key, dict, None)
        return None if value is None else _Reader(self.source, value,
                                                  f"{self.section}.{key}".lstrip("."))

    def positive(self, key: str, default: float) -> float:
        value = self.get(key, float, default)
        if value <= 0:
            raise self._err(key, "must be > 0")
        return float(value)


def _network(source: str, text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InputError(source, f"respond.allow: not an address or network: {text!r}") from None


def parse_config(text: str, source: str = "watch.toml") -> WatchConfig:
    """Parse watch.toml text; InputError on any problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(source, f"not valid TOML: {exc}") from None
    top = _Reader(source, data, "")
    w = top.sub("watch") or _Reader(source, {}, "watch")
    inc = top.sub("incidents") or _Reader(source, {}, "incidents")
    start = w.get("start", str, "end")
    if start not in ("end", "beginning"):
        raise w._err("start", "must be 'end' or 'beginning'")
    formats = w.get("formats", dict, {})
    if not all(isinstance(v, str) for v in formats.values()):
        raise w._err("formats", "expected a table of path = \"format\"")
    tz = w.get("tz", str, None)
    if tz is not None:
        try:
            zone(tz)
        except ValueError as exc:
            raise w._err("tz", str(exc)) from None
    sev_name = inc.get("min_severity", str, "low")
    try:
        min_sev = Severity[sev_name.upper()]
    except KeyError:
        raise inc._err("min_severity", f"unknown severity {sev_name!r}") from None
    return WatchConfig(
        files=w.strings("files"),
        state=w.get("state", str, DEFAULT_STATE),
        start=start,
        poll_interval=w.positive("poll_interval", 0.25),
        linger=w.positive("linger", 30.0),
        inotify=w.get("inotify", bool, True),
        server_names=frozenset(w.strings("server_names")),
        mail_domains=frozenset(w.strings("mail_domains")),
        trusted_clients=frozenset({"127.0.0.1", "::1", *w.strings("trusted_clients")}),
        formats=tuple(sorted(formats.items())),
        tz=tz,
        metrics=w.get("metrics", str, None),
        checkpoint_interval=w.positive("checkpoint_interval", 1.0),
        line_digest=w.get("line_digest", bool, False),
        update_interval=inc.positive("update_interval", 60.0),
        quiet=inc.positive("quiet", 300.0),
        alerts=_alerts(top.sub("alerts"), min_sev, source),
        respond=_respond(top.sub("respond"), source),
        blocklist=_blocklist(top.sub("blocklist")),
    )


def _alerts(r: _Reader | None, min_sev: Severity, source: str) -> AlertConfig:
    if r is None:
        return AlertConfig(stdout=True, min_severity=min_sev)
    syslog = email = webhook = None
    command = None
    if (s := r.sub("syslog")) is not None:
        syslog = SyslogConfig(s.get("address", str, "/dev/log"), s.get("facility", str, "daemon"))
    if (e := r.sub("email")) is not None:
        host = e.get("host", str)
        to = e.strings("to")
        if not host or not to:
            raise InputError(source, "alerts.email: needs host and to")
        password = e.get("password", str, None)
        pw_file = e.get("password_file", str, None)
        if pw_file:
            try:
                with open(pw_file, encoding="utf-8") as fh:
                    password = fh.read().strip()
            except OSError as exc:
                raise InputError(pw_file, f"alerts.email.password_file: {exc.strerror}") \
                    from None
        email = EmailConfig(host=host, to=to, sender=e.get("from", str, "relayguard@localhost"),
                            port=e.get("port", int, 25), starttls=e.get("starttls", bool, False),
                            ssl=e.get("ssl", bool, False), username=e.get("username", str, None),
                            password=password, timeout=e.positive("timeout", 10.0),
                            ca_file=e.get("ca_file", str, None))
    if (h := r.sub("webhook")) is not None:
        url = h.get("url", str)
        if not url or not url.startswith(("http://", "https://")):
            raise InputError(source, "alerts.webhook.url: needs an http(s):// URL")
        headers = h.get("headers", dict, {})
        webhook = WebhookConfig(url, tuple((str(k), str(v)) for k, v in headers.items()),
                                h.positive("timeout", 10.0))
    if (c := r.sub("command")) is not None:
        command = c.strings("argv")
        if not command:
            raise InputError(source, "alerts.command.argv: needs a program")
    return AlertConfig(stdout=r.get("stdout", bool, False), syslog=syslog, email=email,
                       webhook=webhook, command=command,
                       batch_window=r.get("batch_window", float, 0.2),
                       retry_min=r.positive("retry_min", 1.0),
                       retry_max=r.positive("retry_max", 300.0), min_severity=min_sev)


def _respond(r: _Reader | None, source: str) -> RespondConfig:
    if r is None:
        return RespondConfig()
    mode = r.get("mode", str, "none")
    if mode not in ("none", "nftables", "command"):
        raise r._err("mode", "must be none, nftables or command")
    cfg = RespondConfig(
        mode=mode, dry_run=r.get("dry_run", bool, True), timeout=r.get("timeout", int, 3600),
        allow=tuple(_network(source, a) for a in r.strings("allow")),
        kinds=r.strings("kinds", RespondConfig.kinds),
        verdicts=r.strings("verdicts", RespondConfig.verdicts),
        nft=r.strings("nft", ("nft",)), family=r.get("family", str, "inet"),
        table=r.get("table", str, "relayguard"), set4=r.get("set4", str, "blocked4"),
        set6=r.get("set6", str, "blocked6"),
        block_command=r.strings("block_command"), unblock_command=r.strings("unblock_command"))
    if mode == "command" and not cfg.block_command:
        raise r._err("block_command", "mode = 'command' needs block_command")
    if cfg.timeout <= 0:
        raise r._err("timeout", "must be > 0")
    return cfg


def _blocklist(r: _Reader | None) -> BlocklistConfig:
    if r is None:
        return BlocklistConfig()
    zones = r.strings("zones")
    if zones:  # checked now, not at the first re-check an hour later
        from relayguard.blocklist.zones import parse_zones

        try:
            parse_zones(zones)
        except InputError as exc:
            raise r._err("zones", exc.message) from None
    return BlocklistConfig(targets=r.strings("targets"), interval=r.positive("interval", 3600.0),
                           zones=zones, zone_set=r.get("zone_set", str, "default"),
                           resolvers=r.strings("resolvers"), timeout=r.positive("timeout", 2.0))


def load_config(path: str) -> WatchConfig:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    return parse_config(text, path)
