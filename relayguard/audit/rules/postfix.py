"""Postfix rules: who is trusted (`mynetworks`), what lets an outside client past the relay
check, and master.cf overrides that open one listener. `relayguard.audit.postfix` parses and
evaluates; this module judges and proposes the least edit.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

from relayguard.audit.addresses import is_local_net, parse_ip
from relayguard.audit.base import IPAddress
from relayguard.audit.postfix import (
    Networks,
    Params,
    PostfixConfig,
    RelayDecision,
    Service,
    Setting,
    decide,
    default_networks,
    parse_networks,
    service_listen,
    split_list,
)
from relayguard.audit.readfile import lines_of
from relayguard.catalogue import Rule
from relayguard.findings import Category, Confidence, Edit, Evidence, Finding, Location, Severity
from relayguard.hostinfo import local_addresses

_REF = "https://www.postfix.org/postconf.5.html"
# Examples are main.cf text; where a master.cf matters it follows this line (`split_example`).
MASTER_MARK = "#--- master.cf\n"


def split_example(text: str) -> tuple[str, str | None]:
    """A rule example → (main.cf, master.cf or None)."""
    main, mark, master = text.partition(MASTER_MARK)
    return main, (master if mark else None)

_BASE = """\
compatibility_level = 3.6
myhostname = mx.relayguard.test
mydestination = $myhostname, localhost
inet_interfaces = loopback-only
alias_maps =
alias_database =
"""

MYNETWORKS_OPEN = Rule(
    id="POSTFIX-MYNETWORKS-OPEN",
    server="postfix",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.CRITICAL,
    title="mynetworks trusts the whole Internet (or the outside client)",
    description="`mynetworks` (directly, through a file or a table) includes `0.0.0.0/0`, "
    "`::/0` or a large public range. `permit_mynetworks` then accepts mail for any "
    "destination from those clients.",
    why="Every client in mynetworks may relay: with a world-wide range the server is an open "
    "relay and will be blocklisted within hours.",
    fix="List only loopback, the host's own addresses and real LANs: "
    "`mynetworks = 127.0.0.0/8 [::1]/128 192.0.2.0/24`.",
    reference=f"{_REF}#mynetworks",
    bad=_BASE + "mynetworks = 127.0.0.0/8 0.0.0.0/0\n",
    good=_BASE + "mynetworks = 127.0.0.0/8 [::1]/128\n",
)

MYNETWORKS_PUBLIC = Rule(
    id="POSTFIX-MYNETWORKS-PUBLIC",
    server="postfix",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.HIGH,
    title="mynetworks trusts a public range that is not this host",
    description="`mynetworks` includes a public (Internet-routed) network or address narrower "
    "than a /16 that is not one of this host's own addresses. Only loopback, the host's own "
    "addresses and its private LANs belong there. Severity follows the size: high up to a "
    "/24 (IPv6 /48), medium for smaller ranges, low for one foreign address.",
    why="Every host in that range may relay through this server without authentication: "
    "a neighbour on a hosting network, a customer, or whoever gets the addresses next. One "
    "compromised machine there turns this server into a spam relay.",
    fix="Remove the range; let those hosts submit with SMTP AUTH on port 587, or list only "
    "the single addresses you really run: `mynetworks = 127.0.0.0/8 [::1]/128`.",
    reference=f"{_REF}#mynetworks",
    bad=_BASE + "mynetworks = 127.0.0.0/8 45.0.0.0/17\n",
    good=_BASE + "mynetworks = 127.0.0.0/8 [::1]/128 10.1.0.0/16\n",
)

IMPLICIT_SUBNET = Rule(
    id="POSTFIX-MYNETWORKS-IMPLICIT-SUBNET",
    server="postfix",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.HIGH,
    title="mynetworks unset: Postfix trusts every host on the attached subnets",
    description="With no `mynetworks`, Postfix computes it from `mynetworks_style`: `subnet` "
    "(the default below compatibility_level 2, i.e. when compatibility_level is absent) or "
    "`class` trusts every host on the networks the machine is attached to.",
    why="On a hosting network that is every other customer on the same /20 (or, with "
    "`class`, the whole provider): they may all relay through this server.",
    fix="Set `mynetworks` explicitly (`mynetworks = 127.0.0.0/8 [::1]/128`), and "
    "`compatibility_level = 3.6`.",
    reference=f"{_REF}#mynetworks_style",
    bad="myhostname = mx.relayguard.test\nmydestination = $myhostname, localhost\n"
    "inet_interfaces = all\nalias_maps =\nalias_database =\n"
    "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n",
    good=_BASE + "mynetworks = 127.0.0.0/8 [::1]/128\n",
)

PERMIT_BEFORE = Rule(
    id="POSTFIX-PERMIT-BEFORE-UNAUTH-DEST",
    server="postfix",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.CRITICAL,
    title="a restriction permits outside clients before reject_unauth_destination",
    description="In the lists that decide relaying (`smtpd_relay_restrictions`, "
    "`smtpd_recipient_restrictions`), something an outside client satisfies returns OK "
    "before `reject_unauth_destination`: `check_sender_access`/`check_helo_access` with OK "
    "(the client forges sender and HELO), a `check_client_access` table that says OK to "
    "everyone, `permit_mx_backup` without `permit_mx_backup_networks`, or a plain `permit`.",
    why="OK ends the list, so the relay check never runs: strangers relay mail to any domain.",
    fix="Keep the relay decision in `smtpd_relay_restrictions = permit_mynetworks, "
    "permit_sasl_authenticated, reject_unauth_destination` and put other permits after "
    "`reject_unauth_destination`.",
    reference="https://www.postfix.org/SMTPD_ACCESS_README.html#danger",
    bad=_BASE + "mynetworks = 127.0.0.0/8\nsmtpd_relay_restrictions =\n"
    "smtpd_recipient_restrictions = permit_mynetworks,\n"
    "    check_sender_access inline:{localhost=OK}, reject_unauth_destination\n",
    good=_BASE + "mynetworks = 127.0.0.0/8\nsmtpd_relay_restrictions =\n"
    "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination,\n"
    "    check_sender_access inline:{localhost=OK}\n",
)

MASTER_OVERRIDE = Rule(
    id="POSTFIX-MASTER-OVERRIDE",
    server="postfix",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.CRITICAL,
    title="a master.cf -o override opens one smtpd listener",
    description="A service in master.cf overrides a relay parameter with `-o` "
    "(`smtpd_relay_restrictions`, `smtpd_recipient_restrictions`, `mynetworks`, …) so that "
    "this listener relays for outside clients although main.cf looks safe.",
    why="main.cf reviews miss it: `postconf -n` does not show per-service overrides, but the "
    "extra port (often submission or a custom port) is an open relay.",
    fix="Remove the `-o` line or make it restrictive (the stock submission example "
    "`-o smtpd_relay_restrictions=permit_sasl_authenticated,reject`). `postconf -P` lists them.",
    reference="https://www.postfix.org/master.5.html",
    bad=_BASE + "mynetworks = 127.0.0.0/8\n" + MASTER_MARK
    + "smtp inet n - n - - smtpd\n2525 inet n - n - - smtpd\n"
    "  -o { smtpd_relay_restrictions = permit_mynetworks,\n"
    "       check_client_access cidr:{{0.0.0.0/0 OK}}, reject_unauth_destination }\n",
    good=_BASE + "mynetworks = 127.0.0.0/8\n" + MASTER_MARK
    + "smtp inet n - n - - smtpd\n2525 inet n - n - - smtpd\n"
    "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n",
)

SASL_CLEARTEXT = Rule(
    id="POSTFIX-SASL-CLEARTEXT",
    server="postfix",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.MEDIUM,
    title="SASL AUTH offered without TLS: relay passwords travel in clear",
    description="`smtpd_sasl_auth_enable = yes` while `smtpd_tls_auth_only` is `no` and TLS "
    "is not mandatory, and `permit_sasl_authenticated` gates relaying.",
    why="Sniffed or guessed accounts are the most common way spammers relay through a "
    "correctly configured Postfix.",
    fix="`smtpd_tls_auth_only = yes`.",
    reference=f"{_REF}#smtpd_tls_auth_only",
    bad=_BASE + "mynetworks = 127.0.0.0/8\nsmtpd_sasl_auth_enable = yes\n",
    good=_BASE + "mynetworks = 127.0.0.0/8\nsmtpd_sasl_auth_enable = yes\n"
    "smtpd_tls_auth_only = yes\n",
)

RELAY_DOMAINS_WILDCARD = Rule(
    id="POSTFIX-RELAY-DOMAINS-WILDCARD",
    server="postfix",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.CRITICAL,
    title="relay_domains matches any domain",
    description="`relay_domains` contains `*`, `.`, a bare top-level domain (`com`, `.com`) "
    "or a `static:` table: `reject_unauth_destination` then treats those recipients as "
    "authorised destinations.",
    why="Anyone can relay to every address in those domains.",
    fix="List only the domains this server is a backup MX or gateway for.",
    reference=f"{_REF}#relay_domains",
    bad=_BASE + "mynetworks = 127.0.0.0/8\nrelay_domains = example.org, com\n",
    good=_BASE + "mynetworks = 127.0.0.0/8\nrelay_domains = example.org\n",
)

XCLIENT_BROAD = Rule(
    id="POSTFIX-XCLIENT-BROAD",
    server="postfix",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.CRITICAL,
    title="smtpd_authorized_xclient_hosts lets outside clients claim any client address",
    description="Clients in `smtpd_authorized_xclient_hosts` may send `XCLIENT ADDR=…` and "
    "be treated as that address. When the list covers outside clients, they claim "
    "`ADDR=127.0.0.1` and pass `permit_mynetworks`.",
    why="Every client the list covers becomes a trusted local client: an open relay that "
    "logs the spam as coming from localhost.",
    fix="Leave it empty (the default), or list only the content filter or proxy that "
    "really needs XCLIENT: `smtpd_authorized_xclient_hosts = 127.0.0.1`.",
    reference=f"{_REF}#smtpd_authorized_xclient_hosts",
    bad=_BASE + "mynetworks = 127.0.0.0/8\nsmtpd_authorized_xclient_hosts = 0.0.0.0/0\n",
    good=_BASE + "mynetworks = 127.0.0.0/8\nsmtpd_authorized_xclient_hosts = 127.0.0.1\n",
)

SASL_ANONYMOUS = Rule(
    id="POSTFIX-SASL-ANONYMOUS",
    server="postfix",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.CRITICAL,
    title="anonymous SASL logins count as authenticated for relaying",
    description="`smtpd_sasl_auth_enable = yes` with `smtpd_sasl_security_options` lacking "
    "`noanonymous`, while `permit_sasl_authenticated` gates relaying: an ANONYMOUS login "
    "(offered by the SASL backend) passes it.",
    why="Anybody authenticates without a password and relays.",
    fix="`smtpd_sasl_security_options = noanonymous` (the default).",
    reference=f"{_REF}#smtpd_sasl_security_options",
    bad=_BASE + "mynetworks = 127.0.0.0/8\nsmtpd_sasl_auth_enable = yes\n"
    "smtpd_tls_auth_only = yes\nsmtpd_sasl_security_options =\n",
    good=_BASE + "mynetworks = 127.0.0.0/8\nsmtpd_sasl_auth_enable = yes\n"
    "smtpd_tls_auth_only = yes\nsmtpd_sasl_security_options = noanonymous\n",
)

UNTRUSTED_ROUTING = Rule(
    id="POSTFIX-UNTRUSTED-ROUTING",
    server="postfix",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.MEDIUM,
    title="allow_untrusted_routing = yes: sender-specified routing is relayed",
    description="With `allow_untrusted_routing = yes`, addresses such as "
    "`user%elsewhere@relaydomain` or `user@elsewhere@relaydomain` sent by untrusted clients "
    "to a domain in relay_domains are routed onwards.",
    why="A backup MX or gateway becomes a relay to arbitrary destinations behind it.",
    fix="`allow_untrusted_routing = no` (the default).",
    reference=f"{_REF}#allow_untrusted_routing",
    bad=_BASE + "mynetworks = 127.0.0.0/8\nallow_untrusted_routing = yes\n",
    good=_BASE + "mynetworks = 127.0.0.0/8\nallow_untrusted_routing = no\n",
)

FORBIDDEN_CLEARED = Rule(
    id="POSTFIX-FORBIDDEN-COMMANDS-CLEARED",
    server="postfix",
    category=Category.HARDENING,
    severity=Severity.MEDIUM,
    title="smtpd_forbidden_commands no longer stops HTTP requests relayed by a proxy",
    description="`smtpd_forbidden_commands` lacks GET, POST or CONNECT. By default Postfix "
    "hangs up on those, so a web proxy that forwards a stranger's request to port 25 cannot "
    "smuggle SMTP commands in its body.",
    why="Open HTTP proxies (and SSRF bugs) can then speak SMTP to this server, from a "
    "trusted local address.",
    fix="Restore the default: remove the setting, or "
    "`smtpd_forbidden_commands = CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}`.",
    reference=f"{_REF}#smtpd_forbidden_commands",
    bad=_BASE + "mynetworks = 127.0.0.0/8\nsmtpd_forbidden_commands = CONNECT\n",
    good=_BASE + "mynetworks = 127.0.0.0/8\nsmtpd_forbidden_commands = CONNECT GET POST\n",
)

PROXY_PROTOCOL_EXPOSED = Rule(
    id="POSTFIX-PROXY-PROTOCOL-EXPOSED",
    server="postfix",
    category=Category.OPEN_SMTP_RELAY,
    severity=Severity.CRITICAL,
    title="smtpd trusts a PROXY protocol header on a listener strangers reach",
    description="`smtpd_upstream_proxy_protocol = haproxy` makes smtpd take the client "
    "address from the PROXY header the connecting side sends. On a listener that is not "
    "bound to the load balancer's private network, anyone sends `PROXY TCP4 127.0.0.1 …`.",
    why="The forged address passes `permit_mynetworks`: an open relay.",
    fix="Bind the PROXY-protocol service to a private address only the balancer reaches "
    "(e.g. a master.cf entry `10.0.0.5:25 inet … smtpd -o "
    "smtpd_upstream_proxy_protocol=haproxy`).",
    reference=f"{_REF}#smtpd_upstream_proxy_protocol",
    bad=_BASE.replace("inet_interfaces = loopback-only", "inet_interfaces = all")
    + "mynetworks = 127.0.0.0/8\nsmtpd_upstream_proxy_protocol = haproxy\n",
    good=_BASE + "mynetworks = 127.0.0.0/8\nsmtpd_upstream_proxy_protocol = haproxy\n",
)

NO_WORKING_RELAY_CHECK = Rule(
    id="POSTFIX-LITERAL-PERMIT",
    server="postfix",
    category=Category.HARDENING,
    severity=Severity.INFO,
    title="smtpd refuses to run: no working relay check before a permit",
    description="Neither `smtpd_relay_restrictions` nor `smtpd_recipient_restrictions` has "
    "`reject_unauth_destination` (or defer_unauth_destination, reject, defer, "
    "defer_if_permit) before a literal `permit` or the end of the list — for example both "
    "empty, as with no compatibility_level. Postfix then stops smtpd with a fatal error.",
    why="Not open — no mail is received at all — but the quick 'fix' people apply under "
    "pressure is often the open one.",
    fix="`smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, "
    "reject_unauth_destination`.",
    reference=f"{_REF}#smtpd_relay_restrictions",
    bad=_BASE + "mynetworks = 127.0.0.0/8\nsmtpd_relay_restrictions =\n"
    "smtpd_recipient_restrictions = permit_mynetworks\n",
    good=_BASE + "mynetworks = 127.0.0.0/8\nsmtpd_relay_restrictions =\n"
    "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n",
)

RULES: tuple[Rule, ...] = (MYNETWORKS_OPEN, MYNETWORKS_PUBLIC, IMPLICIT_SUBNET, PERMIT_BEFORE,
                           MASTER_OVERRIDE,
                           SASL_CLEARTEXT, RELAY_DOMAINS_WILDCARD, XCLIENT_BROAD,
                           SASL_ANONYMOUS, UNTRUSTED_ROUTING, FORBIDDEN_CLEARED,
                           PROXY_PROTOCOL_EXPOSED, NO_WORKING_RELAY_CHECK)

LOOPBACK = ipaddress.ip_address("127.0.0.1")
TRUSTED_LIST = "127.0.0.1/32 [::1]/128"


def networks_for(params: Params, cfg: PostfixConfig, root: Path | None) -> Networks:
    setting = params.setting("mynetworks")
    if setting is None:
        return default_networks(params.get("mynetworks_style").strip() or "host",
                                split_list(params.get("inet_interfaces")))
    return parse_networks(params.get("mynetworks"), setting, root, cfg.errors, cfg.files)


Net = ipaddress.IPv4Network | ipaddress.IPv6Network
# Placeholders in documentation and examples: nobody's hosts, so trusting them opens nothing.
_DOC_NETS = tuple(ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))


def _public(net: Net) -> bool:
    """Does `net` hold Internet addresses (not only loopback, private LAN or doc space)?"""
    return not is_local_net(net) and not any(
        net.version == d.version and net.subnet_of(d) for d in _DOC_NETS)  # type: ignore[arg-type]


def trust_severity(net: Net, client: IPAddress, own: frozenset[IPAddress]) -> Severity | None:
    """How bad trusting `net` is: critical for the world, the outside client or a public /16
    (IPv6 /32) or wider; then by size; None for local nets and the host's own addresses."""
    if client in net or net.prefixlen == 0:
        return Severity.CRITICAL
    if not _public(net) or (net.num_addresses == 1 and net.network_address in own):
        return None
    wide, site = (16, 24) if net.version == 4 else (32, 48)
    if net.prefixlen <= wide:
        return Severity.CRITICAL
    if net.prefixlen <= site:
        return Severity.HIGH
    return Severity.LOW if net.num_addresses == 1 else Severity.MEDIUM


