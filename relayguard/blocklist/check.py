"""The blocklist check: self-test each list, ask it about each target, decide per target.

Every (target, list) pair ends in one of four states - listed, not-listed, refused, unknown -
or `unusable` when the list failed its RFC 5782 §5 self-test (its answers are not counted).
A target is `clean` only when enough usable lists answered not-listed; otherwise it is
`inconclusive`, never quietly clean.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from asyncio import Future
from dataclasses import dataclass, field, replace
from enum import StrEnum

from relayguard.blocklist.dnsclient import DnsAnswer, DnsClient, Status
from relayguard.blocklist.names import (
    IPAddress,
    Target,
    TargetKind,
    domain_query_name,
    ip_query_name,
    reversed_labels,
    skip_reason,
    to_alabel,
)
from relayguard.blocklist.zones import (
    ERROR_CODES,
    ERROR_RANGE,
    REFUSAL_REMEDY,
    Code,
    CodeClass,
    Zone,
    ZoneKind,
)

_LOOPBACK_NET = ipaddress.ip_network("127.0.0.0/8")
_ERROR_NET = ipaddress.ip_network(ERROR_RANGE)


class State(StrEnum):
    LISTED = "listed"
    NOT_LISTED = "not-listed"
    REFUSED = "refused"
    UNKNOWN = "unknown"
    UNUSABLE = "unusable"


class Verdict(StrEnum):
    LISTED = "listed"
    CLEAN = "clean"
    INCONCLUSIVE = "inconclusive"
    SKIPPED = "skipped"


class Family(StrEnum):
    """Which self-test pair a target needs from a list."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"
    DOMAIN = "domain"


@dataclass(frozen=True, slots=True)
class Decoded:
    """One answer value and what the catalogue says it means."""

    value: str
    code: Code


@dataclass(frozen=True, slots=True)
class Health:
    """A list's self-test verdict for one family; `usable` False means: do not count it."""

    zone: str
    family: Family
    usable: bool
    reason: str  # ok | refused | empty | wildcard | unreachable | hijacked | not-applicable
    detail: str = ""
    answers: tuple[DnsAnswer, ...] = ()
    checked_at: float = 0.0


class HealthCache:
    """Self-test verdicts per (nameservers, zone, family), trusted for `ttl` seconds.

    Shared across runs in one process (watch mode, the benchmark) so lists are not
    re-tested for every batch; a fresh CLI run starts empty.
    """

    def __init__(self, ttl: float = 1800.0) -> None:
        self.ttl = ttl
        self._items: dict[tuple[str, str, Family], Health] = {}

    def get(self, servers: str, zone: str, family: Family) -> Health | None:
        item = self._items.get((servers, zone, family))
        if item is None or time.time() - item.checked_at > self.ttl:
            return None
        return item

    def put(self, servers: str, health: Health) -> None:
        self._items[(servers, health.zone, health.family)] = health


@dataclass(frozen=True, slots=True)
class ListResult:
    """What one list said about one target, decoded."""

    zone: Zone
    state: State
    decoded: tuple[Decoded, ...] = ()
    txt: tuple[str, ...] = ()
    answer: DnsAnswer | None = None
    txt_answer: DnsAnswer | None = None
    detail: str = ""
    remedy: str = ""  # the next step when the answer was a refusal


@dataclass(slots=True)
class TargetResult:
    """One address or domain and every list's answer about it."""

    value: str
    family: Family
    origin: str  # what the user typed (a hostname for resolved addresses)
    lists: list[ListResult] = field(default_factory=list)
    verdict: Verdict = Verdict.INCONCLUSIVE
    answered: int = 0
    required: int = 0
    applicable: int = 0
    skipped: str = ""


@dataclass(slots=True)
class CheckResult:
    """Everything the check learnt; `relayguard.blocklist.report` turns it into a Report."""

    targets: list[TargetResult] = field(default_factory=list)
    health: list[Health] = field(default_factory=list)
    zones: tuple[Zone, ...] = ()
    errors: list[tuple[str, str]] = field(default_factory=list)  # (source, message)
    notes: list[str] = field(default_factory=list)
    queries: int = 0
    cache_hits: int = 0
    elapsed: float = 0.0


