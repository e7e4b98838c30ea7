"""Agreement with reality: a real Postfix (tests/servers/postfix.py) on 127.0.8.21 with each
fixture; the untrusted 127.0.8.250 asks RCPT TO a foreign domain. A finding must exist
exactly when Postfix answers 250; after applying the finding's edits and restarting, Postfix
says `Relay access denied`."""

from __future__ import annotations

import ipaddress
import shutil
import smtplib
from pathlib import Path

import pytest

from relayguard.audit.base import AuditOptions
from relayguard.audit.postfix import PostfixAuditor
from tests.audit.relay_helpers import STRANGER, apply_edits, rcpt
from tests.servers.base import wait_port
from tests.servers.postfix import main_cf_base, postfix

pytestmark = [pytest.mark.server,
              pytest.mark.skipif(shutil.which("postfix") is None
                                 and not Path("/usr/sbin/postfix").exists(),
                                 reason="postfix not installed")]

HOST, PORT = "127.0.8.21", 2526
OPTIONS = AuditOptions(outside_client=ipaddress.ip_address(STRANGER))

# (id, main.cf lines, map files, sender, rule or None)
CASES = [
    ("mynetworks_world", "mynetworks = 127.0.0.1/32 0.0.0.0/0\n", {}, "a@outside.example",
     "POSTFIX-MYNETWORKS-OPEN"),
    ("forged_sender_ok", "mynetworks = 127.0.0.1/32\nsmtpd_relay_restrictions =\n"
     "smtpd_recipient_restrictions = permit_mynetworks,\n"
     "    check_sender_access inline:{localhost=OK}, reject_unauth_destination\n", {},
     "user@localhost", "POSTFIX-PERMIT-BEFORE-UNAUTH-DEST"),
    ("client_map_ok_for_all", "mynetworks = 127.0.0.1/32\n"
     "smtpd_relay_restrictions = permit_mynetworks,\n"
     "    check_client_access cidr:{dir}/clients.cidr, reject_unauth_destination\n",
     {"clients.cidr": "192.168.0.0/16 OK\n0.0.0.0/0 OK\n"}, "a@outside.example",
     "POSTFIX-PERMIT-BEFORE-UNAUTH-DEST"),
    # ${config_directory} is where this main.cf lives (postfix -c DIR), not /etc/postfix:
    # the audit once looked for the map in this machine's /etc/postfix and missed the relay
    ("client_map_in_config_directory", "mynetworks = 127.0.0.1/32\n"
     "smtpd_relay_restrictions = permit_mynetworks,\n"
     "    check_client_access cidr:${config_directory}/clients.cidr,"
     " reject_unauth_destination\n",
     {"clients.cidr": "0.0.0.0/0 OK\n"}, "a@outside.example",
     "POSTFIX-PERMIT-BEFORE-UNAUTH-DEST"),
    ("style_class", "mynetworks_style = class\n", {}, "a@outside.example",
     "POSTFIX-MYNETWORKS-IMPLICIT-SUBNET"),
    # 127.0.0.1 is a /8 on lo: listening there makes subnet-style trust all of 127/8.
    ("compat_absent_subnet", "compatibility_level = 0\n"
     "inet_interfaces = 127.0.0.1, 127.0.8.21\nsmtpd_relay_restrictions = "
     "permit_mynetworks, reject_unauth_destination\n", {}, "a@outside.example",
     "POSTFIX-MYNETWORKS-IMPLICIT-SUBNET"),
    ("compat_absent_subnet_of_own_address", "compatibility_level = 0\n"
     "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n", {},
     "a@outside.example", None),
    ("stock_relay_list_protects", "mynetworks = 127.0.0.1/32\n"
     "smtpd_recipient_restrictions = permit\n", {}, "a@outside.example", None),
    ("client_map_lan_only", "mynetworks = 127.0.0.1/32\n"
     "smtpd_relay_restrictions = permit_mynetworks,\n"
     "    check_client_access cidr:{dir}/clients.cidr, reject_unauth_destination\n",
     {"clients.cidr": "192.168.0.0/16 OK\n"}, "a@outside.example", None),
    # regexp tables match the client address string against each /pattern/
    ("client_regexp_ok_for_all", "mynetworks = 127.0.0.1/32\n"
     "smtpd_relay_restrictions = permit_mynetworks,\n"
     "    check_client_access regexp:{dir}/clients.regexp, reject_unauth_destination\n",
     {"clients.regexp": "/^192\\.168\\./ OK\n/^127\\.0\\.8\\./ OK\n"}, "a@outside.example",
     "POSTFIX-PERMIT-BEFORE-UNAUTH-DEST"),
    ("client_regexp_lan_only", "mynetworks = 127.0.0.1/32\n"
     "smtpd_relay_restrictions = permit_mynetworks,\n"
     "    check_client_access regexp:{dir}/clients.regexp, reject_unauth_destination\n",
     {"clients.regexp": "/^192\\.168\\./ OK\n/^10\\./ OK\n"}, "a@outside.example", None),
    # Postfix also looks up the client name, "unknown" without reverse DNS: a negated
    # address pattern matches it
    ("client_regexp_negation_hits_unknown_name", "mynetworks = 127.0.0.1/32\n"
     "smtpd_relay_restrictions = permit_mynetworks,\n"
     "    check_client_access regexp:{dir}/clients.regexp, reject_unauth_destination\n",
     {"clients.regexp": "!/^127\\.0\\.8\\./ OK\n"}, "a@outside.example",
     "POSTFIX-PERMIT-BEFORE-UNAUTH-DEST"),
    ("forged_sender_after_check", "mynetworks = 127.0.0.1/32\nsmtpd_relay_restrictions =\n"
     "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination,\n"
     "    check_sender_access inline:{localhost=OK}\n", {}, "user@localhost", None),
]


