"""The contract between the audit driver and each server family (Apache, nginx, Squid, …).

An `Auditor` knows where its server keeps its config, recognises its files, and turns one
config (file or directory) into an `AuditResult`: findings, errors, the files it read, and
`facts` that cross-service rules combine (e.g. "this proxy reaches 127.0.0.1:25").
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from relayguard.findings import ErrorEntry, Finding

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class AuditOptions:
    """What the user told `relayguard audit` beyond the paths."""

    # Evaluate access for this client address instead of a picked Internet address
    # (answers "is my proxy open to 10.1.2.3?"; tests use an untrusted loopback address).
    outside_client: IPAddress | None = None
    # Prefix for absolute paths inside the config (an unpacked image or a client's backup).
    root: Path | None = None
    # Extra -D defines (Apache) / macros, as the daemon would be started with.
    defines: tuple[str, ...] = ()


@dataclass(slots=True)
class AuditResult:
    """One server's audit: never raises for bad input, records it in `errors` instead."""

    server: str
    config: str
    findings: list[Finding] = field(default_factory=list)
    errors: list[ErrorEntry] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


class Auditor(Protocol):
    """A server family: Apache, nginx, Squid, tinyproxy, Privoxy, Dante, Postfix, Exim."""

    name: str

    def candidates(self, root: Path) -> list[Path]:
        """Standard config locations under `root` (`/` on a live system) that exist."""
        ...

    def recognise(self, path: Path) -> bool:
        """True if `path` (file or directory) looks like this server's config."""
        ...

    def audit(self, path: Path, options: AuditOptions) -> AuditResult:
        """Parse the config at `path` the way the server does and evaluate the rules."""
        ...

    # Optional: `why_not(path) -> str | None` says why a path that looks like this server's
    # cannot be audited (Postfix: main.cf missing), instead of a bare "not recognised".

    def config_test(self, path: Path) -> tuple[bool, str] | None:
        """Run the server's own syntax check on the config at `path` (`apache2 -t -f`,
        `nginx -t -c`, `squid -k parse -f`, `postfix -c DIR check`…): (accepted, output),
        or None when the server's binary is not installed. `--fix` offers a patch only when
        this accepts the patched config."""
        ...


def under_root(path: str | Path, root: Path | None) -> Path:
    """Map an absolute path named inside a config onto the audited tree (`--root`); the
    result stays absolute even for a relative root, so parsers that resolve relative paths
    against the including file's directory do not misread it."""
    p = Path(path)
    if root is None or not p.is_absolute():
        return p
    return root.absolute() / p.relative_to(p.anchor)


def server_path(path: Path, root: Path | None) -> str:
    """`under_root` undone: a path of the audited tree as the server names it (under
    `--root`, the part below the root; otherwise the path itself, made absolute)."""
    full = path.absolute()
    if root is not None:
        with contextlib.suppress(ValueError):
            return "/" + str(full.relative_to(root.absolute()))
    return str(full)
