"""Blocklist rules: one per class of listing, so the rule id says what a listing means.

A Spamhaus XBL or DroneBL 9 listing (compromise) points at an open proxy on this host; a PBL
listing (policy) says nothing about abuse. Keeping them apart lets scripts and `--fail-on`
treat them differently.
"""

from __future__ import annotations

from collections.abc import Mapping

from relayguard.blocklist.zones import CodeClass
from relayguard.catalogue import Rule
from relayguard.findings import Category, Severity

_REF = "https://www.rfc-editor.org/rfc/rfc5782"

BL_LISTED_COMPROMISE = Rule(
    id="BL-LISTED-COMPROMISE", server="blocklist", category=Category.BLOCKLISTED,
    severity=Severity.HIGH,
    title="Listed as a compromised host or open proxy",
    description="A self-tested DNS blocklist lists the address with a code meaning the host "
    "itself was exploited: open HTTP/CONNECT/SOCKS proxy, bot, brute-forced relay (Spamhaus "
    "XBL, DroneBL 8/9/10/14, Mailspike zombie).",
    why="Such listings appear when strangers relay through the host - the classic case is "
    "Apache with `ProxyRequests On` used for `CONNECT mx:25`. Mail from the address is "
    "rejected until the hole is closed and the listing expires.",
    fix="Find and close the relay first (`relayguard probe HOST`, `relayguard audit`, "
    "`relayguard logs`), then request removal on the list's lookup page.",
    reference=_REF)

BL_LISTED_SPAM = Rule(
    id="BL-LISTED-SPAM", server="blocklist", category=Category.BLOCKLISTED,
    severity=Severity.HIGH,
    title="Listed as a spam source",
    description="A self-tested DNS blocklist lists the address or domain for sending spam or "
    "hitting spamtraps (Spamhaus SBL/CSS/DBL spam, SpamCop, PSBL, UCEPROTECT L1, ...).",
    why="Receivers reject or junk mail from listed sources; the spam usually came through an "
    "open relay, a proxy, stolen credentials or a web script on this host.",
    fix="Stop the source (`relayguard probe HOST` for relays and proxies, `relayguard logs` "
    "for who sent it), then follow the list's delisting procedure.",
    reference=_REF)

BL_LISTED_MALICIOUS = Rule(
    id="BL-LISTED-MALICIOUS", server="blocklist", category=Category.BLOCKLISTED,
    severity=Severity.HIGH,
    title="Domain listed as phishing, malware or C&C",
    description="A self-tested domain blocklist (Spamhaus DBL, SURBL) lists the domain as "
    "hosting phishing, malware or a botnet controller.",
    why="Mail and links naming the domain are blocked everywhere the list is used.",
    fix="Check the site and DNS for injected content or hijacked records, clean up, then "
    "request removal.",
    reference=_REF)

BL_LISTED_ABUSED = Rule(
    id="BL-LISTED-ABUSED", server="blocklist", category=Category.BLOCKLISTED,
    severity=Severity.MEDIUM,
    title="Legitimate domain listed as abused",
    description="A domain list (Spamhaus DBL 127.0.1.10x, SURBL CR) says a legitimate domain "
    "is being abused by third parties: a compromised site or an open redirector.",
    why="Links to the domain are treated as spam signs until the abuse stops.",
    fix="Find the compromised page or redirector, fix it, then request removal.",
    reference=_REF)

BL_LISTED_POLICY = Rule(
    id="BL-LISTED-POLICY", server="blocklist", category=Category.BLOCKLISTED,
    severity=Severity.LOW,
    title="Listed by range policy (not abuse by this host)",
    description="A policy listing (Spamhaus PBL, UCEPROTECT L2/L3): the address range should "
    "not send mail directly to MX, or the provider's neighbours are listed.",
    why="Direct-to-MX mail may be rejected, but nothing on this host caused it.",
    fix="Send through the provider's smarthost, or ask the range owner; PBL offers "
    "self-service removal for a static mail server.",
    reference=_REF)

BL_LISTED_OTHER = Rule(
    id="BL-LISTED-OTHER", server="blocklist", category=Category.BLOCKLISTED,
    severity=Severity.MEDIUM,
    title="Listed (code not documented by the list)",
    description="A self-tested list answered with a code relayguard's dated catalogue does not "
    "document, or a list outside the catalogue listed the target.",
    why="A listing still affects delivery; the TXT reason usually says why.",
    fix="Read the TXT reason and the list's lookup page, fix the cause, request removal.",
    reference=_REF)

BL_LISTED_INFO = Rule(
    id="BL-LISTED-INFO", server="blocklist", category=Category.BLOCKLISTED,
    severity=Severity.INFO,
    title="Informational listing",
    description="A list answered with an informational code (no abuse claimed).",
    why="Shown for completeness; it should not affect delivery on its own.",
    fix="No action needed.",
    reference=_REF)

RULES: tuple[Rule, ...] = (
    BL_LISTED_COMPROMISE, BL_LISTED_SPAM, BL_LISTED_MALICIOUS, BL_LISTED_ABUSED,
    BL_LISTED_POLICY, BL_LISTED_OTHER, BL_LISTED_INFO,
)

RULE_FOR_CLASS: Mapping[CodeClass, Rule] = {
    CodeClass.COMPROMISE: BL_LISTED_COMPROMISE,
    CodeClass.SPAM: BL_LISTED_SPAM,
    CodeClass.MALICIOUS: BL_LISTED_MALICIOUS,
    CodeClass.ABUSED: BL_LISTED_ABUSED,
    CodeClass.POLICY: BL_LISTED_POLICY,
    CodeClass.OTHER: BL_LISTED_OTHER,
    CodeClass.INFO: BL_LISTED_INFO,
}