def _open_net(net: Net, client: IPAddress) -> bool:
    return trust_severity(net, client, frozenset()) is Severity.CRITICAL


def own_addresses(params: Params, root: Path | None) -> frozenset[IPAddress]:
    """The host's own addresses: those the config binds to, and on a live system (no --root)
    the kernel's list; trusting exactly one of them is what `mynetworks_style = host` does."""
    out: set[IPAddress] = set()
    for name in ("inet_interfaces", "proxy_interfaces", "smtp_bind_address",
                 "smtp_bind_address6"):
        for item in split_list(params.get(name)):
            addr = parse_ip(item)
            if addr is not None:
                out.add(addr)
    if root is None:
        out.update(a for a in map(parse_ip, local_addresses()) if a is not None)
    return frozenset(out)


def _ev(setting: Setting | None, text: str | None = None) -> Evidence:
    if setting is None:
        return Evidence("note", text or "(built-in default)")
    return Evidence("config", f"{setting.where}: {text or setting.render()}",
                    Location(setting.path, setting.line))


def _lines_of(cfg: PostfixConfig, path: str) -> list[str]:
    if path == str(cfg.directory / "main.cf") or path == next(iter(cfg.files), ""):
        return cfg.main_text
    if path == cfg.master_path:
        return cfg.master_text
    return lines_of(path) or []