def _conf_text(main: str, workdir: Path) -> str:
    return main.replace("{dir}", str(workdir / "conf"))


@pytest.mark.parametrize(("name", "main", "files", "sender", "rule"), CASES,
                         ids=[c[0] for c in CASES])
def test_verdict_matches_real_postfix(tmp_path: Path, name: str, main: str,
                                      files: dict[str, str], sender: str,
                                      rule: str | None) -> None:
    workdir = Path("/tmp") / f"rg-audit-pf-{name}"
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        with postfix(HOST, PORT, _conf_text(main, workdir), files=files,
                     workdir=workdir) as mta:
            code, text = rcpt(HOST, PORT, sender=sender)
            conf_dir = Path(str(mta.extra["conf_dir"]))
            result = PostfixAuditor().audit(conf_dir, OPTIONS)
            diag = f"{code} {text}\n{mta.diagnostics()}"
            assert result.errors == [], diag
            assert [f.rule for f in result.findings] == ([rule] if rule else []), diag
            assert (code == 250) is (rule is not None), diag
            if rule is None:
                assert code in (454, 554) and "Relay access denied" in text, diag
            main_cf = (conf_dir / "main.cf").read_text()
            fixed = result.findings
        if not fixed:
            return
        apply_edits(fixed)
        patched = (conf_dir / "main.cf").read_text()
        base = main_cf_base(HOST, workdir)
        assert patched != main_cf and patched.startswith(base)
        body = patched[len(base):]  # the launcher writes its base again on restart
        with postfix(HOST, PORT, body, files=files, workdir=workdir) as mta2:
            code, text = rcpt(HOST, PORT, sender=sender)
            assert code in (454, 554) and "Relay access denied" in text, \
                f"{code} {text}\n{mta2.diagnostics()}"
            assert PostfixAuditor().audit(Path(str(mta2.extra["conf_dir"])),
                                          OPTIONS).findings == []
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_implicit_subnet_that_no_list_permits_is_not_high() -> None:
    """No compatibility_level: mynetworks_style = subnet trusts all of 127/8 (the stranger
    too), but when no restriction list says permit_mynetworks that trust opens nothing, as
    the real Postfix shows (554); like an unused explicit mynetworks it is at most medium."""
    workdir = Path("/tmp/rg-audit-pf-implicit-unused")
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        with postfix(HOST, PORT, "compatibility_level = 0\n"
                     "inet_interfaces = 127.0.0.1, 127.0.8.21\nsmtpd_relay_restrictions = "
                     "permit_sasl_authenticated, reject_unauth_destination\n",
                     workdir=workdir) as mta:
            code, text = rcpt(HOST, PORT)
            assert code in (454, 554) and "Relay access denied" in text, \
                f"{code} {text}\n{mta.diagnostics()}"
            result = PostfixAuditor().audit(Path(str(mta.extra["conf_dir"])), OPTIONS)
            assert result.errors == []
            assert [(f.rule, f.severity.label) for f in result.findings] == [
                ("POSTFIX-MYNETWORKS-IMPLICIT-SUBNET", "medium")]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_xclient_broad_agrees_with_real_postfix() -> None:
    """Clients allowed XCLIENT claim ADDR=127.0.0.1 and relay; the fix takes that away."""
    workdir = Path("/tmp/rg-audit-pf-xclient")
    shutil.rmtree(workdir, ignore_errors=True)
    main = "mynetworks = 127.0.0.1/32\nsmtpd_authorized_xclient_hosts = 127.0.8.0/24\n"

    def xclient_rcpt() -> tuple[int, int]:
        with smtplib.SMTP(HOST, PORT, timeout=10, source_address=(STRANGER, 0)) as s:
            s.ehlo("client.outside.example")
            x_code, _ = s.docmd("XCLIENT", "ADDR=127.0.0.1")
            s.ehlo("client.outside.example")
            s.mail("a@outside.example")
            code, _ = s.rcpt("victim@relay-target.example")
            return x_code, code

    try:
        with postfix(HOST, PORT, main, workdir=workdir) as mta:
            conf_dir = Path(str(mta.extra["conf_dir"]))
            result = PostfixAuditor().audit(conf_dir, OPTIONS)
            assert [f.rule for f in result.findings] == ["POSTFIX-XCLIENT-BROAD"]
            assert xclient_rcpt() == (220, 250), mta.diagnostics()
            apply_edits(result.findings)
            body = (conf_dir / "main.cf").read_text()[len(main_cf_base(HOST, workdir)):]
        with postfix(HOST, PORT, body, workdir=workdir) as mta2:
            x_code, code = xclient_rcpt()
            assert x_code == 550 and code in (454, 554), mta2.diagnostics()
            assert PostfixAuditor().audit(Path(str(mta2.extra["conf_dir"])),
                                          OPTIONS).findings == []
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_no_working_relay_check_means_smtpd_is_down() -> None:
    """POSTFIX-LITERAL-PERMIT is info: Postfix really refuses to run smtpd (nothing relays)."""
    workdir = Path("/tmp/rg-audit-pf-fatal")
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        with postfix(HOST, PORT, "mynetworks = 127.0.0.1/32\nsmtpd_relay_restrictions =\n"
                     "smtpd_recipient_restrictions = permit_mynetworks\n",
                     workdir=workdir) as mta:
            result = PostfixAuditor().audit(Path(str(mta.extra["conf_dir"])), OPTIONS)
            assert [(f.rule, f.severity.label) for f in result.findings] == [
                ("POSTFIX-LITERAL-PERMIT", "info")]
            with pytest.raises((smtplib.SMTPException, OSError)):
                rcpt(HOST, PORT, timeout=3)
            assert "specify at least one working instance" in mta.log("mail")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_master_override_agrees_with_real_postfix() -> None:
    """Only the listener whose -o override opens relaying relays; removing the -o closes it."""
    workdir = Path("/tmp/rg-audit-pf-master")
    shutil.rmtree(workdir, ignore_errors=True)
    extra_port = PORT + 2
    extra = (f"{HOST}:{extra_port} inet n - n - - smtpd\n"
             "  -o { smtpd_relay_restrictions = permit_mynetworks,\n"
             "       check_client_access cidr:{{0.0.0.0/0 OK}}, reject_unauth_destination }\n")
    try:
        with postfix(HOST, PORT, "mynetworks = 127.0.0.1/32\n", master_cf_extra=extra,
                     workdir=workdir) as mta:
            conf_dir = Path(str(mta.extra["conf_dir"]))
            result = PostfixAuditor().audit(conf_dir, OPTIONS)
            [f] = result.findings
            assert f.rule == "POSTFIX-MASTER-OVERRIDE" and f"{extra_port}" in f.title
            assert f.location.path == str(conf_dir / "master.cf")
            wait_port(HOST, extra_port)  # the launcher waited for the main port only
            assert rcpt(HOST, extra_port)[0] == 250, mta.diagnostics()
            assert rcpt(HOST, PORT)[0] in (454, 554)
            apply_edits(result.findings)
            master_after = (conf_dir / "master.cf").read_text()
        fixed_extra = master_after[master_after.index(f"{HOST}:{extra_port} inet"):]
        assert "-o" not in fixed_extra
        with postfix(HOST, PORT, "mynetworks = 127.0.0.1/32\n", master_cf_extra=fixed_extra,
                     workdir=workdir) as mta2:
            wait_port(HOST, extra_port)
            assert rcpt(HOST, extra_port)[0] in (454, 554), mta2.diagnostics()
            assert PostfixAuditor().audit(Path(str(mta2.extra["conf_dir"])),
                                          OPTIONS).findings == []
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
