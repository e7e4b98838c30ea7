"""The host's own mail domains, for the domain blocklists, found without being told.

A hijacked server's mail domain lands on domain lists (Spamhaus DBL, SURBL) as surely as its
address lands on IP lists, so `scan` checks them by default: the names the MTA calls itself
and accepts mail for (Postfix `myhostname`, `mydomain`, `mydestination`; Exim
`primary_hostname`, `qualify_domain`, `local_domains`), read from the configs the audit
found, plus this machine's FQDN and /etc/mailname when the site is this machine. Names no
public list can know (single labels, `localhost`, reserved and private-use TLDs) are dropped.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from pathlib import Path

from relayguard.audit.base import AuditResult

# RFC 2606/6761/6762/8375 and names in common private use: never on a public domain list.
RESERVED_TLDS = frozenset({"test", "example", "invalid", "localhost", "local", "localdomain",
                           "lan", "home", "internal", "intranet", "corp", "private", "arpa"})
MAILNAME = Path("/etc/mailname")


def public_domain(name: str) -> str | None:
    """`name` as an A-label if a public domain list could list it, else None."""
    from relayguard.blocklist.names import to_alabel
    from relayguard.errors import InputError

    text = name.strip().rstrip(".")
    if not text or any(c in text for c in "$/:;*{}[]@ "):
        return None  # a lookup table, an expansion or a pattern, not a name
    try:
        ipaddress.ip_address(text)
        return None
    except ValueError:
        pass
    try:
        label = to_alabel(text)
    except InputError:
        return None
    if "." not in label or label.rsplit(".", 1)[1] in RESERVED_TLDS \
            or label.split(".", 1)[0] == "localhost":
        return None
    return label


def _postfix(config: str, root: Path | None) -> list[str]:
    from relayguard.audit.postfix import load, split_list

    params = load(Path(config), root).params()
    names = [params.get("myhostname"), params.get("mydomain")]
    return names + split_list(params.get("mydestination"))


def _exim(config: str, root: Path | None) -> list[str]:
    from relayguard.audit.exim import load, model, option, split_exim_list

    cfg = model(load(Path(config), root))
    primary = option(cfg, "primary_hostname") or ""
    names = [primary, option(cfg, "qualify_domain") or ""]
    listed = cfg.named_lists.get("local_domains")
    for item in split_exim_list(listed[1]) if listed else []:
        names.append(primary if item == "@" else item.lstrip("!"))
    return names


def config_domains(results: list[AuditResult], root: Path | None) -> list[str]:
    """Public mail domains the audited Postfix and Exim configs name, in order, deduplicated.

    The configs were already parsed without error by the audit; one that fails here (a race
    with an edit) is skipped rather than losing the other evidence.
    """
    found: list[str] = []
    for r in results:
        reader = {"postfix": _postfix, "exim": _exim}.get(r.server)
        if reader is None:
            continue
        try:
            names = reader(r.config, root)
        except Exception:  # the audit reports config errors itself
            continue
        found += [d for n in names if (d := public_domain(n)) is not None]
    return list(dict.fromkeys(found))


def this_machine_domains(mailname: Path = MAILNAME) -> list[str]:
    """This machine's FQDN and Debian's /etc/mailname, when they are public names."""
    names = [socket.getfqdn()]
    with contextlib.suppress(OSError):
        names.append(mailname.read_text(encoding="utf-8", errors="replace").strip())
    return list(dict.fromkeys(d for n in names if (d := public_domain(n)) is not None))