def rewrite_setting(cfg: PostfixConfig, setting: Setting, items: list[str]) -> Edit | None:
    """An Edit that replaces the setting's line(s) with the new list value."""
    lines = _lines_of(cfg, setting.path)
    if setting.line < 1 or setting.end_line > len(lines):
        return None
    old = tuple(lines[setting.line - 1: setting.end_line])
    if setting.service is not None:
        # Dropping the override falls back to main.cf (judged on its own).
        if not lines[setting.line - 1].strip().startswith("-o"):
            return None
        return Edit(setting.path, setting.line, old, ())
    return Edit(setting.path, setting.line, old, (f"{setting.name} = {join_list(items)}",))


def join_list(items: list[str]) -> str:
    """Restriction tokens joined as people write them: `check_x_access type:table` together."""
    out: list[str] = []
    for item in items:
        if out and re.match(r"^[a-z]+:", item) and out[-1].split()[-1].startswith("check_"):
            out[-1] += f" {item}"
        else:
            out.append(item)
    return ", ".join(out)


def _append(cfg: PostfixConfig, text: str) -> Edit:
    main = str(cfg.directory / "main.cf") if cfg.files else ""
    return Edit(cfg.files[0] if cfg.files else main, len(cfg.main_text) + 1, (), (text,))


def _rule(base: Rule, setting: Setting | None) -> Rule:
    return MASTER_OVERRIDE if setting is not None and setting.service is not None else base


