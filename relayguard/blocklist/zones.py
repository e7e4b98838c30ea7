"""The curated, dated DNS blocklist catalogue: which zones exist, what their codes mean.

Kept as plain data so a reviewer can check every entry against its source. Each zone says
whether it lists IPs or domains, how it may be queried, whether it answers IPv6, what each
A-record code means (and which class: compromise, spam, policy, ... or a value that is NOT a
listing), and where a listed host looks itself up and asks for removal.

Sources (see research/dnsbl.md): RFC 5782; docs.spamhaus.com zone/return-code pages and
spamhaus.org/news/article/788 (127.255.255.0/24 = errors); dronebl.org/docs/howtouse and
dronebl.org/classes; spamcop.net/bl.shtml; psbl.org; mailspike (via rspamd rbl.conf);
s5h.net/rblcheck; uceprotect.net; uribl.com/refused.shtml; SURBL bits (rspamd rbl.conf).
Dead zones are kept (never in a default set) so that asking for one explains itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

CATALOGUE_DATE = "2026-11-25"
"""When the entries below were last checked against their sources."""


class CodeClass(StrEnum):
    """What an answer means for the host: a kind of listing, or NOT a listing at all."""

    COMPROMISE = "compromise"  # exploited host, open proxy, bot: look at this host first
    SPAM = "spam"  # the address sent spam / hit spamtraps
    MALICIOUS = "malicious"  # domain used for phishing, malware, C&C
    ABUSED = "abused"  # legitimate domain or site abused by a third party
    POLICY = "policy"  # range policy (dynamic space, neighbours, provider): not abuse by host
    INFO = "info"  # informational only
    OTHER = "other"  # a listing whose meaning the list does not document
    GOOD = "good"  # reputation-good or neutral value: NOT a listing
    REFUSED = "refused"  # the list refused to answer (resolver blocked, quota): NOT a listing

    @property
    def is_listing(self) -> bool:
        return self not in (CodeClass.GOOD, CodeClass.REFUSED)


class ZoneKind(StrEnum):
    """What a zone is keyed by: IP addresses (RFC 5782 §2) or domain names (§3)."""

    IP = "ip"
    DOMAIN = "domain"


class ZoneStatus(StrEnum):
    LIVE = "live"
    DEAD = "dead"  # decommissioned, empty or wildcarded: never trust its answers


@dataclass(frozen=True, slots=True)
class Code:
    """One documented answer value: its meaning, class and the likely local cause."""

    meaning: str
    cls: CodeClass


@dataclass(frozen=True, slots=True)
class Zone:
    """One DNSBL/RHSBL as the catalogue knows it (a zone outside it gets `Zone.generic`)."""

    name: str
    kind: ZoneKind
    owner: str
    access: str
    default: bool = False
    status: ZoneStatus = ZoneStatus.LIVE
    ipv6: bool = False
    codes: Mapping[str, Code] = field(default_factory=dict)
    # Bitmask zones (SURBL, URIBL): the last octet is a set of flags, decoded bit by bit.
    bits: Mapping[int, Code] = field(default_factory=dict)
    lookup_url: str = ""  # `{target}` is replaced by the address or domain
    delist: str = ""
    # RFC 5782 §5 test points; some domain lists document their own positive entry.
    test_listed: str = ""
    test_unlisted: str = ""
    notes: str = ""
    catalogued: bool = True
    needs_key: bool = False  # keyed services (DQS, Abusix): opt-in only, never in a set

    @classmethod
    def generic(cls, name: str, kind: ZoneKind = ZoneKind.IP) -> Zone:
        """A zone the catalogue does not know: trusted only after its self-test passes."""
        return cls(name=name, kind=kind, owner="unknown (not in relayguard's catalogue)",
                   access="unknown", ipv6=kind is ZoneKind.IP, catalogued=False)

    @property
    def secret(self) -> str | None:
        """The access key inside a keyed zone's name (Spamhaus DQS: `<key>.zen.dq.spamhaus.net`),
        which reports must not show: they get shared."""
        if self.needs_key and self.name.endswith(".dq.spamhaus.net"):
            key = self.name.split(".", 1)[0]
            return key if len(key) >= 8 else None
        return None

    def hide(self, text: str) -> str:
        """`text` with this zone's key masked (its first 4 characters kept, so the user can
        tell which key it was): its name, or a query name or detail that holds it."""
        key = self.secret
        return text if key is None else text.replace(key, mask(key))

    @property
    def shown(self) -> str:
        """The name as reports show it."""
        return self.hide(self.name)

    @property
    def positive_test(self) -> str:
        return self.test_listed or ("127.0.0.2" if self.kind is ZoneKind.IP else "test")

    @property
    def negative_test(self) -> str:
        return self.test_unlisted or ("127.0.0.1" if self.kind is ZoneKind.IP else "invalid")

    def url_for(self, target: str) -> str:
        return self.lookup_url.replace("{target}", target) if self.lookup_url else ""


_C, _S, _P, _M, _A, _O, _G, _I = (CodeClass.COMPROMISE, CodeClass.SPAM, CodeClass.POLICY,
                                  CodeClass.MALICIOUS, CodeClass.ABUSED, CodeClass.OTHER,
                                  CodeClass.GOOD, CodeClass.INFO)

LIKELY_CAUSE: Mapping[CodeClass, str] = {
    CodeClass.COMPROMISE: "the host itself relayed or attacked for someone else: look for an "
    "open proxy first (Apache `ProxyRequests On`, Squid/tinyproxy/SOCKS without ACL) - run "
    "`relayguard probe HOST` and `relayguard audit`, then `relayguard logs` for CONNECT :25 "
    "and relayed mail; also check for malware.",
    CodeClass.SPAM: "mail from this address reached spamtraps or was reported: look for an open "
    "SMTP relay or mail through a proxy (`relayguard probe HOST`), stolen mail-account "
    "credentials, or a web form or script sending mail (`relayguard logs`).",
    CodeClass.POLICY: "not abuse by this host: the address is in a range that should not send "
    "mail directly to MX (dynamic/residential) or its neighbours/provider are listed. Send "
    "through your provider's smarthost, or ask the provider; nothing to fix on this host.",
    CodeClass.MALICIOUS: "the domain is listed as phishing, malware or C&C: check the site for "
    "injected pages and the DNS for hijacked records.",
    CodeClass.ABUSED: "a legitimate domain was abused by a third party: look for a compromised "
    "site, an open redirector or injected content.",
    CodeClass.INFO: "informational only; no action needed.",
    CodeClass.OTHER: "the list does not document this code: read the TXT reason and the "
    "list's lookup page.",
}

REFUSAL_REMEDY = (
    "a list that refuses (or silently blanks) your resolver says nothing about the target: "
    "run a local recursive resolver (e.g. unbound) and pass `--resolver 127.0.0.1`, or use the "
    "list's keyed service (Spamhaus DQS: `--zones <key>.zen.dq.spamhaus.net`)."
)

# Any 127.255.255.0/24 answer is an error code, never a listing (spamhaus.org/news/article/788).
ERROR_RANGE = "127.255.255.0/24"
ERROR_CODES: Mapping[str, Code] = {
    "127.255.255.250": Code("invalid or disabled DQS key", CodeClass.REFUSED),
    "127.255.255.251": Code("DQS key used by another account", CodeClass.REFUSED),
    "127.255.255.252": Code("typing error in the DNSBL name", CodeClass.REFUSED),
    "127.255.255.254": Code("query through a public/open resolver (or unattributable rDNS) "
                            "refused", CodeClass.REFUSED),
    "127.255.255.255": Code("excessive number of queries from your resolver", CodeClass.REFUSED),
}

_SPAMHAUS_LOOKUP = "https://check.spamhaus.org/results/?query={target}"
_SPAMHAUS_DELIST = ("check.spamhaus.org: look the address up and follow the removal form; XBL "
                    "listings expire once the compromise is fixed, PBL entries are removed by "
                    "the range owner or self-service for a static mail server.")

_ZEN_CODES: Mapping[str, Code] = {
    "127.0.0.2": Code("Spamhaus SBL: direct spam source or spam operation", _S),
    "127.0.0.3": Code("Spamhaus SBL CSS: automated snowshoe-spam detection", _S),
    "127.0.0.4": Code("Spamhaus XBL: exploited host (CBL data: open proxy, bot, "
                      "credential-stuffed relay)", _C),
    "127.0.0.5": Code("Spamhaus XBL (reserved code): exploited host", _C),
    "127.0.0.6": Code("Spamhaus XBL (reserved code): exploited host", _C),
    "127.0.0.7": Code("Spamhaus XBL (reserved code): exploited host", _C),
    "127.0.0.9": Code("Spamhaus DROP/EDROP: hijacked or criminal netblock", _S),
    "127.0.0.10": Code("Spamhaus PBL (ISP maintained): range should not send direct-to-MX", _P),
    "127.0.0.11": Code("Spamhaus PBL (Spamhaus maintained): range should not send "
                       "direct-to-MX", _P),
    "127.0.0.20": Code("Spamhaus AuthBL: brute-forced or stolen SMTP AUTH credentials in use", _C),
    "127.0.0.30": Code("Spamhaus BCL: botnet controller hosted here", _C),
}

_DRONEBL_CODES: Mapping[str, Code] = {
    "127.0.0.2": Code("DroneBL sample / test entry", _O),
    "127.0.0.3": Code("DroneBL 3: IRC drone", _C),
    "127.0.0.5": Code("DroneBL 5: bottler", _C),
    "127.0.0.6": Code("DroneBL 6: unknown spambot or drone (worm)", _C),
    "127.0.0.7": Code("DroneBL 7: DDoS drone", _C),
    "127.0.0.8": Code("DroneBL 8: open SOCKS proxy", _C),
    "127.0.0.9": Code("DroneBL 9: open HTTP proxy", _C),
    "127.0.0.10": Code("DroneBL 10: proxychain", _C),
    "127.0.0.11": Code("DroneBL 11: web page proxy", _C),
    "127.0.0.12": Code("DroneBL 12: open DNS resolver", _C),
    "127.0.0.13": Code("DroneBL 13: brute-force attacker", _C),
    "127.0.0.14": Code("DroneBL 14: open WinGate proxy", _C),
    "127.0.0.15": Code("DroneBL 15: compromised router or gateway", _C),
    "127.0.0.16": Code("DroneBL 16: autorooting worm", _C),
    "127.0.0.17": Code("DroneBL 17: automatically determined botnet IP", _C),
    "127.0.0.19": Code("DroneBL 19: abused VPN service", _C),
    "127.0.0.255": Code("DroneBL 255: uncategorised threat", _O),
}

_DBL_CODES: Mapping[str, Code] = {
    "127.0.1.2": Code("Spamhaus DBL: low-reputation spam domain", _S),
    "127.0.1.4": Code("Spamhaus DBL: phishing domain", _M),
    "127.0.1.5": Code("Spamhaus DBL: malware domain", _M),
    "127.0.1.6": Code("Spamhaus DBL: botnet C&C domain", _M),
    "127.0.1.102": Code("Spamhaus DBL: abused legitimate domain (spam)", _A),
    "127.0.1.103": Code("Spamhaus DBL: abused legitimate domain (redirector)", _A),
    "127.0.1.104": Code("Spamhaus DBL: abused legitimate domain (phishing)", _A),
    "127.0.1.105": Code("Spamhaus DBL: abused legitimate domain (malware)", _A),
    "127.0.1.106": Code("Spamhaus DBL: abused legitimate domain (botnet C&C)", _A),
    "127.0.1.255": Code("Spamhaus DBL error: an IP address was queried on a domain list",
                        CodeClass.REFUSED),
}

_MAILSPIKE_REP: Mapping[str, Code] = {
    "127.0.0.10": Code("Mailspike reputation: worst", _S),
    "127.0.0.11": Code("Mailspike reputation: very bad", _S),
    "127.0.0.12": Code("Mailspike reputation: bad", _S),
    "127.0.0.13": Code("Mailspike reputation: suspicious", _O),
    "127.0.0.14": Code("Mailspike reputation: slightly suspicious", _O),
    "127.0.0.15": Code("Mailspike reputation: neutral (not a listing)", _G),
    "127.0.0.16": Code("Mailspike reputation: possibly good (not a listing)", _G),
    "127.0.0.17": Code("Mailspike reputation: good (not a listing)", _G),
    "127.0.0.18": Code("Mailspike reputation: very good (not a listing)", _G),
    "127.0.0.19": Code("Mailspike reputation: excellent (not a listing)", _G),
    "127.0.0.20": Code("Mailspike reputation: excellent (not a listing)", _G),
}

ZONES: tuple[Zone, ...] = (
    # --- IP lists, default set ------------------------------------------------------------
    Zone("zen.spamhaus.org", ZoneKind.IP, "Spamhaus (SBL+CSS+XBL+PBL)",
         "free for low-volume non-commercial use through your own resolver; public resolvers "
         "are refused (127.255.255.254); everyone else: DQS key",
         default=True, ipv6=True, codes=_ZEN_CODES, lookup_url=_SPAMHAUS_LOOKUP,
         delist=_SPAMHAUS_DELIST),
    Zone("bl.spamcop.net", ZoneKind.IP, "SpamCop (Cisco)", "free",
         default=True, codes={"127.0.0.2": Code("SpamCop: sent mail reported as spam by "
                                                 "SpamCop users or hit spamtraps", _S)},
         lookup_url="https://www.spamcop.net/bl.shtml?{target}",
         delist="automatic about 24 hours after the reports stop (spamcop.net/bl.shtml)"),
    Zone("dnsbl.dronebl.org", ZoneKind.IP, "DroneBL", "free, including commercial use",
         default=True, codes=_DRONEBL_CODES,
         lookup_url="https://dronebl.org/lookup?ip={target}",
         delist="fix the cause, then request removal at https://dronebl.org/lookup"),
    Zone("psbl.surriel.com", ZoneKind.IP, "Passive Spam Block List", "free",
         default=True, codes={"127.0.0.2": Code("PSBL: hit spamtraps", _S)},
         lookup_url="https://psbl.org/listing?ip={target}",
         delist="anybody can remove an address on its listing page"),
    Zone("bl.mailspike.net", ZoneKind.IP, "Mailspike", "free below 100,000 queries/day",
         default=True,
         codes={"127.0.0.2": Code("Mailspike: zombie (compromised sender)", _C),
                "127.0.0.10": Code("Mailspike: worst reputation", _S),
                "127.0.0.11": Code("Mailspike: very bad reputation", _S),
                "127.0.0.12": Code("Mailspike: bad reputation", _S)},
         lookup_url="https://mailspike.io/ip_verify?ip={target}",
         delist="automatic as reputation recovers; request via mailspike.io"),
    Zone("all.s5h.net", ZoneKind.IP, "s5h.net", "free", default=True, ipv6=True,
         codes={"127.0.0.2": Code("s5h: spam source (mail or HTTP)", _S)},
         lookup_url="https://www.s5h.net/rblcheck?ip={target}",
         delist="one HTTP request from the listed address (s5h.net/rblcheck)"),
    Zone("dnsbl-1.uceprotect.net", ZoneKind.IP, "UCEPROTECT level 1 (single IPs)",
         "free; paid express delisting", default=True,
         codes={"127.0.0.2": Code("UCEPROTECT L1: this address hit spamtraps", _S)},
         lookup_url="https://www.uceprotect.net/en/rblcheck.php?ipr={target}",
         delist="automatic 7 days after the last hit (paid express delisting exists)"),
    # --- IP lists, opt-in -----------------------------------------------------------------
    Zone("dnsbl-2.uceprotect.net", ZoneKind.IP, "UCEPROTECT level 2 (allocations)", "free",
         codes={"127.0.0.2": Code("UCEPROTECT L2: the allocation around this address is "
                                  "listed (neighbours)", _P)},
         lookup_url="https://www.uceprotect.net/en/rblcheck.php?ipr={target}",
         delist="only the provider can change this (uceprotect.net)"),
    Zone("dnsbl-3.uceprotect.net", ZoneKind.IP, "UCEPROTECT level 3 (whole ASNs)", "free",
         codes={"127.0.0.2": Code("UCEPROTECT L3: the provider's whole ASN is listed", _P)},
         lookup_url="https://www.uceprotect.net/en/rblcheck.php?ipr={target}",
         delist="only the provider can change this (uceprotect.net)"),
    Zone("b.barracudacentral.org", ZoneKind.IP, "Barracuda BRBL",
         "free, but the querying DNS server must be registered with Barracuda",
         codes={"127.0.0.2": Code("Barracuda: poor reputation (spamtraps, open proxy or "
                                  "botnet activity)", _S)},
         lookup_url="https://www.barracudacentral.org/lookups/lookup-reputation",
         delist="removal request at barracudacentral.org after fixing the cause"),
    Zone("z.mailspike.net", ZoneKind.IP, "Mailspike zero-hour", "free below 100,000/day",
         codes={"127.0.0.2": Code("Mailspike Z: part of a zero-hour spam outbreak", _S)},
         lookup_url="https://mailspike.io/ip_verify?ip={target}"),
    Zone("rep.mailspike.net", ZoneKind.IP, "Mailspike reputation", "free below 100,000/day",
         codes=_MAILSPIKE_REP, lookup_url="https://mailspike.io/ip_verify?ip={target}",
         notes="values .15-.20 are neutral or good reputation, not listings"),
    Zone("sbl.spamhaus.org", ZoneKind.IP, "Spamhaus SBL", "as zen.spamhaus.org", ipv6=True,
         codes=_ZEN_CODES, lookup_url=_SPAMHAUS_LOOKUP, delist=_SPAMHAUS_DELIST,
         notes="included in zen.spamhaus.org: do not query both"),
    Zone("xbl.spamhaus.org", ZoneKind.IP, "Spamhaus XBL (CBL data)", "as zen.spamhaus.org",
         ipv6=True, codes=_ZEN_CODES, lookup_url=_SPAMHAUS_LOOKUP, delist=_SPAMHAUS_DELIST,
         notes="included in zen.spamhaus.org: do not query both"),
    Zone("pbl.spamhaus.org", ZoneKind.IP, "Spamhaus PBL", "as zen.spamhaus.org", ipv6=True,
         codes=_ZEN_CODES, lookup_url=_SPAMHAUS_LOOKUP, delist=_SPAMHAUS_DELIST,
         notes="included in zen.spamhaus.org: do not query both"),
    # --- domain lists ---------------------------------------------------------------------
    Zone("dbl.spamhaus.org", ZoneKind.DOMAIN, "Spamhaus DBL",
         "as zen.spamhaus.org (public resolvers refused; DQS otherwise)", default=True,
         codes=_DBL_CODES, test_listed="dbltest.com",
         lookup_url=_SPAMHAUS_LOOKUP, delist=_SPAMHAUS_DELIST),
    Zone("multi.surbl.org", ZoneKind.DOMAIN, "SURBL", "free for small use", default=True,
         bits={1: Code("SURBL: query blocked (resolver over quota or refused)",
                       CodeClass.REFUSED),
               8: Code("SURBL PH: phishing", _M), 16: Code("SURBL MW: malware", _M),
               64: Code("SURBL ABUSE: spam and abuse", _S),
               128: Code("SURBL CR: cracked (compromised) site", _A)},
         test_listed="test.surbl.org",
         lookup_url="https://www.surbl.org/surbl-analysis?d={target}",
         delist="removal request at surbl.org after cleaning up"),
    Zone("multi.uribl.com", ZoneKind.DOMAIN, "URIBL", "free for low volume", default=True,
         bits={1: Code("URIBL: query refused (127.0.0.1; the TXT names your resolver)",
                       CodeClass.REFUSED),
               2: Code("URIBL black: spam domain", _S), 4: Code("URIBL grey: bulk mail", _O),
               8: Code("URIBL red: seen in spam from new/abused sources", _S)},
         test_listed="test.uribl.com",
         lookup_url="https://admin.uribl.com/?section=lookup&domain={target}",
         delist="removal request at admin.uribl.com"),
    # --- dead zones: catalogued so that asking for one explains itself -------------------
    Zone("dnsbl.sorbs.net", ZoneKind.IP, "SORBS", "none", status=ZoneStatus.DEAD,
         notes="decommissioned 2024-06-05; servers no longer answer"),
    Zone("dnsbl.ahbl.org", ZoneKind.IP, "AHBL", "none", status=ZoneStatus.DEAD,
         notes="wildcarded on 2015-01-01 as shutdown: answers 'listed' for everything"),
    Zone("dnsbl.njabl.org", ZoneKind.IP, "NJABL", "none", status=ZoneStatus.DEAD,
         notes="shut down; serves an empty zone"),
    Zone("cbl.abuseat.org", ZoneKind.IP, "CBL", "as zen.spamhaus.org", status=ZoneStatus.DEAD,
         codes=_ZEN_CODES, notes="merged into Spamhaus XBL; query zen.spamhaus.org"),
)

_BY_NAME: dict[str, Zone] = {z.name: z for z in ZONES}


def mask(key: str) -> str:
    """A secret as reports may show it."""
    return f"{key[:4]}...(key)"

ZONE_SETS = ("default", "all")


def lookup(name: str) -> Zone | None:
    """The catalogue entry for a zone name (case-insensitive, trailing dot ignored).

    Spamhaus DQS names (`<key>.zen.dq.spamhaus.net`) get the public zone's code map.
    """
    key = name.strip().rstrip(".").lower()
    if key in _BY_NAME:
        return _BY_NAME[key]
    for public in ("zen", "sbl", "xbl", "pbl", "dbl"):
        if key.endswith(f".{public}.dq.spamhaus.net"):
            base = _BY_NAME[f"{public}.spamhaus.org"]
            return replace(base, name=key, access="Spamhaus DQS key", default=False,
                           needs_key=True)
    return None


def parse_zones(items: Iterable[str]) -> tuple[Zone, ...]:
    """`--zones` values (comma-separated `NAME[:ip|domain]`) as catalogue entries, or generic
    zones for names the catalogue does not know; duplicates dropped, InputError on bad input."""
    from relayguard.blocklist.names import to_alabel
    from relayguard.errors import InputError

    out: list[Zone] = []
    for item in (part.strip() for chunk in items for part in chunk.split(",")):
        if not item:
            continue
        name, _, kind = item.partition(":")
        if kind not in ("", "ip", "domain"):
            raise InputError("--zones", f"{item!r}: kind must be `ip` or `domain`")
        name = to_alabel(name)
        zone = lookup(name) or Zone.generic(name, ZoneKind(kind or "ip"))
        if zone.name not in {z.name for z in out}:
            out.append(zone)
    return tuple(out)


def zone_set(which: str) -> tuple[Zone, ...]:
    """`default`: free, live, non-duplicated lists; `all`: every live zone without a key."""
    if which == "default":
        return tuple(z for z in ZONES if z.default and not z.needs_key)
    if which == "all":
        skip = {"sbl.spamhaus.org", "xbl.spamhaus.org", "pbl.spamhaus.org"}  # inside zen
        return tuple(z for z in ZONES if z.status is ZoneStatus.LIVE and not z.needs_key
                     and z.name not in skip)
    raise ValueError(f"unknown zone set {which!r} (one of: {', '.join(ZONE_SETS)})")
