"""SMTP relay checks: nmap's 16 relay tricks and a few more, stopping at RCPT.

EHLO (HELO when EHLO is refused), STARTTLS when offered or demanded (then the tricks again
inside TLS), each trick as RSET / MAIL FROM / RCPT TO (in one write when the MTA offers
PIPELINING), a few tricks per connection so the MTA's error limits never slow us down. RCPT
250/251 for a foreign domain makes a relay `likely`; if a random local user is accepted too
the MTA accepts everything (a sink), which is only `possible`. DATA is sent only with
`--confirm-delivery`: one tiny message to `<nonce>@[canary]`, `confirmed` when the canary
receives it.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from relayguard.findings import Confidence, Evidence, Location
from relayguard.probe import rules
from relayguard.probe.canary import CanaryHit, new_nonce
from relayguard.probe.context import KeptConnection, PortResult, ProbeContext, split_hits
from relayguard.probe.net import MAX_READ, Conn, NetError, TooLarge, Transcript

SCANNER_NAME = "relayguard.invalid"
FOREIGN = "relayguard.invalid"  # never resolvable: a real relay cannot reach a third party
TRICKS_PER_SESSION = 8  # below Postfix's smtpd_soft_error_limit (10)
MAX_REPLY_LINES = 100


class NotSmtp(NetError):
    kind = "not-smtp"


@dataclass
class SmtpReply:
    code: int
    lines: list[str]

    @property
    def text(self) -> str:
        return " / ".join(self.lines)


@dataclass(frozen=True)
class Trick:
    """One relay attempt: envelope sender and recipient, and what makes it a trick."""

    mail: str
    rcpt: str
    name: str


@dataclass
class TrickResult:
    trick: Trick
    mail: SmtpReply | None
    rcpt: SmtpReply | None

    @property
    def accepted(self) -> bool:
        return self.rcpt is not None and self.rcpt.code in (250, 251)


@dataclass
class Session:
    conn: Conn
    banner: SmtpReply
    extensions: set[str] = field(default_factory=set)
    tls: bool = False


async def read_reply(conn: Conn, what: str = "SMTP reply") -> SmtpReply:
    """A whole (multi-line) reply within one reply deadline, MAX_REPLY_LINES lines and
    MAX_READ bytes in total; NotSmtp when a line does not start with a 3-digit code."""
    lines: list[str] = []
    code = 0
    until = conn.reply_deadline()
    size = 0
    for _ in range(MAX_REPLY_LINES):
        raw = await conn.read_until(b"\n", what, until)
        size += len(raw)
        if size > MAX_READ:
            raise TooLarge(f"{what} exceeds {MAX_READ // 1024} KiB")
        line = raw.decode("latin-1").rstrip("\r\n")
        if not re.match(r"^[2-5]\d\d([ -]|$)", line):
            raise NotSmtp(f"not an SMTP reply: {line[:60]!r}")
        code = int(line[:3])
        lines.append(line)
        if line[3:4] != "-":
            return SmtpReply(code, lines)
    raise NetError(f"{what} has more than {MAX_REPLY_LINES} lines")


async def command(conn: Conn, text: str) -> SmtpReply:
    return (await pipeline(conn, [text]))[0]


async def pipeline(conn: Conn, texts: list[str]) -> list[SmtpReply]:
    """Send commands in one write and read their replies in order: one round trip instead
    of one per command. More than one only to a server that offers PIPELINING (RFC 2920)."""
    await conn.send(b"".join(text.encode("latin-1") + b"\r\n" for text in texts))
    return [await read_reply(conn, f"reply to {text.split(':')[0].split()[0]}")
            for text in texts]


def server_name(banner: SmtpReply, fallback: str) -> str:
    """The host name the MTA announces (`220 mx.example.com ESMTP`), as nmap's SRV."""
    m = re.match(r"^\d{3}[ -]([A-Za-z0-9][A-Za-z0-9.-]*)", banner.lines[0])
    return m.group(1) if m and "." in m.group(1) else fallback