def audit_config(cfg: PostfixConfig, client: IPAddress,
                 root: Path | None) -> tuple[list[Finding], list[dict[str, Any]]]:
    """All findings for the config and the `mta` facts (one entry per smtpd service)."""
    findings: dict[tuple[str, str], Finding] = {}
    facts: list[dict[str, Any]] = []

    def add(f: Finding) -> None:
        findings.setdefault((f.rule, str(f.location) + f.title), f)

    services = cfg.smtpd_services()
    for svc in services:
        params = cfg.params(svc.overrides)
        nets = networks_for(params, cfg, root)
        # Judge the restriction lists for a client mynetworks does not cover, even when this
        # one is covered: an open mynetworks is its own finding, and fixing it must not
        # uncover a second hole only on the next run.
        decision = decide(params, False, client, root, cfg.errors, cfg.files, cfg.tables)
        trusted_decision = decide(params, True, LOOPBACK, root, cfg.errors, cfg.files, cfg.tables)
        listen = service_listen(svc, params, cfg.services)
        label = f"service {svc.name} ({svc.path}:{svc.line})"
        _check_mynetworks(cfg, svc, params, nets, client, trusted_decision, label, add, root)
        _check_permit(cfg, svc, params, decision, False, label, add)
        _check_relay_domains(cfg, params, add)
        _check_sasl(cfg, svc, params, add)
        _check_xclient(cfg, params, client, trusted_decision, label, add)
        _check_simple(cfg, svc, params, client, listen, label, add)
        if decision.fatal:
            _report_fatal(cfg, params, label, add)
        facts.append(_mta_fact(svc, params, nets, trusted_decision, listen))
    _check_implicit(cfg, client, add, root)
    return list(findings.values()), facts


