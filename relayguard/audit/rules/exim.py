"""Exim rules: the RCPT ACL accepting a stranger before the relay check, and the named lists
(`relay_from_hosts`, `relay_to_domains`) set so wide that the stock ACL relays for anyone.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from relayguard.audit.base import IPAddress
from relayguard.audit.exim import (
    FOREIGN,
    EximConfig,
    Line,
    Source,
    Statement,
    domain_in,
    evaluate_rcpt,
    host_in,
    model,
    option,
    split_exim_list,
)
from relayguard.audit.readfile import lines_of
from relayguard.catalogue import Rule
from relayguard.findings import Category, Confidence, Edit, Evidence, Finding, Location, Severity

_SPEC = "https://www.exim.org/exim-html-current/doc/html/spec_html/ch-access_control_lists.html"


def _conf(rcpt_acl: str, relay_nets: str = "127.0.0.1", relay_domains: str = "") -> str:
    return f"""\
primary_hostname = mx.relayguard.test
domainlist local_domains = @ : localhost
domainlist relay_to_domains = {relay_domains}
hostlist relay_from_hosts = {relay_nets}
acl_smtp_rcpt = acl_check_rcpt
daemon_smtp_ports = 2525
begin acl
acl_check_rcpt:
{rcpt_acl}
begin routers
dnslookup:
  driver = dnslookup
  domains = ! +local_domains
  transport = remote_smtp
begin transports
remote_smtp:
  driver = smtp
"""


_STOCK_ACL = """\
  accept  hosts = :
  accept  hosts = +relay_from_hosts
  accept  authenticated = *
  require message = relay not permitted
          domains = +local_domains : +relay_to_domains
  accept
"""

ACCEPT_BEFORE = Rule(
    id="EXIM-RCPT-ACCEPT-BEFORE-RELAY-CHECK",
    server="exim",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.CRITICAL,
    title="the RCPT ACL accepts outside clients before the relay check",
    description="In the ACL named by `acl_smtp_rcpt`, an `accept` that an outside client "
    "satisfies comes before `require domains = +local_domains : +relay_to_domains`: a bare "
    "`accept`, `hosts = *`, or conditions on what the client sends (`senders`, "
    "`sender_domains`, `verify = helo`, a `condition` on `$sender_address`).",
    why="`accept` ends the ACL, so the relay check never runs: anyone relays to any domain.",
    fix="Keep the stock order; move such `accept` statements after the relay `require`, or "
    "restrict them with `hosts = +relay_from_hosts`.",
    reference=_SPEC,
    bad=_conf("  accept  senders = *@mx.relayguard.test\n" + _STOCK_ACL),
    good=_conf(_STOCK_ACL),
)

RELAY_FROM_HOSTS_BROAD = Rule(
    id="EXIM-RELAY-FROM-HOSTS-BROAD",
    server="exim",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.CRITICAL,
    title="relay_from_hosts (dc_relay_nets) covers outside clients",
    description="`hostlist relay_from_hosts` — on Debian built from `dc_relay_nets` in "
    "update-exim4.conf.conf — contains `*`, `0.0.0.0/0`, `::/0` or a large public range, and "
    "the RCPT ACL accepts `hosts = +relay_from_hosts` before the relay check.",
    why="Every host in relay_from_hosts may relay to any domain: with a world-wide entry the "
    "server is an open relay.",
    fix="Narrow `dc_relay_nets` to your LANs and run `update-exim4.conf` "
    "(or edit `hostlist relay_from_hosts`).",
    reference="https://manpages.debian.org/bookworm/exim4-config/update-exim4.conf.8.en.html",
    bad=_conf(_STOCK_ACL, relay_nets="127.0.0.1 : 0.0.0.0/0"),
    good=_conf(_STOCK_ACL, relay_nets="127.0.0.1 : 192.168.0.0/16"),
)

RELAY_TO_DOMAINS_WILDCARD = Rule(
    id="EXIM-RELAY-TO-DOMAINS-WILDCARD",
    server="exim",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.CRITICAL,
    title="relay_to_domains (dc_relay_domains) matches any domain",
    description="`domainlist relay_to_domains` contains `*` or a pattern for a whole "
    "top-level domain (`*.com`, `com`): the relay check lets those recipients through.",
    why="Anyone can relay mail to every address those patterns match.",
    fix="List only the domains this host is a backup MX or gateway for.",
    reference="https://manpages.debian.org/bookworm/exim4-config/update-exim4.conf.8.en.html",
    bad=_conf(_STOCK_ACL, relay_domains="*"),
    good=_conf(_STOCK_ACL, relay_domains="example.org"),
)

_AUTH = """begin authenticators
plain_server:
  driver = plaintext
  public_name = PLAIN
  server_condition = ${if eq{$auth3}{secret}}
  server_set_id = $auth2
  server_prompts = :
