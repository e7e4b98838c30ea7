"""Where probes come from, and what a trusted source address hides.

An MTA relays for its trusted networks by design (Postfix `mynetworks`, Debian's default
includes 127.0.0.0/8 and the host's own addresses). A probe sent from such an address is
answered as a trusted client would be: "relay accepted" then says nothing about strangers, and
an open relay cannot be told apart from relaying for trusted clients. So `scan` picks a source
address the audited servers do not trust when one is available, and says plainly when not.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from relayguard.findings import Finding

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(mta_facts: Iterable[dict[str, Any]]) -> list[tuple[IPNet, str]]:
    """(network, who trusts it) from the audit's `facts["mta"]`; `!net` exclusions dropped."""
    out: list[tuple[IPNet, str]] = []
    for mta in mta_facts:
        who = f"{mta.get('server', 'mta')} ({', '.join(mta.get('listen') or []) or '?'})"
        for text in mta.get("trusted_networks") or []:
            if str(text).startswith("!"):
                continue
            try:
                out.append((ipaddress.ip_network(str(text).strip("[]"), strict=False), who))
            except ValueError:
                continue
    return out


def trusted_by(address: str, nets: list[tuple[IPNet, str]]) -> list[str]:
    """Which servers trust `address` (empty: a stranger's address for all of them)."""
    ip = ipaddress.ip_address(address)
    return sorted({who for net, who in nets if ip.version == net.version and ip in net})


def _candidates(targets: list[str]) -> list[str]:
    """Loopback IPv4 addresses near the targets (same /24 first), then far ends of 127/8.

    IPv6 has one loopback address (::1), so an IPv6 target has no loopback neighbour.
    """
    out: list[str] = []
    for t in targets:
        ip = ipaddress.ip_address(t)
        if ip.version != 4 or not ip.is_loopback:
            continue
        base = t.rsplit(".", 1)[0]
        out += [f"{base}.{n}" for n in (250, 251, 252)]
    if out:
        out += ["127.254.254.250", "127.254.254.251"]
    return [c for c in dict.fromkeys(out) if c not in targets]


def _own_alternatives(targets: list[str], local: list[str]) -> list[str]:
    """The machine's other non-loopback addresses of the targets' family (link-local ones
    need a scope, so they are left out): candidates for a stranger's view of itself."""
    version = ipaddress.ip_address(targets[0]).version
    out = []
    for a in local:
        ip = ipaddress.ip_address(a)
        if ip.version == version and not (ip.is_loopback or ip.is_link_local) \
                and str(ip) not in targets:
            out.append(str(ip))
    return out


def choose_source(targets: list[str], given: str | None, nets: list[tuple[IPNet, str]],
                  own_host: bool, local: Iterable[str] = ()) -> tuple[str | None, list[str]]:
    """The probe source address and the plain-language notes about it.

    `given` (--source-address) wins. For loopback targets an untrusted loopback address is
    picked when one exists; when the targets are this machine's own non-loopback addresses
    (`local` lists them all), another of its addresses that no audited MTA trusts is picked.
    Otherwise the kernel chooses (None). A source has the targets' family: mixed families
    get None.
    """
    notes: list[str] = []
    mine = list(local)
    source = given
    same_family = len({ipaddress.ip_address(t).version for t in targets}) == 1
    loopback = bool(targets) and all(_is_loopback(t) for t in targets)
    own = same_family and not loopback and all(t in mine for t in targets)
    if source is None and same_family and (loopback or own):
        pool = _candidates(targets) if loopback else _own_alternatives(targets, mine)
        untrusted = [c for c in pool if not trusted_by(c, nets)]
        source = untrusted[0] if untrusted else (pool[0] if pool and loopback else None)
        if source and untrusted:
            notes.append(f"probes are sent from {source}, an address no audited MTA trusts, so "
                         "they get a stranger's answers")
    if source is not None:
        who = trusted_by(source, nets)
        if who:
            notes.append(
                f"TRUSTED SOURCE: the probes come from {source}, which {', '.join(who)} "
                "trusts. A trusted client is relayed for by design, so the probe cannot tell an "
                "open relay from relaying for trusted clients: its SMTP relay verdicts for "
                "those servers are withheld, and only the audit judges them for strangers. "
                "Probe from an address they do not trust (--source-address) or from outside.")
    elif own_host:
        notes.append(
            "TRUSTED SOURCE: this host is probing itself, from one of its own addresses; "
            "servers often trust their own host (Postfix mynetworks, Apache `Require local`), "
            "so what the probe saw may be a trusted client's view, not a stranger's. An open "
            "relay can hide behind that: repeat the probe from outside "
            "(`relayguard probe HOST`) for a stranger's view.")
    return source, notes


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def withhold_trusted_relays(findings: list[Finding], source: str | None,
                            mta_facts: list[dict[str, Any]]) -> tuple[list[Finding], list[str]]:
    """Drop PROBE-SMTP-RELAY findings on MTAs that trust the probe's source; say so."""
    if source is None:
        return findings, []
    kept: list[Finding] = []
    notes: list[str] = []
    for f in findings:
        mta = _mta_at(f, mta_facts) if f.rule == "PROBE-SMTP-RELAY" else None
        if mta is not None and trusted_by(source, trusted_networks([mta])):
            notes.append(f"{f.location}: the MTA accepted relaying from {source}, an address it "
                         "trusts; that is its trusted-client policy, not proof of an open relay "
                         "(verdict withheld)")
            continue
        kept.append(f)
    return kept, notes


def _mta_at(f: Finding, mta_facts: list[dict[str, Any]]) -> dict[str, Any] | None:
    for mta in mta_facts:
        for listen in mta.get("listen") or []:
            addr, _, port = str(listen).rpartition(":")
            if port == str(f.location.port) and addr.strip("[]") in (
                    f.location.host, "*", "0.0.0.0", "::", ""):
                return mta
    return None
