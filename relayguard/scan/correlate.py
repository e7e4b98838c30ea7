"""Correlation: many findings about one hole become one story, told once, with the fix first.

A blocklist proxy listing + an open proxy in the config + a probe that relayed through it +
CONNECTs to port 25 in the access log are four kinds of evidence for one problem: "strangers
relay spam through this proxy". The findings all stay in the report (scripts count them);
the story says what it is, how sure we are (which kinds of evidence agree), and what to do.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relayguard.catalogue import rule_by_id
from relayguard.findings import Category, Confidence, ErrorEntry, Finding, Severity

_PROXY = {Category.OPEN_HTTP_PROXY, Category.OPEN_CONNECT_PROXY, Category.SMTP_VIA_PROXY,
          Category.OPEN_SOCKS_PROXY, Category.PROXY_ABUSE}
_MAIL = {Category.OPEN_SMTP_RELAY, Category.RELAY_ABUSE}
_RELAY_PATHS = _PROXY - {Category.PROXY_ABUSE} | {Category.OPEN_SMTP_RELAY}
_ABUSE = {Category.PROXY_ABUSE, Category.RELAY_ABUSE}
SOURCE_WORDS = {"audit": "config", "probe": "probe", "logs": "logs", "blocklist": "blocklist"}
# Listings that say strangers abused the host itself (an exploited host / open proxy, or spam
# sent from it): they are what a relay hole causes, so they join its story. Policy listings
# (PBL, UCEPROTECT L2/L3), reputation and domain listings say nothing about a relay hole.
_CAUSED_BY_RELAYING = {"BL-LISTED-COMPROMISE", "BL-LISTED-SPAM"}
# What relaying does to the server, told as what followed when it happened at the same time
# as relaying the logs show (the founding incident's "the server slowed down").
_FOLLOWED_WORDS = {"LOGS-VOLUME-SPIKE": "the server slowed down under a flood of requests",
                   "LOGS-MAIL-FAILURE-SPIKE": "remote servers deferred and bounced the mail"}
FOLLOW_GAP = 3600  # a spike up to an hour after the last relayed event still followed it


def rule_source(rule_id: str) -> str:
    """Which kind of evidence a rule gives: audit, probe, logs or blocklist."""
    rule = rule_by_id(rule_id)
    server = rule.server if rule is not None else rule_id.split("-", 1)[0].lower()
    if server in ("probe", "logs", "blocklist"):
        return server
    if server == "bl":
        return "blocklist"
    return "audit"


def evidence_source(f: Finding) -> str:
    """Which kind of evidence a finding is: audit, probe, logs or blocklist."""
    return rule_source(f.rule)


def explains_relaying(f: Finding) -> bool:
    """A compromise/open-proxy or spam-source listing of one of the host's addresses."""
    if f.rule not in _CAUSED_BY_RELAYING or f.location.host is None:
        return False
    try:
        ipaddress.ip_address(f.location.host)
    except ValueError:
        return False  # a domain listing (DBL): about the domain's use, not this host
    return True


@dataclass
class Story:
    """One problem and every finding that is evidence for it."""

    key: str  # "proxy", "mail", "blocklisted", "listings", "volume", "hardening"
    findings: list[Finding] = field(default_factory=list)

    @property
    def evidence(self) -> list[Finding]:
        """The findings that prove the problem (what followed is a consequence, not proof)."""
        return [f for f in self.findings if f.category is not Category.VOLUME_ANOMALY] or \
            self.findings

    @property
    def severity(self) -> Severity:
        return max(f.severity for f in self.evidence)

    @property
    def confidence(self) -> Confidence:
        return max(f.confidence for f in self.evidence)

    def followed(self) -> list[str]:
        """What the relaying did to the server, one line per spike that happened with it."""
        if self.key == "volume":
            return []
        return [f"{_FOLLOWED_WORDS.get(f.rule, f.rule)}: {f.title}" for f in self.findings
                if f.category is Category.VOLUME_ANOMALY]

    @property
    def sources(self) -> list[str]:
        seen = {evidence_source(f) for f in self.findings}
        return [s for s in ("audit", "probe", "logs", "blocklist") if s in seen]

    def fix(self) -> str | None:
        """The concrete fix: a config change from the audit first, then any other."""
        ranked = sorted(self.findings, key=lambda f: (
            evidence_source(f) != "audit", not f.edits, -f.severity, -f.confidence))
        return next((f.fix for f in ranked if f.fix), None)

    def headline(self) -> str:
        cats = {f.category for f in self.findings}
        places = sorted({str(f.location) for f in self.findings
                         if f.location.host is not None and evidence_source(f) == "probe"})
        where = f" ({', '.join(places[:4])})" if places else ""
        abused = bool(cats & _ABUSE)
        listed = any(explains_relaying(f) for f in self.findings)
        if self.key == "proxy":
            what = "Strangers can relay through an open proxy" + where
            if Category.SMTP_VIA_PROXY in cats:
                what += ", including to mail servers on port 25 (the spam vector)"
        elif self.key == "mail":
            what = "The mail server relays for strangers" + where if (
                Category.OPEN_SMTP_RELAY in cats) else "Mail relaying seen in the logs"
        elif self.key == "blocklisted":
            return "The host is on DNS blocklists"
        elif self.key == "listings":
            kinds = sorted({f.rule.removeprefix("BL-LISTED-").lower() for f in self.findings})
            return (f"Other blocklist listings ({', '.join(kinds)}): not caused by a relay "
                    "path; each says what it means and how to get off it")
        elif self.key == "volume":
            what = " and ".join(sorted({
                "requests" if f.rule == "LOGS-VOLUME-SPIKE" else "failed deliveries"
                for f in self.findings}))
            return (f"Traffic far above its usual rate ({what}, logs): no relaying was seen "
                    "at the same time; see what the spike's minutes hold")
        else:
            return "Hardening: not a relay path by itself, but it weakens the defence"
        tail = []
        if abused:
            tail.append("it is already being abused (logs)")
        if listed:
            tail.append("the host is blocklisted for it")
        if self.followed():
            tail.append("the server's traffic spiked while it happened")
        return what + ("; " + " and ".join(tail) if tail else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "headline": self.headline(),
            "severity": self.severity.label,
            "confidence": self.confidence.label,
            "evidence": self.sources,
            "fix": self.fix(),
            "followed": self.followed(),
            "findings": [f.fingerprint() for f in self.findings],
            "rules": sorted({f.rule for f in self.findings}),
            "categories": sorted({f.category.value for f in self.findings}),
        }