def tricks(ip: str, srv: str, canary_ip: str) -> list[Trick]:
    """nmap smtp-open-relay's 16 tests (D = a foreign domain), then extras."""
    d = FOREIGN
    lit = f"[{ip}]" if ":" not in ip else f"[IPv6:{ip}]"
    clit = f"[{canary_ip}]" if ":" not in canary_ip else f"[IPv6:{canary_ip}]"
    src = f"<antispam@{lit}>"
    return [
        Trick("<>", f"<relaytest@{d}>", "null sender"),
        Trick(f"<antispam@{d}>", f"<relaytest@{d}>", "foreign to foreign"),
        Trick(f"<antispam@{srv}>", f"<relaytest@{d}>", "spoofed local sender"),
        Trick(src, f"<relaytest@{d}>", "IP-literal local sender"),
        Trick(src, f"<relaytest%{d}@{lit}>", "percent hack via IP literal"),
        Trick(src, f"<relaytest%{d}@{srv}>", "percent hack via host name"),
        Trick(src, f'<"relaytest@{d}">', "quoted local part with @"),
        Trick(src, f'<"relaytest%{d}">', "quoted percent local part"),
        Trick(src, f"<relaytest@{d}@{lit}>", "double @ via IP literal"),
        Trick(src, f'<"relaytest@{d}"@{lit}>', "quoted foreign address at IP literal"),
        Trick(src, f"<relaytest@{d}@{srv}>", "double @ via host name"),
        Trick(src, f"<@{lit}:relaytest@{d}>", "source route via IP literal"),
        Trick(src, f"<@{srv}:relaytest@{d}>", "source route via host name"),
        Trick(src, f"<{d}!relaytest>", "bang path"),
        Trick(src, f"<{d}!relaytest@{lit}>", "bang path at IP literal"),
        Trick(src, f"<{d}!relaytest@{srv}>", "bang path at host name"),
        # Beyond nmap: abuse.net / mailradar style.
        Trick("<spamtest>", f"<relaytest@{d}>", "sender without domain"),
        Trick(f"<antispam@{d}>", f"<relaytest@{clit}>", "foreign IP-literal recipient"),
        Trick(f"<antispam@{d}>", f'<"relaytest@{d}"@{srv}>', "quoted foreign address at host name"),
        Trick(f"<postmaster@{srv}>", f"<relaytest@{d}>", "spoofed postmaster sender"),
    ]


