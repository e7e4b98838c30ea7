"""Postfix audit without a running daemon: each rule's must-fire / must-not-fire fixtures
(accepted by `postfix -c DIR check`), $var expansion, continuation lines, master.cf -o,
map files, built-in defaults, the stock Debian config, bad input, fuzzing."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relayguard.audit.base import AuditOptions
from relayguard.audit.postfix import (
    Params,
    PostfixAuditor,
    _parse_defaults,
    builtin_defaults,
    load,
    parse_main_cf,
    parse_master_cf,
    split_list,
)
from relayguard.audit.rules.postfix import RULES, split_example
from relayguard.errors import InputError
from relayguard.findings import Severity

REAL = Path("/work/shared/data/real-configs/postfix")
if not REAL.is_dir():
    REAL = Path(__file__).resolve().parents[4] / "shared/data/real-configs/postfix"
STRANGER = ipaddress.ip_address("127.0.8.250")
OPTIONS = AuditOptions(outside_client=STRANGER)
AUDITOR = PostfixAuditor()
HAVE_POSTFIX = shutil.which("postfix") is not None or Path("/usr/sbin/postfix").exists()
MASTER = (REAL / "master.cf").read_text()  # Debian's stock master.cf


def base(wd: Path) -> str:
    """What `postfix check` needs to accept a private instance (no relay policy)."""
    return "\n".join([
        f"queue_directory = {wd}/queue", f"data_directory = {wd}/data", "mail_owner = postfix",
        "setgid_group = postdrop", "myhostname = mx.relayguard.test",
        "inet_interfaces = loopback-only", "inet_protocols = ipv4", "alias_maps =",
        "alias_database =", "maillog_file_prefixes = /var, /tmp",
        f"maillog_file = {wd}/maillog", ""])


def make(tmp: Path, main: str, master: str | None = MASTER,
         files: dict[str, str] | None = None) -> Path:
    """A config dir: base + fixture in main.cf (fixture text may use {dir})."""
    conf = tmp / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    for sub in ("queue", "data"):
        (tmp / sub).mkdir(exist_ok=True)
    for name, text in (files or {}).items():
        (conf / name).write_text(text.replace("{dir}", str(conf)), encoding="utf-8")
    (conf / "main.cf").write_text(base(tmp) + main.replace("{dir}", str(conf)), encoding="utf-8")
    if master is not None:
        (conf / "master.cf").write_text(master.replace("{dir}", str(conf)), encoding="utf-8")
    return conf


def line_of(conf: Path, needle: str, name: str = "main.cf") -> int:
    lines = (conf / name).read_text().splitlines()
    return next(i for i, t in enumerate(lines, 1) if t.startswith(needle))


# (id, main.cf fixture, files, rule or None, (file, text) the finding must point at)
CASES = [
    ("mynetworks_world", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32 0.0.0.0/0\n",
     {}, "POSTFIX-MYNETWORKS-OPEN", ("main.cf", "mynetworks =")),
    ("mynetworks_file", "compatibility_level = 3.6\nmynetworks = {dir}/nets\n",
     {"nets": "127.0.0.1/32\n# public block\n0.0.0.0/0\n"}, "POSTFIX-MYNETWORKS-OPEN",
     ("nets", "0.0.0.0/0")),
    ("mynetworks_var", "compatibility_level = 3.6\nmy_extra = 0.0.0.0/0\n"
     "mynetworks = 127.0.0.1/32,\n    $my_extra\n", {}, "POSTFIX-MYNETWORKS-OPEN",
     ("main.cf", "mynetworks =")),
    ("compat_absent_subnet", "smtpd_relay_restrictions = permit_mynetworks, "
     "reject_unauth_destination\n", {}, "POSTFIX-MYNETWORKS-IMPLICIT-SUBNET", None),
    ("compat_absent_no_lists", "mynetworks = 127.0.0.1/32\n", {}, "POSTFIX-LITERAL-PERMIT",
     None),
    ("permit_before_check_everywhere", "compatibility_level = 3.6\n"
     "mynetworks = 127.0.0.1/32\nsmtpd_relay_restrictions =\n"
     "smtpd_recipient_restrictions = permit_mynetworks, permit, reject_unauth_destination\n",
     {}, "POSTFIX-LITERAL-PERMIT", ("main.cf", "smtpd_relay_restrictions")),
    ("style_class", "compatibility_level = 3.6\nmynetworks_style = class\n", {},
     "POSTFIX-MYNETWORKS-IMPLICIT-SUBNET", ("main.cf", "mynetworks_style")),
    ("forged_sender_ok", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "smtpd_relay_restrictions =\nsmtpd_recipient_restrictions = permit_mynetworks,\n"
     "    check_sender_access inline:{localhost=OK}, reject_unauth_destination\n", {},
     "POSTFIX-PERMIT-BEFORE-UNAUTH-DEST", ("main.cf", "smtpd_recipient_restrictions")),
    ("client_map_ok_for_all", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "smtpd_relay_restrictions = permit_mynetworks,\n"
     "    check_client_access cidr:{dir}/clients.cidr, defer_unauth_destination\n",
     {"clients.cidr": "192.168.0.0/16 OK\n0.0.0.0/0 OK\n"},
     "POSTFIX-PERMIT-BEFORE-UNAUTH-DEST", ("main.cf", "smtpd_relay_restrictions")),
    ("mx_backup", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "smtpd_relay_restrictions = permit_mynetworks, permit_mx_backup, "
     "defer_unauth_destination\n", {}, "POSTFIX-PERMIT-BEFORE-UNAUTH-DEST",
     ("main.cf", "smtpd_relay_restrictions")),
    ("relay_domains_tld", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "relay_domains = example.org, com\n", {}, "POSTFIX-RELAY-DOMAINS-WILDCARD",
     ("main.cf", "relay_domains")),
    ("sasl_no_tls", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "smtpd_sasl_auth_enable = yes\n", {}, "POSTFIX-SASL-CLEARTEXT",
     ("main.cf", "smtpd_sasl_auth_enable")),
    ("xclient_world", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "smtpd_authorized_xclient_hosts = 0.0.0.0/0\n", {}, "POSTFIX-XCLIENT-BROAD",
     ("main.cf", "smtpd_authorized_xclient_hosts")),
    ("sasl_anonymous", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = yes\n"
     "smtpd_sasl_security_options = noplaintext\n", {}, "POSTFIX-SASL-ANONYMOUS",
     ("main.cf", "smtpd_sasl_security_options")),
    ("untrusted_routing", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "allow_untrusted_routing = yes\n", {}, "POSTFIX-UNTRUSTED-ROUTING",
     ("main.cf", "allow_untrusted_routing")),
    ("forbidden_cleared", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "smtpd_forbidden_commands = CONNECT\n", {}, "POSTFIX-FORBIDDEN-COMMANDS-CLEARED",
     ("main.cf", "smtpd_forbidden_commands")),
    ("proxy_protocol_reachable", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "smtpd_upstream_proxy_protocol = haproxy\n", {}, "POSTFIX-PROXY-PROTOCOL-EXPOSED",
     ("main.cf", "smtpd_upstream_proxy_protocol")),
    # Must not fire:
    ("xclient_filter_only", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "smtpd_authorized_xclient_hosts = 127.0.0.1\n", {}, None, None),
    ("routing_default_no", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "allow_untrusted_routing = no\nsmtpd_sasl_auth_enable = yes\n"
     "smtpd_tls_auth_only = yes\n", {}, None, None),
    ("stock_relay_list_protects", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "smtpd_recipient_restrictions = permit\n", {}, None, None),
    ("client_map_lan_only", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "smtpd_relay_restrictions = permit_mynetworks,\n"
     "    check_client_access cidr:{dir}/clients.cidr, defer_unauth_destination\n",
     {"clients.cidr": "192.168.0.0/16 OK\n"}, None, None),
    ("sender_ok_after_check", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "smtpd_relay_restrictions =\nsmtpd_recipient_restrictions = permit_mynetworks,\n"
     "    reject_unauth_destination, check_sender_access inline:{localhost=OK}\n", {},
     None, None),
    ("mynetworks_lan", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32 "
     "[::1]/128 192.168.0.0/16 10.0.0.0/8\n", {}, None, None),
    ("sasl_tls_only", "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n"
     "smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = yes\n", {}, None, None),
]


@pytest.mark.parametrize(("name", "main", "files", "rule", "where"), CASES,
                         ids=[c[0] for c in CASES])
def test_fixture(tmp_path: Path, name: str, main: str, files: dict[str, str],
                 rule: str | None, where: tuple[str, str] | None) -> None:
    conf = make(tmp_path, main, files=files)
    result = AUDITOR.audit(conf, OPTIONS)
    assert result.errors == []
    assert [f.rule for f in result.findings] == ([rule] if rule else [])
    if rule:
        [f] = result.findings
        assert f.edits
        if where is not None:
            assert f.location.path == str(conf / where[0])
            assert f.location.line == line_of(conf, where[1], where[0])


@pytest.fixture(scope="module")
def postfix_checks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bool, str]]:
    """`postfix -c DIR check` of every fixture, run side by side (each takes seconds)."""
    from concurrent.futures import ThreadPoolExecutor

    if not HAVE_POSTFIX:
        pytest.skip("postfix not installed")

    def one(case: tuple) -> tuple[str, tuple[bool, str]]:
        name, main, files = case[:3]
        tmp = tmp_path_factory.mktemp(f"check-{name}")
        os.chmod(tmp, 0o755)
        conf = make(tmp, main, files=files)
        shutil.chown(tmp / "data", "postfix")
        return name, AUDITOR.config_test(conf) or (False, "no postfix")

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, CASES))


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_fixture_accepted_by_postfix_check(postfix_checks: dict[str, tuple[bool, str]],
                                           name: str) -> None:
    ok, out = postfix_checks[name]
    assert ok, out


def test_edits_close_each_hole(tmp_path: Path) -> None:
    from tests.audit.relay_helpers import apply_edits

    for i, (name, main, files, rule, _) in enumerate(CASES):
        if rule is None:
            continue
        conf = make(tmp_path / str(i), main, files=files)
        apply_edits(AUDITOR.audit(conf, OPTIONS).findings)
        assert AUDITOR.audit(conf, OPTIONS).findings == [], name


def test_master_override_opens_one_listener(tmp_path: Path) -> None:
    master = MASTER + ("2525 inet n - n - - smtpd\n"
                       "  -o syslog_name=postfix/2525\n"
                       "  -o { smtpd_relay_restrictions = permit_mynetworks,\n"
                       "       check_client_access cidr:{{0.0.0.0/0 OK}},"
                       " reject_unauth_destination }\n")
    override_line = len(MASTER.splitlines()) + 3
    conf = make(tmp_path, "compatibility_level = 3.6\nmynetworks = 127.0.0.1/32\n", master)
    result = AUDITOR.audit(conf, OPTIONS)
    [f] = result.findings
    assert f.rule == "POSTFIX-MASTER-OVERRIDE"
    assert (f.location.path, f.location.line) == (str(conf / "master.cf"), override_line)
    assert "service 2525" in f.title
    [edit] = f.edits
    assert (edit.line, len(edit.old), edit.new) == (override_line, 2, ())
    facts = {m["service"]: m for m in result.facts["mta"]}
    assert facts["2525"]["listen"] == ["127.0.0.1:2525"]
    assert facts["smtp"]["trusted_networks"] == ["127.0.0.1/32"]
    if HAVE_POSTFIX:
        os.chmod(tmp_path, 0o755)
        shutil.chown(tmp_path / "data", "postfix")
        ok, out = AUDITOR.config_test(conf) or (False, "")
        assert ok, out


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_catalogue_examples(tmp_path: Path, rule) -> None:
    for kind, fires in (("bad", True), ("good", False)):
        main, master = split_example(getattr(rule, kind))
        d = tmp_path / kind
        d.mkdir()
        (d / "main.cf").write_text(main)
        if master is not None:
            (d / "master.cf").write_text(master)
        got = {f.rule for f in AUDITOR.audit(d, AuditOptions()).findings}
        assert (rule.id in got) is fires, (kind, got)
        if not fires:
            assert got == set()


def test_stock_debian_main_cf_has_nothing_above_info(tmp_path: Path) -> None:
    shutil.copy(REAL / "main.cf", tmp_path / "main.cf")
    shutil.copy(REAL / "master.cf", tmp_path / "master.cf")
    result = AUDITOR.audit(tmp_path, AuditOptions())
    assert result.errors == []
    assert [f for f in result.findings if f.severity > Severity.INFO] == []
    [smtp] = result.facts["mta"]
    assert smtp["trusts_loopback"] and smtp["relays_for_trusted"]
    assert smtp["listen"] == ["*:25"]


def test_stock_templates_have_nothing_above_info(tmp_path: Path) -> None:
    # main.cf.debian alone: compatibility_level 3.6, no mynetworks -> style host.
    shutil.copy(REAL / "main.cf.debian", tmp_path / "main.cf")
    result = AUDITOR.audit(tmp_path, AuditOptions())
    assert [f for f in result.findings if f.severity > Severity.INFO] == []


def test_expansion_and_compatibility_defaults() -> None:
    main, _ = parse_main_cf("a = x\nb = $a ${a}y ${c?yes} ${c:no}\ncompatibility_level = 3.6\n",
                            "main.cf")
    p = Params(main)
    assert p.get("b") == "x xy  no"
    assert p.get("mynetworks_style") == "host"
    assert split_list(p.get("smtpd_relay_restrictions")) == [
        "permit_mynetworks", "permit_sasl_authenticated", "defer_unauth_destination"]
    old = Params(parse_main_cf("", "main.cf")[0])
    assert old.get("mynetworks_style") == "subnet"
    assert old.get("smtpd_relay_restrictions") == ""


def test_shipped_defaults_snapshot_matches_the_installed_postfix() -> None:
    from importlib import resources

    text = resources.files("relayguard").joinpath("data/postfix-defaults.txt").read_text()
    shipped = _parse_defaults(text)
    live, source = builtin_defaults()
    for name in ("mynetworks_style", "smtpd_relay_restrictions", "relay_domains",
                 "smtpd_forbidden_commands", "permit_mx_backup_networks"):
        assert shipped[name] == live[name], (name, source)


def test_continuation_and_last_wins() -> None:
    main, errors = parse_main_cf("# c\nx = 1\nx = 2,\n  3\n\n   # indented comment\ny=4\n",
                                 "main.cf")
    assert errors == []
    assert (main["x"].value, main["x"].line, main["x"].end_line) == ("2, 3", 3, 4)
    assert main["y"].value == "4"


def test_master_cf_fields_and_overrides() -> None:
    services, errors = parse_master_cf(
        "smtp inet n - y - - smtpd\n  -o a=b\nsubmission inet n - y - - smtpd -o { c = d e }\n"
        "short line\n", "master.cf")
    assert [(s.name, {k: v.value for k, v in s.overrides.items()}) for s in services] == [
        ("smtp", {"a": "b"}), ("submission", {"c": "d e"})]
    assert [e.line for e in errors] == [4]


def test_bad_input() -> None:
    with tempfile.TemporaryDirectory() as d:
        with pytest.raises(InputError):
            load(Path(d))
        (Path(d) / "main.cf").write_bytes(b"\x00\x01binary")
        with pytest.raises(InputError):
            load(Path(d))
        (Path(d) / "main.cf").write_text("this is not postfix\nmynetworks = 0/0\n")
        result = AUDITOR.audit(Path(d), OPTIONS)
        assert [e.line for e in result.errors] == [1]


def test_unreadable_map_is_reported(tmp_path: Path) -> None:
    conf = make(tmp_path, "compatibility_level = 3.6\nsmtpd_relay_restrictions = "
                "permit_mynetworks, check_client_access cidr:/nonexistent/x.cidr, "
                "reject_unauth_destination\n")
    result = AUDITOR.audit(conf, OPTIONS)
    assert any("/nonexistent/x.cidr" in e.message for e in result.errors)


def test_unreadable_map_is_reported_once(tmp_path: Path) -> None:
    conf = make(tmp_path, "compatibility_level = 3.6\n"
                "smtpd_client_restrictions = check_client_access hash:/nonexistent/x\n")
    result = AUDITOR.audit(conf, OPTIONS)
    assert [e.source for e in result.errors] == ["hash:/nonexistent/x"]  # not once per client


@pytest.mark.parametrize(("table", "line"), [
    ("/^192\\.168\\./ OK\n/^(unclosed/ OK\n/./ OK\n", 2),
    ("/^192\\.168\\./ OK\nif /^10\\./\n/./ OK\nendif\n", 2)])
def test_regexp_client_table_it_cannot_evaluate_is_an_error_not_clean(
        tmp_path: Path, table: str, line: int) -> None:
    (tmp_path / "clients.regexp").write_text(table, encoding="utf-8")
    conf = make(tmp_path, "compatibility_level = 3.6\nsmtpd_relay_restrictions = "
                f"permit_mynetworks, check_client_access regexp:{tmp_path}/clients.regexp, "
                "reject_unauth_destination\n")
    result = AUDITOR.audit(conf, OPTIONS)
    assert [(Path(e.source).name, e.line) for e in result.errors] == [("clients.regexp", line)]
    assert "not evaluated" in result.errors[0].message


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("mynetworks=smtpd_relay_restrictions $(){}:,/#\n "
                                              "\t0.1/permitcheck_sender_access inline:OK-o")),
               max_size=300),
       st.text(alphabet=st.sampled_from(list("smtp inet n-y smtpd -o{}=a\n \t")), max_size=200))
def test_fuzz_parser_never_crashes(main: str, master: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "main.cf").write_text(main)
        (Path(d) / "master.cf").write_text(master)
        with contextlib.suppress(InputError):
            AUDITOR.audit(Path(d), OPTIONS)


def test_exponential_variable_expansion_is_bounded(tmp_path: Path) -> None:
    lines = ["v0 = 0.0.0.0/0"] + [f"v{i} = $v{i - 1} $v{i - 1}" for i in range(1, 40)]
    (tmp_path / "main.cf").write_text("\n".join([*lines, "mynetworks = $v39", ""]))
    result = AUDITOR.audit(tmp_path, OPTIONS)  # returns (quickly) instead of exhausting memory
    assert result.errors == []