def _span(inc: dict[str, Any]) -> tuple[float, float] | None:
    """An incident's first and last event as epoch seconds (None when the log had no time)."""
    try:
        first = datetime.strptime(inc["first_seen"], "%Y-%m-%dT%H:%M:%SZ")
        last = datetime.strptime(inc["last_seen"], "%Y-%m-%dT%H:%M:%SZ")
    except (KeyError, TypeError, ValueError):
        return None
    return first.replace(tzinfo=UTC).timestamp(), last.replace(tzinfo=UTC).timestamp()


def relaying_during(incidents: list[dict[str, Any]]) -> dict[str, str]:
    """Volume-anomaly finding (by fingerprint) -> the relay story ("proxy" or "mail") whose
    relaying the logs show at the same time: the spike overlaps a relayed incident, or starts
    within FOLLOW_GAP after its last event. A request spike prefers proxy relaying, a mail
    failure spike mail relaying; a spike at another time belongs to no relay story."""
    relayed: list[tuple[str, float, float]] = []
    for inc in incidents:
        span = _span(inc)
        key = {Category.PROXY_ABUSE.value: "proxy", Category.RELAY_ABUSE.value: "mail"}.get(
            str(inc.get("category")))
        if key and span and inc.get("verdict") == "relayed":
            relayed.append((key, *span))
    out: dict[str, str] = {}
    for inc in incidents:
        span = _span(inc)
        if inc.get("category") != Category.VOLUME_ANOMALY.value or not span or \
                not inc.get("finding"):
            continue
        keys = {k for k, first, last in relayed
                if span[1] >= first and span[0] <= last + FOLLOW_GAP}
        prefer = "proxy" if inc.get("kind") == "volume-spike" else "mail"
        if keys:
            out[str(inc["finding"])] = prefer if prefer in keys else keys.pop()
    return out


def stories(findings: list[Finding],
            incidents: list[dict[str, Any]] | None = None) -> list[Story]:
    """Group findings into stories, worst first. Listings of the host's address as an open
    proxy / compromised host or a spam source join the abuse they explain (the proxy story
    when there is one, else the mail story); other listings (policy, reputation, domains) are
    told apart, never as "blocklisted for it". A volume spike the logs' `incidents` place at
    the time of relaying joins that relay story as what followed; any other spike is its own
    story, which claims no relaying."""
    proxy = Story("proxy", [f for f in findings if f.category in _PROXY])
    mail = Story("mail", [f for f in findings if f.category in _MAIL])
    listed = [f for f in findings if f.category is Category.BLOCKLISTED]
    caused = [f for f in listed if explains_relaying(f)]
    other = [f for f in listed if not explains_relaying(f)]
    hardening = Story("hardening", [f for f in findings if f.category is Category.HARDENING])
    if proxy.findings:
        proxy.findings += caused
    elif mail.findings:
        mail.findings += caused
    during = relaying_during(incidents or [])
    by_key = {"proxy": proxy, "mail": mail}
    volume = Story("volume")
    for f in findings:
        if f.category is Category.VOLUME_ANOMALY:
            story = by_key.get(during.get(f.fingerprint(), ""))
            (story if story is not None and story.findings else volume).findings.append(f)
    out = [s for s in (proxy, mail) if s.findings]
    if caused and not out:
        out.append(Story("blocklisted", caused))
    if other:
        out.append(Story("listings", other))
    if volume.findings:
        out.append(volume)
    out.sort(key=lambda s: (-s.severity, -s.confidence))
    if hardening.findings:
        out.append(hardening)
    return out


def verdict(findings: list[Finding], errors: list[ErrorEntry]) -> str:
    """One word a person and a script can act on.

    OPEN: a stranger can relay (a high/critical relay path). ABUSED: logs show relaying that
    happened. LISTED: on a blocklist. Those are proven whatever else failed. Below them, a
    check that could not run makes the scan INCOMPLETE (never AT-RISK or CLEAN, which read as
    assessed). AT-RISK: lesser findings. CLEAN: everything checked, nothing found.
    """
    cats = {f.category for f in findings if f.severity >= Severity.HIGH}
    if cats & _RELAY_PATHS:
        return "OPEN"
    if cats & _ABUSE:
        return "ABUSED"
    if Category.BLOCKLISTED in cats:
        return "LISTED"
    if errors:
        return "INCOMPLETE"
    if any(f.severity >= Severity.LOW for f in findings):
        return "AT-RISK"
    return "CLEAN"


VERDICT_MEANINGS = {
    "OPEN": "strangers can make this host relay",
    "ABUSED": "the logs show relaying that already happened",
    "LISTED": "the host is on a DNS blocklist",
    "AT-RISK": "no open relay path, but findings that weaken the defence",
    "INCOMPLETE": "no relay path proven, but some checks could not run: the result is "
    "inconclusive, not a clean bill (see the checks that could not run)",
    "CLEAN": "every check that ran completed, and nothing relays for strangers",
}