class Smtp:
    """The SMTP checks for one host:port."""

    def __init__(self, ctx: ProbeContext, result: PortResult,
                 implicit_tls: bool | None = None) -> None:
        self.ctx = ctx
        self.result = result
        self.implicit_tls = result.port == 465 if implicit_tls is None else implicit_tls
        self.transcripts: list[Transcript] = []

    async def _open(self, conn: Conn, starttls: bool) -> Session | str:
        """Banner, EHLO/HELO, optional STARTTLS; a string says why we cannot go on."""
        banner = await read_reply(conn, "SMTP banner")
        if banner.code != 220:
            return f"MTA refuses the session: {banner.text}"
        s = Session(conn, banner, tls=self.implicit_tls)
        if not await self._hello(s):
            return f"EHLO and HELO refused: {banner.text}"
        if starttls and not s.tls:
            if "STARTTLS" not in s.extensions:
                return "STARTTLS not offered"
            reply = await command(conn, "STARTTLS")
            if reply.code != 220:
                return f"STARTTLS refused: {reply.text}"
            await conn.start_tls()
            s.tls = True
            if not await self._hello(s):
                return "EHLO refused after STARTTLS"
        return s

    async def _hello(self, s: Session) -> bool:
        reply = await command(s.conn, f"EHLO {SCANNER_NAME}")
        if reply.code == 250:
            s.extensions = {ln[4:].split()[0].upper() for ln in reply.lines[1:] if ln[4:].split()}
            return True
        reply = await command(s.conn, f"HELO {SCANNER_NAME}")
        s.extensions = set()
        return reply.code == 250

    async def _run_batch(self, batch: list[Trick], starttls: bool,
                         results: list[TrickResult]) -> str | None:
        """One connection, a few tricks; a string when the session could not be used."""
        t = Transcript()
        self.transcripts.append(t)
        async with self.ctx.connection(self.result.host, self.result.port, t,
                                       tls=self.implicit_tls) as conn:
            s = await self._open(conn, starttls)
            if isinstance(s, str):
                return s
            return await self._tricks_in(s, batch, results)

    async def _tricks_then_close(self, s: Session, kept: KeptConnection, batch: list[Trick],
                                 results: list[TrickResult]) -> str | None:
        try:
            return await self._tricks_in(s, batch, results)
        finally:
            await kept.close()

    async def _tricks_in(self, s: Session, batch: list[Trick],
                         results: list[TrickResult]) -> str | None:
        """A few tricks in an open session, then RSET and QUIT; a string when the MTA ended
        the session early."""
        conn = s.conn
        pipelining = "PIPELINING" in s.extensions
        for trick in batch:
            conn.transcript.note(f"trick: {trick.name}")
            steps = ["RSET", f"MAIL FROM:{trick.mail}", f"RCPT TO:{trick.rcpt}"]
            # With PIPELINING the RCPT goes out with its MAIL; when the MAIL was refused its
            # reply (503 or the like) is read and ignored, as RCPT is skipped without.
            replies = await pipeline(conn, steps if pipelining else steps[:2])
            mail = replies[1]
            if mail.code == 530 and not s.tls:
                results.append(TrickResult(trick, mail, None))
                return "530: STARTTLS or AUTH demanded before MAIL"
            if mail.code != 250:
                results.append(TrickResult(trick, mail, None))
                continue
            rcpt = replies[2] if pipelining else await command(conn, steps[2])
            results.append(TrickResult(trick, mail, rcpt))
            if rcpt.code == 421:
                return f"MTA closed the session: {rcpt.text}"
        await command(conn, "RSET")
        await conn.send(b"QUIT\r\n")
        return None

    async def run_tricks(self, all_tricks: list[Trick], starttls: bool,
                         session: tuple[Session, KeptConnection] | None = None
                         ) -> tuple[list[TrickResult], list[str]]:
        """Every trick, a batch per session, the sessions side by side; the first batch in
        `session` when one is open already (its connection is closed right after, so that
        under --per-host 1 the other sessions can start)."""
        results: list[TrickResult] = []
        problems: list[str] = []
        batches = [all_tricks[i:i + TRICKS_PER_SESSION]
                   for i in range(0, len(all_tricks), TRICKS_PER_SESSION)]
        runs = [self._run_batch(b, starttls, results) for b in batches[session is not None:]]
        if session is not None:
            runs.insert(0, self._tricks_then_close(*session, batches[0], results))
        outcomes = await asyncio.gather(*runs, return_exceptions=True)
        for o in outcomes:
            if isinstance(o, NetError):
                problems.append(f"{o.kind}: {o}")
            elif isinstance(o, BaseException):
                raise o
            elif o:
                problems.append(o)
        return results, problems

    async def check(self, greeted: tuple[KeptConnection, Transcript] | None = None) -> None:
        """All relay checks; fill the PortResult.

        `greeted`: the connection whose banner identified the port (the banner pushed back
        unread) and its transcript; the first session runs on it instead of a new one.
        """
        ip = self.result.host
        if greeted is not None and not self.implicit_tls:
            kept, t = greeted
        else:
            if greeted is not None:  # a plaintext greeting on a port checked with TLS (465)
                await greeted[0].close()
            kept, t = self.ctx.kept(ip, self.result.port, tls=self.implicit_tls), Transcript()
        self.transcripts.append(t)
        try:
            # Learn the server name (and STARTTLS) first: the tricks are built from it. The
            # first batch of tricks then runs in this same session.
            conn = await kept.get(t)
            s = await self._open(conn, starttls=False)
            if isinstance(s, str):
                self.result.note(s)
                return
            srv = server_name(s.banner, f"[{ip}]")
            offers_tls = "STARTTLS" in s.extensions
            offers_auth = any(e.startswith("AUTH") for e in s.extensions)
            control = f"<{new_nonce()}@{srv}>"
            steps = [f"MAIL FROM:<antispam@{FOREIGN}>", f"RCPT TO:{control}"]
            if "PIPELINING" in s.extensions:
                control_reply = (await pipeline(conn, steps))[1]
            else:
                await command(conn, steps[0])
                control_reply = await command(conn, steps[1])
            all_tricks = tricks(ip, srv, self.ctx.canary.host)
            results, problems = await self.run_tricks(all_tricks, starttls=False,
                                                      session=(s, kept))
        finally:
            await kept.close()
        tls_used = False
        need_tls = any("530" in p for p in problems)
        if (offers_tls or need_tls) and not any(r.accepted for r in results) \
                and not self.implicit_tls:
            tls_results, tls_problems = await self.run_tricks(all_tricks, starttls=True)
            results += tls_results
            problems = [p for p in problems if "530" not in p] + tls_problems
            tls_used = True
        for p in sorted(set(problems)):
            if p.startswith(("timeout", "reset", "closed", "too-large", "not-smtp", "error",
                             "refused")):
                self.result.error(f"SMTP relay checks: {p}")
            else:
                self.result.note(p)

        accepted = [r for r in results if r.accepted]
        if not accepted:
            return
        sink = control_reply.code in (250, 251)
        confidence = Confidence.POSSIBLE if sink else Confidence.LIKELY
        evidence: list[Evidence] = [Evidence(kind="transcript", text=tr.render(),
                                             location=Location(host=ip, port=self.result.port))
                                    for tr in self.transcripts]
        summary = "\n".join(f"accepted ({r.trick.name}): MAIL FROM:{r.trick.mail} -> "
                            f"RCPT TO:{r.trick.rcpt}: {r.rcpt.text if r.rcpt else ''}"
                            for r in accepted)
        evidence.insert(0, Evidence(kind="note", text=summary))
        if sink:
            evidence.insert(1, Evidence(kind="note", text=(
                f"the MTA also accepted a random local user ({control}): it may accept every "
                "recipient and bounce later (a sink), so acceptance is not proof of relaying")))
        if offers_auth:
            evidence.append(Evidence(kind="note", text="AUTH offered; none was used"))
        title = (f"{rules.SMTP_RELAY.title}: {len(accepted)}/{len(all_tricks)} relay tricks "
                 f"accepted at RCPT{' (inside STARTTLS)' if tls_used else ''}")
        if self.ctx.options.confirm_delivery:
            delivered = await self._confirm_delivery(evidence, starttls=tls_used)
            if delivered:
                confidence = Confidence.CONFIRMED
                title += ", and a test message reached the canary"
        self.result.findings.append(rules.SMTP_RELAY.finding(
            title, location=Location(host=ip, port=self.result.port), evidence=evidence,
            confidence=confidence))

    async def _confirm_delivery(self, evidence: list[Evidence], starttls: bool) -> bool:
        """Send ONE tiny message to <nonce>@[canary] (opt-in) and wait for the canary.

        `starttls`: the relay was found inside STARTTLS, so the message goes that way too.
        """
        c = self.ctx.canary
        if 25 not in c.bound_smtp or c.bound_smtp[25] != 25:
            evidence.append(Evidence(kind="note", text="--confirm-delivery: the canary has no "
                                     "port 25 listener, so delivery cannot be observed"))
            return False
        nonce = new_nonce()
        rcpt = f"<{nonce}@[{c.host}]>" if ":" not in c.host else f"<{nonce}@[IPv6:{c.host}]>"
        t = Transcript()
        t.note("--confirm-delivery: sending one test message to the scanner's own canary")
        try:
            sent = await self._send_one(t, rcpt, nonce, starttls)
        except NetError as exc:
            t.note(f"{exc.kind}: {exc}")
            sent = False
        hits: list[CanaryHit] = []
        stray: list[CanaryHit] = []
        if sent:
            seen = await c.wait(nonce, max(5.0, 3 * self.ctx.options.timeout))
            hits, stray, own = split_hits(seen, "smtp", c.bound_smtp[25])
            stray += own
        evidence.append(Evidence(kind="transcript", text=t.render()))
        evidence += [Evidence(kind="note", text=h.describe()) for h in hits]
        evidence += [Evidence(kind="note", text=f"not counted (not a relayed delivery to the "
                              f"SMTP listener on port 25): {h.describe()}") for h in stray]
        return bool(hits)

    async def _send_one(self, t: Transcript, rcpt: str, nonce: str, starttls: bool) -> bool:
        """One session: MAIL, RCPT <rcpt>, DATA with a three-line message; False (noted in
        the transcript) when the MTA declines a step."""
        async with self.ctx.connection(self.result.host, self.result.port, t,
                                       tls=self.implicit_tls) as conn:
            s = await self._open(conn, starttls=starttls)
            if isinstance(s, str):
                t.note(f"not sent: {s}")
                return False
            for step, ok in ((f"MAIL FROM:<relayguard@{FOREIGN}>", (250,)),
                             (f"RCPT TO:{rcpt}", (250, 251)), ("DATA", (354,))):
                if (await command(conn, step)).code not in ok:
                    t.note(f"not sent: {step.split(':')[0]} was refused")
                    return False
            await conn.send((f"From: <relayguard@{FOREIGN}>\r\nTo: {rcpt}\r\n"
                             f"Subject: relayguard relay test {nonce}\r\n"
                             f"Message-ID: <{nonce}@{FOREIGN}>\r\n\r\n"
                             f"relayguard open-relay test {nonce}\r\n.\r\n").encode())
            await read_reply(conn, "reply to end of DATA")
            await conn.send(b"QUIT\r\n")
        return True