def _mta_fact(svc: Service, params: Params, nets: Networks, td: RelayDecision,
              listen: list[str]) -> dict[str, Any]:
    setting = params.setting("mynetworks")
    forbidden = {w.upper() for w in split_list(params.get("smtpd_forbidden_commands"))}
    ev = []
    if setting is not None:
        ev.append({"path": setting.path, "line": setting.line, "text": setting.render()})
    else:
        ev.append({"path": "", "line": 0, "text": "mynetworks unset: mynetworks_style = "
                   f"{params.get('mynetworks_style')} (trusts {' '.join(nets.strings())})"})
    return {
        "server": "postfix",
        "service": svc.name,
        "listen": listen,
        "trusted_networks": nets.strings(),
        "trusts_loopback": nets.contains(LOOPBACK)[0],
        "relays_for_trusted": td.accepted and not td.fatal,
        "forbids_http_commands": {"GET", "POST", "CONNECT"} <= forbidden,
        "evidence": ev,
    }


def _check_mynetworks(cfg: PostfixConfig, svc: Service, params: Params, nets: Networks,
                      client: IPAddress, td: RelayDecision, label: str, add,
                      root: Path | None) -> None:
    setting = params.setting("mynetworks")
    if setting is None:
        return
    own = own_addresses(params, root)
    relays = td.accepted and not td.fatal
    flagged = [(n, p, ln, sev) for n, p, ln, neg in nets.nets
               if not neg and (sev := trust_severity(n, client, own)) is not None]
    # one rewrite of the setting line drops every flagged item on it (edits must not clash)
    keep = [i for i in split_list(setting.value)
            if not any(_item_is(x, n) for x in split_list(params.expand(i, 0))
                       for n, p, ln, _ in flagged if (p, ln) == (setting.path, setting.line))]
    line_edit = rewrite_setting(cfg, setting, keep or split_list(TRUSTED_LIST))
    for net, path, line, size_sev in flagged:
        wide = size_sev is Severity.CRITICAL
        rule = _rule(MYNETWORKS_OPEN if wide else MYNETWORKS_PUBLIC, setting)
        sev = size_sev if relays else min(size_sev, Severity.MEDIUM)
        edits: list[Edit] = []
        if path == setting.path and line == setting.line:
            if line_edit:
                edits.append(line_edit)
            where = Location(setting.path, setting.line)
            ev = [_ev(setting)]
        else:
            lines = _lines_of(cfg, path)
            if 0 < line <= len(lines):
                edits.append(Edit(path, line, (lines[line - 1],), ()))
            where = Location(path, line)
            ev = [_ev(setting), Evidence("config", f"{path}:{line}: "
                                         f"{lines[line - 1] if 0 < line <= len(lines) else net}",
                                         where)]
        who = f"the outside client {client}" if client in net else "the whole Internet" \
            if net.prefixlen == 0 else f"the public range {net}" if wide else \
            "a public address that is not this host's" if net.num_addresses == 1 else \
            f"{net.num_addresses} public addresses that are not this host's" \
            if net.version == 4 else f"a public /{net.prefixlen} that is not this host's"
        prefix = f"{label}: " if setting.service else ""
        add(rule.finding(f"{prefix}mynetworks includes {net}: {who} may relay",
                         location=where, evidence=ev, severity=sev,
                         category=Category.OPEN_SMTP_RELAY, confidence=Confidence.LIKELY,
                         edits=edits,
                         fix=(MYNETWORKS_OPEN if wide else MYNETWORKS_PUBLIC).fix))