"""

AUTH_CLEARTEXT = Rule(
    id="EXIM-AUTH-CLEARTEXT",
    server="exim",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.MEDIUM,
    title="a plaintext authenticator is offered without TLS",
    description="A server-side `plaintext` authenticator (PLAIN/LOGIN) has no "
    "`server_advertise_condition` requiring TLS (Debian: `AUTH_SERVER_ALLOW_NOTLS_PASSWORDS` "
    "defined), so passwords cross the network in clear; `accept authenticated = *` then "
    "relays for whoever sniffed one.",
    why="Stolen SMTP accounts are the most common way a correctly closed relay ends up "
    "sending spam.",
    fix="`server_advertise_condition = ${if eq{$tls_in_cipher}{}{}{*}}` in each plaintext "
    "authenticator (remove AUTH_SERVER_ALLOW_NOTLS_PASSWORDS on Debian).",
    reference="https://www.exim.org/exim-html-current/doc/html/spec_html/ch-smtp_authentication.html",
    bad=_conf(_STOCK_ACL).replace("begin routers", _AUTH + "begin routers"),
    good=_conf(_STOCK_ACL).replace("begin routers", _AUTH.replace(
        "  public_name = PLAIN\n", "  public_name = PLAIN\n"
        "  server_advertise_condition = ${if eq{$tls_in_cipher}{}{}{*}}\n") + "begin routers"),
)

RCPT_ACL_UNSET = Rule(
    id="EXIM-RCPT-ACL-UNSET",
    server="exim",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.INFO,
    title="acl_smtp_rcpt is unset: Exim refuses every recipient over SMTP",
    description="Without `acl_smtp_rcpt`, Exim rejects all RCPT commands from remote hosts. "
    "Not open, but mail for local domains is refused too — usually a broken edit.",
    why="A configuration that looks closed only because it is broken tends to be 'fixed' "
    "in a hurry, e.g. with a bare `accept`.",
    fix="Restore `acl_smtp_rcpt = acl_check_rcpt` with the stock ACL.",
    reference="https://www.exim.org/exim-html-current/doc/html/spec_html/ch-access_control_lists.html",
    bad=_conf(_STOCK_ACL).replace("acl_smtp_rcpt = acl_check_rcpt\n", ""),
    good=_conf(_STOCK_ACL),
)

RULES: tuple[Rule, ...] = (ACCEPT_BEFORE, RELAY_FROM_HOSTS_BROAD, RELAY_TO_DOMAINS_WILDCARD,
                           AUTH_CLEARTEXT, RCPT_ACL_UNSET)

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def _broad_hosts(value: str, client: IPAddress) -> list[str]:
    out = []
    for item in split_exim_list(value):
        if item.startswith("!"):
            continue
        if item == "*":
            out.append(item)
            continue
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            continue
        limit = 16 if net.version == 4 else 32
        if client in net or net.prefixlen == 0 or (
                net.prefixlen <= limit and not (net.is_private or net.is_loopback)):
            out.append(item)
    return out


def _wild_domains(value: str) -> list[str]:
    out = []
    for item in split_exim_list(value):
        core = item.lstrip("!*.")
        if item == "*" or (item.startswith(("*", ".", "^")) is False and "." not in item
                           and ":" not in item and item.isalpha() and item != "localhost"
                           and not item.startswith(("+", "@"))) or (
                item.startswith("*") and "." not in core):
            out.append(item)
    return out


def _origin(src: Source, list_line: Line, debconf_key: str,
            bad: list[str]) -> tuple[str, int, str]:
    """Where the offending items were written: the debconf line, a macro line, or the list."""
    raw_value = list_line.raw.partition("=")[2].strip()
    for name in re.findall(r"(?<![A-Za-z0-9_])[A-Z][A-Za-z0-9_]*", raw_value):
        macro = src.macros.get(name)
        if macro is None or not any(b in split_exim_list(macro.value) for b in bad):
            continue
        if debconf_key in src.debconf and macro.path.endswith("update-exim4.conf.conf"):
            value, line, path = src.debconf[debconf_key]
            return path, line, value
        if macro.line:
            return macro.path, macro.line, macro.value
    return list_line.path, list_line.line, raw_value


def _file_line(path: str, line: int) -> str | None:
    lines = lines_of(path) or []
    return lines[line - 1] if 0 < line <= len(lines) else None


def _remove_items_edit(path: str, line: int, bad: list[str]) -> Edit | None:
    old = _file_line(path, line)
    if old is None:
        return None
    new = old
    for item in bad:
        variants = [item, item.replace(":", "::")]
        for v in variants:
            pat = re.compile(r"\s*[:;]\s*" + re.escape(v) + r"(?=\s*(?:[:;'\"]|$))|"
                             + re.escape(v) + r"\s*[:;]\s*")
            if pat.search(new):
                new = pat.sub("", new, count=1)
                break
        else:
            new = new.replace(item, "")
    if new == old:
        return None
    return Edit(path, line, (old,), (new,))


def _ev(path: str, line: int, text: str) -> Evidence:
    return Evidence("config", f"{path}:{line}: {text}", Location(path, line))


def _relay_check_after(cfg: EximConfig, acl: str, st: Statement) -> Statement | None:
    stmts = cfg.acls.get(acl, [])
    after = stmts[stmts.index(st) + 1:] if st in stmts else []
    for s in after:
        for name, value, _ in s.conditions:
            about_relay = name.lstrip("!") == "domains" and (
                "relay_to_domains" in value or "local_domains" in value)
            if about_relay and (s.verb == "require" or (s.verb == "deny" and name.startswith("!"))):
                return s
    return None


def audit_source(src: Source, client: IPAddress) -> tuple[list[Finding], list[dict[str, Any]]]:
    cfg = model(src)
    findings: list[Finding] = []
    verdict = evaluate_rcpt(cfg, client)
    named_hosts = cfg.named_lists.get("relay_from_hosts")
    named_doms = cfg.named_lists.get("relay_to_domains")
    broad = _broad_hosts(named_hosts[1], client) if named_hosts else []
    wild = _wild_domains(named_doms[1]) if named_doms else []
    decider = verdict.statement if verdict.accepted else None
    via_hosts = decider is not None and any(
        n == "hosts" and "+relay_from_hosts" in v for n, v, _ in decider.conditions)

    if named_hosts and broad:
        path, line, value = _origin(src, named_hosts[2], "dc_relay_nets", broad)
        edit = _remove_items_edit(path, line, broad)
        sev = Severity.CRITICAL if via_hosts else Severity.MEDIUM
        ev = [_ev(path, line, _file_line(path, line) or value),
              _ev(named_hosts[2].path, named_hosts[2].line, named_hosts[2].raw)]
        if decider is not None and via_hosts:
            ev.append(_ev(decider.where.path, decider.where.line, decider.where.raw))
        findings.append(RELAY_FROM_HOSTS_BROAD.finding(
            f"relay_from_hosts includes {', '.join(broad)}: "
            f"{'outside clients may relay' if via_hosts else 'too broad (not used for relay)'}",
            location=Location(path, line), evidence=ev, severity=sev,
            confidence=Confidence.LIKELY, edits=[edit] if edit else []))

    if named_doms and wild:
        path, line, value = _origin(src, named_doms[2], "dc_relay_domains", wild)
        edit = _remove_items_edit(path, line, wild)
        relays = verdict.accepted and domain_in(named_doms[1], FOREIGN, cfg)
        findings.append(RELAY_TO_DOMAINS_WILDCARD.finding(
            f"relay_to_domains includes {', '.join(wild)}: mail to such domains is relayed",
            location=Location(path, line),
            evidence=[_ev(path, line, _file_line(path, line) or value)],
            severity=Severity.CRITICAL if relays else Severity.MEDIUM,
            confidence=Confidence.LIKELY, edits=[edit] if edit else []))

    if decider is not None and not via_hosts and verdict.acl_name:
        check = _relay_check_after(cfg, verdict.acl_name, decider)
        wild_used = named_doms is not None and domain_in(named_doms[1], FOREIGN, cfg)
        via_wildcard = wild_used and any(n == "domains" and "relay_to_domains" in v
                                         for n, v, _ in decider.conditions)
        if (check is not None or not wild_used) and not via_wildcard:
            findings.append(_accept_finding(cfg, verdict.acl_name, decider, check))

    findings += _auth_findings(cfg, src)
    if option(cfg, "acl_smtp_rcpt") is None:
        first = src.lines[0] if src.lines else None
        findings.append(RCPT_ACL_UNSET.finding(
            "acl_smtp_rcpt is unset: every RCPT over SMTP is refused (closed, but broken)",
            location=Location(first.path if first else None),
            evidence=[Evidence("note", "no acl_smtp_rcpt in the main section")],
            confidence=Confidence.LIKELY))
    return findings, [_fact(cfg, src)]


def _auth_findings(cfg: EximConfig, src: Source) -> list[Finding]:
    out: list[Finding] = []
    for name, (head, opts) in cfg.authenticators.items():
        driver = opts.get("driver")
        if driver is None or driver.text.partition("=")[2].strip() != "plaintext":
            continue
        if "server_condition" not in opts:
            continue  # a client-side authenticator (smarthost login)
        cond = opts.get("server_advertise_condition")
        if cond is not None and "tls" in cond.text:
            continue
        edits: list[Edit] = []
        macro = src.macros.get("AUTH_SERVER_ALLOW_NOTLS_PASSWORDS")
        old_macro = _file_line(macro.path, macro.line) if macro and macro.line else None
        if macro is not None and old_macro is not None:
            edits.append(Edit(macro.path, macro.line, (old_macro,), ()))
        elif cond is None and _file_line(head.path, head.line) is not None:
            edits.append(Edit(head.path, head.line + 1, (), (
                "  server_advertise_condition = ${if eq{$tls_in_cipher}{}{}{*}}",)))
        ev = [_ev(head.path, head.line, head.raw),
              _ev(driver.path, driver.line, driver.raw)]
        if macro is not None and macro.line:
            ev.append(_ev(macro.path, macro.line, f"{macro.name} = {macro.value}"))
        out.append(AUTH_CLEARTEXT.finding(
            f"authenticator {name} (plaintext) is offered without TLS: passwords in clear",
            location=Location(head.path, head.line), evidence=ev,
            confidence=Confidence.LIKELY, edits=edits))
    return out


def _relay_lists(cfg: EximConfig) -> tuple[str, str]:
    """Who may relay and where mail may go, naming only lists this config defines (a `+name`
    Exim does not know makes every RCPT fail with a temporary error instead of closing)."""
    def named(kind: str, name: str) -> bool:
        return cfg.named_lists.get(name, ("",))[0] == kind

    hosts = "+relay_from_hosts" if named("hostlist", "relay_from_hosts") else \
        "<; 127.0.0.1 ; ::1"
    domains = [d for d in ("+local_domains", "+relay_to_domains") if named("domainlist", d[1:])]
    return hosts, " : ".join(domains or ["@"])


def _accept_finding(cfg: EximConfig, acl: str, st: Statement,
                    check: Statement | None) -> Finding:
    where = st.where
    ev = [_ev(where.path, where.line, where.raw)]
    ev += [_ev(ln.path, ln.line, ln.raw) for _, _, ln in st.conditions if ln != where]
    acl_line = cfg.acl_lines.get(acl)
    if acl_line:
        ev.insert(0, _ev(acl_line.path, acl_line.line, acl_line.raw))
    if check is not None:
        ev.append(_ev(check.where.path, check.where.line,
                      f"{check.where.raw}  (relay check, never reached)"))
    conds = ", ".join(f"{n} = {v}" for n, v, _ in st.conditions) or "no condition"
    old = _file_line(where.path, where.line)
    edits: list[Edit] = []
    if old is not None:
        indent = old[: len(old) - len(old.lstrip())]
        hosts, domains = _relay_lists(cfg)
        edits.append(Edit(where.path, where.line, (), (
            f"{indent}deny    !hosts = {hosts}",
            f"{indent}        !authenticated = *",
            f"{indent}        !domains = {domains}",
            f"{indent}        message = relay not permitted")))
    return ACCEPT_BEFORE.finding(
        f"{acl}: 'accept' ({conds}) lets outside clients relay before the relay check",
        location=Location(where.path, where.line), evidence=ev, confidence=Confidence.LIKELY,
        edits=edits)


def _fact(cfg: EximConfig, src: Source) -> dict[str, Any]:
    named = cfg.named_lists.get("relay_from_hosts")
    nets: list[str] = []
    if named:
        for item in split_exim_list(named[1]):
            try:
                nets.append(("!" if item.startswith("!") else "")
                            + str(ipaddress.ip_network(item.lstrip("!"), strict=False)))
            except ValueError:
                continue
    trusted = evaluate_rcpt(cfg, LOOPBACK)
    ports = [p.strip() for p in split_exim_list(option(cfg, "daemon_smtp_ports") or "25")]
    port_nos = [{"smtp": "25", "submission": "587", "smtps": "465"}.get(p, p) for p in ports]
    ifaces = split_exim_list(option(cfg, "local_interfaces") or "") or ["*"]
    listen = []
    for iface in ifaces:
        host, port = _iface(iface)
        host = f"[{host}]" if ":" in host else host
        listen += [f"{host}:{port}"] if port else [f"{host}:{p}" for p in port_nos]
    ev = []
    if named:
        ev.append({"path": named[2].path, "line": named[2].line,
                   "text": f"hostlist relay_from_hosts = {named[1]}"})
    return {"server": "exim", "service": "smtp", "listen": listen, "trusted_networks": nets,
            "trusts_loopback": bool(named) and host_in(named[1], LOOPBACK, cfg),
            "relays_for_trusted": trusted.accepted, "forbids_http_commands": False,
            "evidence": ev}


def _iface(item: str) -> tuple[str, str | None]:
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", item)
    if m:
        return m.group(1), m.group(2)
    m = re.fullmatch(r"(\d+\.\d+\.\d+\.\d+)\.(\d+)", item)
    if m:
        return m.group(1), m.group(2)
    return item.strip("[]"), None