def decode(zone: Zone, values: tuple[str, ...]) -> tuple[State, tuple[Decoded, ...], str]:
    """Turn A values into a state: outside 127/8 = unknown, error codes = refused, GOOD-only
    reputation values = not-listed, anything else = listed with each code explained."""
    decoded: list[Decoded] = []
    for value in values:
        try:
            addr = ipaddress.IPv4Address(value)
        except ValueError:
            return State.UNKNOWN, (), f"answer {value!r} is not an IPv4 address"
        if addr not in _LOOPBACK_NET:
            return State.UNKNOWN, (), (
                f"answer {value} is outside 127.0.0.0/8, so it is not a DNSBL code: a resolver "
                "that rewrites NXDOMAIN (ad/parking page) or a zone that is not a blocklist")
        decoded.extend(Decoded(value, c) for c in _codes_for(zone, addr))
    if any(d.code.cls is CodeClass.REFUSED for d in decoded):
        refusal = next(d for d in decoded if d.code.cls is CodeClass.REFUSED)
        return State.REFUSED, tuple(decoded), f"{refusal.value}: {refusal.code.meaning}"
    if any(d.code.cls.is_listing for d in decoded):
        return State.LISTED, tuple(decoded), ""
    return State.NOT_LISTED, tuple(decoded), "; ".join(d.code.meaning for d in decoded)


def _codes_for(zone: Zone, addr: ipaddress.IPv4Address) -> list[Code]:
    value = str(addr)
    if addr in _ERROR_NET:
        return [ERROR_CODES.get(value, Code(f"error code {value} (127.255.255.0/24 is the "
                                            "error range, not a listing)", CodeClass.REFUSED))]
    if value in zone.codes:
        return [zone.codes[value]]
    if zone.bits and value.startswith("127.0.0."):
        last = int(value.rsplit(".", 1)[1])
        out = [code for bit, code in sorted(zone.bits.items()) if last & bit]
        undocumented = last & ~sum(zone.bits)
        if undocumented:
            out.append(Code(f"undocumented bits {undocumented} in {value}", CodeClass.OTHER))
        return out or [Code(f"empty bitmask {value}", CodeClass.OTHER)]
    if zone.catalogued:
        return [Code(f"code {value} is not documented by {zone.name}", CodeClass.OTHER)]
    return [Code(f"listed (code {value}; {zone.name} is not in the catalogue, so the code is "
                 "not decoded)", CodeClass.OTHER)]


def _stem(value: str, family: Family) -> str:
    if family is Family.DOMAIN:
        return to_alabel(value)
    return reversed_labels(ipaddress.ip_address(value))


def _applies(zone: Zone, family: Family) -> bool:
    if family is Family.DOMAIN:
        return zone.kind is ZoneKind.DOMAIN
    if zone.kind is not ZoneKind.IP:
        return False
    return family is Family.IPV4 or zone.ipv6


def _test_names(zone: Zone, family: Family) -> tuple[str, str]:
    if family is Family.DOMAIN:
        return (domain_query_name(zone.positive_test, zone.name),
                domain_query_name(zone.negative_test, zone.name))
    if family is Family.IPV4:
        return (ip_query_name(ipaddress.ip_address("127.0.0.2"), zone.name),
                ip_query_name(ipaddress.ip_address("127.0.0.1"), zone.name))
    # RFC 5782 §5: ::FFFF:7F00:2 / ::FFFF:7F00:1, asked in nibble form.
    return (ip_query_name(ipaddress.ip_address("::ffff:7f00:2"), zone.name),
            ip_query_name(ipaddress.ip_address("::ffff:7f00:1"), zone.name))


