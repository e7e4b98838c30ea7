"""Cutting abusers off: nftables named sets with timeouts, or a user command. Dry-run by default.

With `mode = "nftables"` the watcher adds each offending client to `<family> <table> <set4|set6>`
with `timeout` seconds; if the table is missing it creates it with both sets and an input chain
that drops their members (an existing table is left alone, only missing sets are added, so an
admin's own ruleset can reference them). The kernel expires elements by itself; the watcher
only records the unblock. `mode = "command"` runs `block_command` / `unblock_command` with
`{address}`, `{timeout}` and `{reason}` substituted. The allow-list (plus loopback) is never
blocked, whatever the logs say. Every block, unblock and refusal is logged and recorded in the
state database.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import subprocess
import time

from relayguard.findings import Finding
from relayguard.logs.incidents import Incident
from relayguard.watch.config import RespondConfig
from relayguard.watch.metrics import Metrics
from relayguard.watch.state import StateDB

log = logging.getLogger("relayguard.watch")

ALWAYS_ALLOWED = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class ResponseError(Exception):
    """nft or the block command failed."""


class Responder:
    """Decides which clients of an incident to block, and blocks them (or says it would)."""

    def __init__(self, cfg: RespondConfig, db: StateDB, metrics: Metrics) -> None:
        self.cfg, self.db, self.metrics = cfg, db, metrics
        self.allow = (*ALWAYS_ALLOWED, *cfg.allow)
        self.blocked: dict[str, float] = db.blocks()
        self._ready = False
        self._told_allowed: set[str] = set()

    @property
    def active(self) -> bool:
        return self.cfg.mode != "none"

    # -- nftables plumbing ---------------------------------------------------------------------
    def _nft(self, script: str) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run([*self.cfg.nft, "-f", "-"], input=script.encode(),
                                  capture_output=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ResponseError(f"nft: {exc}") from None

    def ensure(self) -> None:
        """Create the table / sets when missing (not in dry-run: dry-run touches nothing)."""
        if self._ready or self.cfg.mode != "nftables" or self.cfg.dry_run:
            return
        c = self.cfg
        t = f"{c.family} {c.table}"
        if self._nft(f"list table {t}\n").returncode != 0:
            script = (
                f"table {t} {{\n"
                f"  set {c.set4} {{ type ipv4_addr; flags timeout; }}\n"
                f"  set {c.set6} {{ type ipv6_addr; flags timeout; }}\n"
                f"  chain input {{ type filter hook input priority -10; policy accept;\n"
                f"    ip saddr @{c.set4} drop\n    ip6 saddr @{c.set6} drop\n  }}\n}}\n")
            if c.family == "ip":
                script = script.replace(f"    ip6 saddr @{c.set6} drop\n", "")
            res = self._nft(script)
            if res.returncode != 0:
                raise ResponseError(f"nft could not create table {t}: "
                                    f"{res.stderr.decode(errors='replace').strip()}")
            log.info("created nftables table %s with sets %s, %s", t, c.set4, c.set6)
        else:
            for name, kind in ((c.set4, "ipv4_addr"), (c.set6, "ipv6_addr")):
                if self._nft(f"list set {t} {name}\n").returncode != 0:
                    res = self._nft(f"add set {t} {name} {{ type {kind}; flags timeout; }}\n")
                    if res.returncode != 0:
                        raise ResponseError(f"nft could not create set {name}: "
                                            f"{res.stderr.decode(errors='replace').strip()}")
                    log.info("created nftables set %s in %s", name, t)
        self._ready = True

    # -- decisions -----------------------------------------------------------------------------
    def allowed(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.allow if net.version == addr.version)

    def consider(self, inc: Incident, finding: Finding) -> list[str]:
        """Block the incident's clients when its kind and verdict are configured to be."""
        if not self.active or inc.kind not in self.cfg.kinds or \
                inc.verdict not in self.cfg.verdicts:
            return []
        done = []
        reason = f"{inc.kind}: {finding.rule} ({inc.verdict}, {inc.events} event(s))"
        now = time.time()
        for client, _n in inc.clients.top(64):
            try:
                addr = ipaddress.ip_address(client)
            except ValueError:
                continue  # a host name in the log: nothing to put in a set
            text = addr.compressed
            if self.allowed(addr):
                if text not in self._told_allowed:
                    self._told_allowed.add(text)
                    log.warning("not blocking %s: allow-listed (%s)", text, reason)
                    self.db.record_action("allowed", text, None, reason, self.cfg.dry_run)
                continue
            if self.blocked.get(text, 0) > now:
                continue
            try:
                self.block(text, reason)
            except ResponseError as exc:
                log.error("block of %s failed: %s", text, exc)
                self.db.record_action("block-failed", text, None, f"{reason}; {exc}",
                                      self.cfg.dry_run)
                continue
            done.append(text)
        return done

    def block(self, address: str, reason: str) -> None:
        c = self.cfg
        until = time.time() + c.timeout
        if c.dry_run:
            log.warning("dry-run: would block %s for %ds (%s)", address, c.timeout, reason)
        elif c.mode == "nftables":
            self.ensure()
            name = self._set_for(address)
            res = self._nft(f"add element {c.family} {c.table} {name} "
                            f"{{ {address} timeout {c.timeout}s }}\n")
            if res.returncode != 0:
                raise ResponseError(res.stderr.decode(errors="replace").strip())
            log.warning("blocked %s for %ds in %s %s %s (%s)", address, c.timeout, c.family,
                        c.table, name, reason)
        else:
            self._run(c.block_command, address, reason)
            log.warning("blocked %s for %ds with %s (%s)", address, c.timeout,
                        c.block_command[0], reason)
        self.blocked[address] = until
        self.db.record_action("block", address, until, reason, c.dry_run)
        self.metrics.inc("blocks")
        self.metrics.set("blocked", len(self.blocked))

    def release(self, address: str, reason: str) -> None:
        """Lift one block before its timeout (ResponseError when that cannot be done)."""
        c = self.cfg
        if not c.dry_run:
            if c.mode == "nftables":
                res = self._nft(f"delete element {c.family} {c.table} "
                                f"{self._set_for(address)} {{ {address} }}\n")
                expired = b"No such file or directory" in res.stderr  # the kernel was first
                if res.returncode != 0 and not expired:
                    raise ResponseError(res.stderr.decode(errors="replace").strip())
            elif c.unblock_command:
                self._run(c.unblock_command, address, reason)
            else:
                raise ResponseError("no unblock_command is configured")
        self._unblocked(address, reason, f"before its timeout ({reason})")

    def _set_for(self, address: str) -> str:
        """The nftables set an address goes in: IPv6 and IPv4 have one each."""
        return self.cfg.set6 if ":" in address else self.cfg.set4

    def _unblocked(self, address: str, reason: str, how: str) -> None:
        """Log, forget, record and count one lifted block (early release or timeout)."""
        log.warning("%sunblocked %s %s", "dry-run: " if self.cfg.dry_run else "", address, how)
        del self.blocked[address]
        self.db.record_action("unblock", address, None, reason, self.cfg.dry_run)
        self.metrics.set("blocked", len(self.blocked))

    def release_exempt(self, trusted: frozenset[str]) -> None:
        """Unblock the blocked clients the allow-list or the trusted clients cover now (the
        admin said so in the config; waiting out the timeout would keep a friend locked out)."""
        if not self.active:
            return
        trusted_ips = set()
        for text in trusted:
            with contextlib.suppress(ValueError):
                trusted_ips.add(ipaddress.ip_address(text))
        for address in sorted(self.blocked):
            try:
                addr = ipaddress.ip_address(address)
            except ValueError:
                continue
            why = "allow-listed now" if self.allowed(addr) else \
                "a trusted client now" if addr in trusted_ips else None
            if why is None:
                continue
            try:
                self.release(address, why)
            except ResponseError as exc:
                log.error("unblock of %s (%s) failed: %s; it stays blocked until its timeout",
                          address, why, exc)

    def _run(self, argv: tuple[str, ...], address: str, reason: str) -> None:
        args = [a.format(address=address, timeout=self.cfg.timeout, reason=reason) for a in argv]
        try:
            res = subprocess.run(args, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ResponseError(f"{argv[0]}: {exc}") from None
        if res.returncode != 0:
            raise ResponseError(f"{argv[0]} exited {res.returncode}: "
                                f"{res.stderr.decode(errors='replace').strip()[:200]}")

    def expire(self) -> None:
        """Record (and for commands, perform) the unblocks whose time has come."""
        now = time.time()
        for address, until in list(self.blocked.items()):
            if until > now:
                continue
            if self.cfg.mode == "command" and not self.cfg.dry_run and self.cfg.unblock_command:
                try:
                    self._run(self.cfg.unblock_command, address, "timeout expired")
                except ResponseError as exc:
                    log.error("unblock of %s failed: %s", address, exc)
                    continue
            self._unblocked(address, "timeout expired", "(timeout expired)")
        self.metrics.set("blocked", len(self.blocked))  # also the first time, from the state