def _item_is(item: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    cleaned = item.replace("[", "").replace("]", "")
    try:
        return ipaddress.ip_network(cleaned, strict=False) == net
    except ValueError:
        return False


def _check_permit(cfg: PostfixConfig, svc: Service, params: Params, decision: RelayDecision,
                  trusted: bool, label: str, add) -> None:
    if trusted or not decision.accepted or decision.fatal:
        return
    opener = decision.opener
    if opener is None:
        return
    list_name, verdict = opener
    setting = params.setting(list_name)
    rule = _rule(PERMIT_BEFORE, setting)
    ev = [_ev(setting, None)]
    if verdict.entry is not None:
        e = verdict.entry
        ev.append(Evidence("config", f"{e.path}:{e.line}: {e.key} {e.result}" if e.line else
                           f"{e.path}: {e.key}={e.result}",
                           Location(e.path, e.line) if e.line else None))
    for other, v in decision.verdicts.items():
        if other != list_name and v.outcome == "pass" and params.setting(other) is not None:
            ev.append(_ev(params.setting(other), None))
    why = "the client forges it" if verdict.forgeable else "it matches every client"
    edits: list[Edit] = []
    if setting is not None:
        items = split_list(params.raw(list_name))
        # the verdict's index is into the expanded list: it holds for the written one when
        # each written item is one expanded item (`cidr:${config_directory}/x` is; `$list`
        # expanding to several is not)
        expanded = split_list(params.get(list_name))
        aligned = len(items) == len(expanded) and all(
            "$" in a or a == b for a, b in zip(items, expanded, strict=True))
        if 0 <= verdict.index < len(items) and aligned:
            items.insert(verdict.index, "reject_unauth_destination")
            e2 = rewrite_setting(cfg, setting, items)
            if e2:
                edits.append(e2)
    prefix = f"{label}: " if setting is not None and setting.service else ""
    title = (f"{prefix}{list_name}: '{verdict.item}' permits outside clients before "
             f"reject_unauth_destination ({why}): open relay")
    loc = Location(setting.path, setting.line) if setting else Location(cfg.files[0])
    add(rule.finding(title, location=loc, evidence=ev, confidence=Confidence.LIKELY,
                     severity=Severity.CRITICAL, category=Category.OPEN_SMTP_RELAY,
                     edits=edits, fix=PERMIT_BEFORE.fix))


def _check_relay_domains(cfg: PostfixConfig, params: Params, add) -> None:
    setting = params.setting("relay_domains")
    if setting is None:
        return
    items = split_list(params.get("relay_domains"))
    bad = [i for i in items if i in ("*", ".") or i.startswith("static:")
           or ("." not in i.strip(".") and ":" not in i and "/" not in i and i.strip("."))]
    # Single-label names are TLDs (com, .net) unless they are the local host name.
    bad = [b for b in bad if b.lower() not in ("localhost",)]
    if not bad:
        return
    keep = [i for i in split_list(setting.value) if i not in bad]
    e = rewrite_setting(cfg, setting, keep)
    add(_rule(RELAY_DOMAINS_WILDCARD, setting).finding(
        f"relay_domains contains {', '.join(bad)}: mail to any such domain is relayed",
        location=Location(setting.path, setting.line), evidence=[_ev(setting)],
        severity=Severity.CRITICAL, category=Category.OPEN_SMTP_RELAY,
        edits=[e] if e else [], fix=RELAY_DOMAINS_WILDCARD.fix))


def _check_sasl(cfg: PostfixConfig, svc: Service, params: Params, add) -> None:
    if params.get("smtpd_sasl_auth_enable").strip().lower() != "yes":
        return
    if params.get("smtpd_tls_auth_only").strip().lower() == "yes":
        return
    if params.get("smtpd_tls_security_level").strip().lower() == "encrypt":
        return
    if svc.name in ("smtps", "submissions", "465") and \
            params.get("smtpd_tls_wrappermode").strip().lower() == "yes":
        return
    gate = split_list(params.get("smtpd_relay_restrictions")) + \
        split_list(params.get("smtpd_recipient_restrictions"))
    if "permit_sasl_authenticated" not in gate:
        return
    setting = params.setting("smtpd_sasl_auth_enable")
    add(SASL_CLEARTEXT.finding(
        f"service {svc.name}: AUTH without mandatory TLS (smtpd_tls_auth_only = no)",
        location=Location(setting.path, setting.line) if setting else Location(cfg.files[0]),
        evidence=[_ev(setting)], confidence=Confidence.LIKELY,
        edits=[_append(cfg, "smtpd_tls_auth_only = yes")]))


def _check_implicit(cfg: PostfixConfig, client: IPAddress, add, root: Path | None) -> None:
    params = cfg.params()
    if params.setting("mynetworks") is not None:
        return
    style = params.get("mynetworks_style").strip()
    if style not in ("subnet", "class"):
        return
    interfaces = split_list(params.get("inet_interfaces")) or ["all"]
    nets = default_networks(style, interfaces)
    outside_reaches = any(not _is_loopback_iface(i) for i in interfaces)
    if not outside_reaches and not nets.contains(client)[0]:
        return  # bound to loopback only, and the computed networks do not cover the client
    st = params.setting("mynetworks_style")
    compat = params.setting("compatibility_level")
    ev = [_ev(st) if st else Evidence("note", f"mynetworks_style = {style} is the built-in "
                                      "default because compatibility_level is "
                                      f"{params.get('compatibility_level') or '0'} (< 2)")]
    if compat is not None:
        ev.append(_ev(compat))
    loc = Location(st.path, st.line) if st else (
        Location(compat.path, compat.line) if compat else Location(cfg.files[0]))
    # as for an explicit mynetworks: the trust is latent (medium) while no restriction list
    # lets trusted clients relay (no permit_mynetworks, or smtpd refuses to run)
    td = decide(params, True, LOOPBACK, root, cfg.errors, cfg.files, cfg.tables)
    add(IMPLICIT_SUBNET.finding(
        f"mynetworks unset and mynetworks_style = {style}: every host on the attached "
        f"{'networks (whole class A/B/C)' if style == 'class' else 'subnets'} may relay",
        location=loc, evidence=ev, confidence=Confidence.LIKELY,
        severity=Severity.HIGH if td.accepted and not td.fatal else Severity.MEDIUM,
        edits=[_append(cfg, f"mynetworks = {TRUSTED_LIST}")]))


def _remove_line(cfg: PostfixConfig, setting: Setting) -> Edit | None:
    lines = _lines_of(cfg, setting.path)
    if setting.line < 1 or setting.end_line > len(lines):
        return None
    return Edit(setting.path, setting.line, tuple(lines[setting.line - 1: setting.end_line]), ())


def _check_xclient(cfg: PostfixConfig, params: Params, client: IPAddress, td: RelayDecision,
                   label: str, add) -> None:
    setting = params.setting("smtpd_authorized_xclient_hosts")
    if setting is None or not params.get("smtpd_authorized_xclient_hosts").strip():
        return
    nets = parse_networks(params.get("smtpd_authorized_xclient_hosts"), setting, None,
                          cfg.errors, cfg.files)
    bad = [n for n, _, _, neg in nets.nets if not neg and _open_net(n, client)]
    if not bad:
        return
    keep = [i for i in split_list(setting.value)
            if not any(_item_is(x, n) for n in bad for x in split_list(params.expand(i, 0)))]
    edit = rewrite_setting(cfg, setting, keep) if keep else _remove_line(cfg, setting)
    prefix = f"{label}: " if setting.service else ""
    sev = Severity.CRITICAL if td.accepted and not td.fatal else Severity.HIGH
    add(_rule(XCLIENT_BROAD, setting).finding(
        f"{prefix}smtpd_authorized_xclient_hosts includes {', '.join(map(str, bad))}: those "
        "clients may claim ADDR=127.0.0.1 and relay", location=Location(setting.path,
                                                                          setting.line),
        evidence=[_ev(setting)], severity=sev, category=Category.OPEN_SMTP_RELAY,
        confidence=Confidence.LIKELY, edits=[edit] if edit else [], fix=XCLIENT_BROAD.fix))


def _check_simple(cfg: PostfixConfig, svc: Service, params: Params, client: IPAddress,
                  listen: list[str], label: str, add) -> None:
    """Single-parameter rules: anonymous SASL, untrusted routing, forbidden commands,
    PROXY protocol on a reachable listener."""
    gate = split_list(params.get("smtpd_relay_restrictions")) + \
        split_list(params.get("smtpd_recipient_restrictions"))

    def report(rule: Rule, name: str, title: str, edit: Edit | None) -> None:
        setting = params.setting(name)
        if setting is None:
            return
        prefix = f"{label}: " if setting.service else ""
        add(_rule(rule, setting).finding(
            prefix + title, location=Location(setting.path, setting.line),
            evidence=[_ev(setting)], severity=rule.severity, category=rule.category,
            confidence=Confidence.LIKELY, edits=[edit] if edit else [], fix=rule.fix))

    def set_to(name: str, value: str) -> Edit | None:
        setting = params.setting(name)
        if setting is None:
            return None
        if setting.service is not None:
            return rewrite_setting(cfg, setting, [])
        lines = _lines_of(cfg, setting.path)
        if setting.end_line > len(lines):
            return None
        return Edit(setting.path, setting.line,
                    tuple(lines[setting.line - 1: setting.end_line]), (f"{name} = {value}",))

    if params.get("smtpd_sasl_auth_enable").strip().lower() == "yes" and \
            "permit_sasl_authenticated" in gate and \
            "noanonymous" not in split_list(params.get("smtpd_sasl_security_options")):
        report(SASL_ANONYMOUS, "smtpd_sasl_security_options",
               "smtpd_sasl_security_options lacks noanonymous: anonymous SASL relays",
               set_to("smtpd_sasl_security_options", "noanonymous"))
    if params.get("allow_untrusted_routing").strip().lower() == "yes":
        report(UNTRUSTED_ROUTING, "allow_untrusted_routing",
               "allow_untrusted_routing = yes: user%elsewhere@relaydomain is relayed",
               set_to("allow_untrusted_routing", "no"))
    forbidden = {w.upper() for w in split_list(params.get("smtpd_forbidden_commands"))}
    missing = [c for c in ("CONNECT", "GET", "POST") if c not in forbidden]
    if missing:
        setting = params.setting("smtpd_forbidden_commands")
        report(FORBIDDEN_CLEARED, "smtpd_forbidden_commands",
               f"smtpd_forbidden_commands lacks {', '.join(missing)}: HTTP requests relayed "
               "by a proxy are not cut off",
               _remove_line(cfg, setting) if setting is not None else None)
    if params.get("smtpd_upstream_proxy_protocol").strip().lower() == "haproxy" and \
            any(_reachable(x, client) for x in listen):
        setting = params.setting("smtpd_upstream_proxy_protocol")
        report(PROXY_PROTOCOL_EXPOSED, "smtpd_upstream_proxy_protocol",
               f"service {svc.name} takes the client address from PROXY headers on "
               f"{', '.join(listen)}, which outside clients reach",
               _remove_line(cfg, setting) if setting is not None else None)


def _reachable(listen: str, client: IPAddress) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return True
    return not addr.is_loopback or client.is_loopback


STOCK_RELAY = ["permit_mynetworks", "permit_sasl_authenticated", "reject_unauth_destination"]


def _report_fatal(cfg: PostfixConfig, params: Params, label: str, add) -> None:
    relay = params.setting("smtpd_relay_restrictions")
    recipient = params.setting("smtpd_recipient_restrictions")
    ev = [_ev(s) for s in (relay, recipient) if s is not None] or [Evidence(
        "note", "both lists are empty by default below compatibility_level 1 "
        f"(compatibility_level = {params.get('compatibility_level') or '0'})")]
    if relay is not None:
        edit = rewrite_setting(cfg, relay, STOCK_RELAY)
    else:
        edit = _append(cfg, f"smtpd_relay_restrictions = {', '.join(STOCK_RELAY)}")
    where = relay or recipient
    loc = Location(where.path, where.line) if where else Location(cfg.files[0])
    prefix = f"{label}: " if where is not None and where.service else ""
    add(NO_WORKING_RELAY_CHECK.finding(
        f"{prefix}no working reject_unauth_destination in smtpd_relay_restrictions or "
        "smtpd_recipient_restrictions: smtpd exits with a fatal error (closed, but down)",
        location=loc, evidence=ev, confidence=Confidence.LIKELY,
        edits=[edit] if edit else []))


def _is_loopback_iface(item: str) -> bool:
    item = item.strip("[]").lower()
    if item in ("loopback-only", "localhost"):
        return True
    try:
        return ipaddress.ip_address(item).is_loopback
    except ValueError:
        return False  # "all" or a name