def _list_result(zone: Zone, answer: DnsAnswer) -> ListResult:
    """What one A answer from a self-tested list means (the TXT reason is added later)."""
    if answer.status is Status.NXDOMAIN:
        return ListResult(zone, State.NOT_LISTED, answer=answer)
    if answer.status is Status.ANSWER:
        state, decoded, why = decode(zone, answer.values)
        remedy = REFUSAL_REMEDY if state is State.REFUSED else ""
        return ListResult(zone, state, decoded, answer=answer, detail=why, remedy=remedy)
    if answer.status is Status.REFUSED:
        return ListResult(zone, State.REFUSED, answer=answer,
                          detail="the nameserver answered REFUSED: it does not serve this "
                          "zone or will not recurse for you", remedy=REFUSAL_REMEDY)
    detail = {
        Status.NODATA: "NOERROR without an A record (NODATA): not a valid DNSBL answer",
        Status.SERVFAIL: "SERVFAIL: the resolver could not get an answer (a Spamhaus DQS "
        "key without access also shows as SERVFAIL)",
    }.get(answer.status, f"{answer.status.value}: {answer.detail}")
    return ListResult(zone, State.UNKNOWN, answer=answer, detail=detail)


class Checker:
    """Runs one check over targets and zones with a shared client and self-test cache."""

    def __init__(self, client: DnsClient, zones: tuple[Zone, ...], *,
                 min_lists: int | None = None, health_cache: HealthCache | None = None,
                 resolve_names: bool = True) -> None:
        self.client = client
        self.resolve_names = resolve_names
        self.zones = zones
        self.min_lists = min_lists
        self.health_cache = health_cache if health_cache is not None else HealthCache()
        self._servers_key = ",".join(str(s) for s in client.servers)
        self._health_tasks: dict[tuple[str, Family], asyncio.Task[Health]] = {}
        self._used_health: dict[tuple[str, Family], Health] = {}

    # -- self-test ---------------------------------------------------------------------
    async def health(self, zone: Zone, family: Family) -> Health:
        """The cached self-test verdict, running the RFC 5782 §5 pair once if needed."""
        cached = self.health_cache.get(self._servers_key, zone.name, family)
        if cached is not None:
            self._used_health[(zone.name, family)] = cached
            return cached
        key = (zone.name, family)
        task = self._health_tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(self._self_test(zone, family))
            self._health_tasks[key] = task
        result = await task
        self.health_cache.put(self._servers_key, result)
        self._used_health[key] = result
        return result

    async def _self_test(self, zone: Zone, family: Family) -> Health:
        pos_name, neg_name = _test_names(zone, family)
        pos, neg = await asyncio.gather(self.client.query(pos_name, "A", bucket=zone.name),
                                        self.client.query(neg_name, "A", bucket=zone.name))
        answers = (pos, neg)
        now = time.time()
        shown = "TEST" if family is Family.DOMAIN else (
            "127.0.0.2" if family is Family.IPV4 else "::ffff:127.0.0.2")

        def bad(reason: str, detail: str) -> Health:
            return Health(zone.name, family, False, reason, detail, answers, now)

        refused = next((a for a in answers if a.status is Status.REFUSED), None)
        if refused is not None:
            return bad("refused", f"the nameserver {refused.server or ''} answered REFUSED "
                       f"for the test point {refused.qname}: it does not serve {zone.name} or "
                       "will not recurse for you, so no answer through it counts. Point "
                       "--resolver at a recursive resolver that answers you (or run one "
                       "locally, e.g. unbound, and pass --resolver 127.0.0.1)")
        if pos.status is Status.ANSWER:
            state, _decoded, why = decode(zone, pos.values)
            if state is State.UNKNOWN:
                return bad("hijacked", f"the test point {pos_name} got {why}")
            if state is State.REFUSED:
                return bad("refused", f"the test point {pos_name} was refused ({why})")
        elif pos.status in (Status.NXDOMAIN, Status.NODATA):
            return bad("empty", f"the test entry {shown} that RFC 5782 §5 requires is not "
                       f"listed ({pos.status.value}): the list is dead or empty, or your "
                       "resolver blocks it (some providers answer NXDOMAIN for Spamhaus)")
        else:
            return bad("unreachable", f"no usable answer for the test point {pos_name}: "
                       f"{pos.status.value}{': ' + pos.detail if pos.detail else ''}")
        if neg.status is Status.NXDOMAIN:
            return Health(zone.name, family, True, "ok", "", answers, now)
        if neg.status is Status.ANSWER:
            state, _decoded, why = decode(zone, neg.values)
            if state is State.REFUSED:
                return bad("refused", f"the test point {neg_name} was refused ({why})")
            return bad("wildcard", f"it lists {neg_name.split('.' + zone.name)[0]}, which RFC "
                       "5782 §5 says must never be listed: a dead or wildcarded list that "
                       "answers 'listed' for everything")
        if neg.status is Status.NODATA:
            return bad("broken", f"the must-not-list test point {neg_name} answered NODATA "
                       "instead of NXDOMAIN")
        return bad("unreachable", f"no usable answer for the test point {neg_name}: "
                   f"{neg.status.value}{': ' + neg.detail if neg.detail else ''}")

    # -- per target ----------------------------------------------------------------------
    async def check_target(self, target: TargetResult) -> None:
        """Fill in every applicable list's result and the target's verdict.

        Only lists that passed their self-test are asked, all at once; a listing's TXT
        reason is asked as soon as its A answer is in.
        """
        family = target.family
        zones = [z for z in self.zones if _applies(z, family)]
        pairs = [(z, self._used_health.get((z.name, family))
                  or await self.health(z, family))  # keeps check_target safe to call alone
                 for z in zones]
        if family is Family.IPV6:
            # An uncatalogued list without the IPv6 test entry simply does not do IPv6.
            pairs = [(z, h) for z, h in pairs if z.catalogued or h.reason != "empty"]
        target.applicable = len(pairs)
        stem = _stem(target.value, family)
        submit = self.client.submit
        # Every A query goes out before the first is awaited.
        asked = [submit(f"{stem}.{z.name}", "A", bucket=z.name) if h.usable else None
                 for z, h in pairs]
        results: list[ListResult] = []
        reasons: list[Future[DnsAnswer] | None] = []
        for (zone, health), pending in zip(pairs, asked, strict=True):
            if pending is None:
                results.append(ListResult(zone, State.UNUSABLE,
                                          detail=f"{health.reason}: {health.detail}",
                                          remedy=REFUSAL_REMEDY if health.reason == "refused"
                                          else ""))
                reasons.append(None)
                continue
            answer = await pending
            results.append(_list_result(zone, answer))
            listed = (answer.status is Status.ANSWER
                      and results[-1].state in (State.LISTED, State.REFUSED))
            reasons.append(submit(answer.qname, "TXT", bucket=zone.name) if listed else None)
        for i, pending in enumerate(reasons):
            if pending is not None:
                txt = await pending
                results[i] = replace(results[i], txt_answer=txt, txt=txt.values
                                     if txt.status is Status.ANSWER else ())
        target.lists = results
        target.answered = sum(1 for r in results if r.state in (State.LISTED, State.NOT_LISTED))
        target.required = self.min_lists if self.min_lists else max(1, math.ceil(len(pairs) / 2))
        if any(r.state is State.LISTED for r in results):
            target.verdict = Verdict.LISTED
        elif pairs and target.answered >= target.required:
            target.verdict = Verdict.CLEAN
        else:
            target.verdict = Verdict.INCONCLUSIVE

    async def expand(self, target: Target, result: CheckResult) -> list[TargetResult]:
        """A target as the checks need it: addresses as-is, names plus their A/AAAA."""
        if target.kind is not TargetKind.NAME:
            fam = Family.IPV4 if target.kind is TargetKind.IPV4 else Family.IPV6
            out = TargetResult(target.value, fam, target.text)
            reason = skip_reason(target.address)
            if reason:
                out.verdict, out.skipped = Verdict.SKIPPED, reason
                result.notes.append(f"{target.text}: skipped, a {reason} address: public "
                                    "blocklists do not list it")
            return [out]
        found: list[TargetResult] = [TargetResult(target.value, Family.DOMAIN, target.text)]
        if not self.resolve_names or not target.resolve:
            return found
        answers = await asyncio.gather(self.client.query(target.value, "A", bucket="resolve"),
                                       self.client.query(target.value, "AAAA", bucket="resolve"))
        for ans in answers:
            if ans.status is Status.ANSWER:
                for value in ans.values:
                    addr: IPAddress = ipaddress.ip_address(value)
                    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
                        addr = addr.ipv4_mapped  # ::ffff:a.b.c.d is that IPv4 host
                    fam = Family.IPV4 if addr.version == 4 else Family.IPV6
                    item = TargetResult(addr.compressed, fam, target.text)
                    reason = skip_reason(addr)
                    if reason:
                        item.verdict, item.skipped = Verdict.SKIPPED, reason
                        result.notes.append(f"{target.text} resolves to {addr} ({reason}); "
                                            "skipped: public blocklists do not list it")
                    found.append(item)
            elif ans.status not in (Status.NXDOMAIN, Status.NODATA):
                why = f"{ans.status.value}{': ' + ans.detail if ans.detail else ''}"
                result.errors.append((target.text, f"could not resolve {ans.rdtype} records "
                                      f"({why}); its addresses were not checked (pass "
                                      "--no-resolve to check only the name)"))
        statuses = {ans.status for ans in answers}
        if statuses == {Status.NXDOMAIN}:
            # Most likely a typo: a clean verdict on the name alone would hide that.
            result.errors.append((target.text, "does not exist (NXDOMAIN for A and AAAA): no "
                                  "address of it was checked; check the spelling (or pass "
                                  "--no-resolve to check only the name on domain lists)"))
        elif statuses <= {Status.NXDOMAIN, Status.NODATA}:
            result.notes.append(f"{target.text} has no A or AAAA record: only the name was "
                                "checked, on the domain lists")
        return found

    async def run(self, targets: list[Target]) -> CheckResult:
        """Expand targets, self-test every list first, then ask them, all within the deadline."""
        start = time.monotonic()
        self._health_tasks.clear()
        self._used_health.clear()
        self.client.start()
        try:
            return await self._run(targets, start)
        finally:
            self.client.close()

    async def _run(self, targets: list[Target], start: float) -> CheckResult:
        result = CheckResult(zones=self.zones)
        expanded = await asyncio.gather(*(self.expand(t, result) for t in targets))
        seen: set[tuple[str, Family]] = set()
        for group in expanded:
            for item in group:
                if (item.value, item.family) in seen:
                    continue
                seen.add((item.value, item.family))
                result.targets.append(item)
        checked = [t for t in result.targets if t.verdict is not Verdict.SKIPPED]
        # Every list's self-test first, side by side: no target query goes to a list that
        # turns out dead or refusing.
        families = {t.family for t in checked}
        await asyncio.gather(*(self.health(z, f) for f in sorted(families) for z in self.zones
                               if _applies(z, f)))
        await asyncio.gather(*(self.check_target(t) for t in checked))
        result.health = [self._used_health[k] for k in sorted(self._used_health)]
        result.queries = self.client.sent
        result.cache_hits = self.client.cache_hits
        result.elapsed = time.monotonic() - start
        return result


def check(targets: list[Target], zones: tuple[Zone, ...], client: DnsClient, *,
          min_lists: int | None = None, health_cache: HealthCache | None = None,
          resolve_names: bool = True) -> CheckResult:
    """Synchronous entry point for the CLI: run the whole check in a fresh event loop."""
    checker = Checker(client, zones, min_lists=min_lists, health_cache=health_cache,
                      resolve_names=resolve_names)
    # Not asyncio.run: on 3.11 its SIGINT bookkeeping reprs the finished main task, and with
    # it the whole result (seconds for thousands of targets).
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(checker.run(targets))
    finally:
        _wind_down(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _wind_down(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is still running (after Ctrl-C: the check and its self-tests) and let it
    finish inside the loop, so the client closes before the loop does."""
    pending = asyncio.all_tasks(loop)
    if not pending:
        return
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
