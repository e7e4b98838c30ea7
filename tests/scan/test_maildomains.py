"""`scan` checks the host's mail domains on domain lists without being told: the names its
Postfix and Exim configs give (real config files, read by the audit's own parsers)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relayguard.audit import run_audit
from relayguard.scan.maildomains import config_domains, public_domain, this_machine_domains
from tests.cli.test_cli import ENV
from tests.scan.conftest import DBL_ZONE, LISTED_DOMAIN, UNREACHABLE_IP, ZONE

REAL_EXIM = Path("/work/shared/data/real-configs/exim4")
if not REAL_EXIM.is_dir():
    REAL_EXIM = Path(__file__).resolve().parents[3] / "shared/data/real-configs/exim4"

MAIN_CF = f"""\
myhostname = mx.{LISTED_DOMAIN}
mydomain = {LISTED_DOMAIN}
mydestination = $myhostname, localhost.$mydomain, localhost, hash:/etc/postfix/other_domains
mynetworks = 127.0.0.0/8
"""


def postfix_dir(tmp: Path) -> Path:
    conf = tmp / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text(MAIN_CF)
    return conf


@pytest.mark.parametrize(("name", "want"), [
    ("mx.client-one.zz", "mx.client-one.zz"), ("Client-One.ZZ.", "client-one.zz"),
    ("bücher.zz", "xn--bcher-kva.zz"), ("localhost", None), ("localhost.client-one.zz", None),
    ("mail.example", None), ("box.localdomain", None), ("runsc", None), ("$mydomain", None),
    ("hash:/etc/postfix/x", None), ("192.0.2.1", None), ("*.client-one.zz", None), ("", None),
])
def test_only_names_a_public_list_could_know(name: str, want: str | None) -> None:
    assert public_domain(name) == want


def test_postfix_names_from_main_cf(tmp_path: Path) -> None:
    _report, results = run_audit([postfix_dir(tmp_path)])
    assert config_domains(results, None) == [f"mx.{LISTED_DOMAIN}", LISTED_DOMAIN]


def test_exim_names_from_debians_split_debconf(tmp_path: Path) -> None:
    d = tmp_path / "exim4"
    d.mkdir()
    shutil.copy(REAL_EXIM / "exim4.conf.template", d / "exim4.conf.template")
    (d / "update-exim4.conf.conf").write_text(
        "dc_eximconfig_configtype='internet'\n"
        f"dc_other_hostnames='mail.{LISTED_DOMAIN};{LISTED_DOMAIN};box.lan'\n"
        "dc_local_interfaces='127.0.10.41'\ndc_use_split_config='false'\n")
    _report, results = run_audit([d])
    assert [r.server for r in results] == ["exim"]
    assert config_domains(results, None) == [f"mail.{LISTED_DOMAIN}", LISTED_DOMAIN]


def test_this_machine_mailname(tmp_path: Path) -> None:
    mailname = tmp_path / "mailname"
    mailname.write_text(f"{LISTED_DOMAIN}\n")
    assert LISTED_DOMAIN in this_machine_domains(mailname)
    mailname.write_text("localhost\n")
    assert LISTED_DOMAIN not in this_machine_domains(mailname)


def scan_postfix_host(dnsbl: Any, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """An audit + blocklist scan of a host whose Postfix config is the one above."""
    return subprocess.run(
        [sys.executable, "-m", "relayguard", "scan", UNREACHABLE_IP, "--no-probe", "--no-logs",
         "--config", str(postfix_dir(tmp)), "--resolver", f"{dnsbl.host}:{dnsbl.port}", *args,
         "--no-history", "--format", "json"], capture_output=True, text=True, env=ENV,
        timeout=120)


@pytest.mark.server
def test_scan_checks_the_configs_mail_domains_on_domain_lists(dnsbl: Any,
                                                               tmp_path: Path) -> None:
    done = scan_postfix_host(dnsbl, tmp_path, "--public-address", "11.22.33.45",
                             "--zones", f"{ZONE},{DBL_ZONE}")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    targets = doc["stats"]["blocklist"]["targets"]
    assert {t: v["verdict"] for t, v in targets.items()} == {
        "11.22.33.45": "clean", f"mx.{LISTED_DOMAIN}": "clean", LISTED_DOMAIN: "listed"}
    assert list(targets[LISTED_DOMAIN]["lists"]) == [DBL_ZONE]  # domain lists only
    listed = [f for f in doc["findings"] if f["category"] == "blocklisted"]
    assert [(f["rule"], f["location"]["host"]) for f in listed] == [
        ("BL-LISTED-SPAM", LISTED_DOMAIN)]
    assert f"{UNREACHABLE_IP}: mail domains from the MTA configs and this host's name, checked " \
           f"on the domain lists: mx.{LISTED_DOMAIN}, {LISTED_DOMAIN}" in doc["notes"]
    # a domain listing is told apart from any relay story
    keys = [s["key"] for s in doc["stats"]["stories"]]
    assert keys[0] == "listings" and "proxy" not in keys and "mail" not in keys
    assert doc["errors"] == []


@pytest.mark.server
def test_given_mail_domains_replace_the_discovered_ones(dnsbl: Any, tmp_path: Path) -> None:
    done = scan_postfix_host(dnsbl, tmp_path, "--mail-domain", "dbltest.com", "--zones", ZONE)
    targets = json.loads(done.stdout)["stats"]["blocklist"]["targets"]
    assert "dbltest.com" in targets and LISTED_DOMAIN not in targets


@pytest.mark.server
def test_no_domain_list_chosen_says_the_domains_were_not_checked(dnsbl: Any,
                                                                 tmp_path: Path) -> None:
    done = scan_postfix_host(dnsbl, tmp_path, "--public-address", "11.22.33.45",
                             "--zones", ZONE)
    doc = json.loads(done.stdout)
    assert list(doc["stats"]["blocklist"]["targets"]) == ["11.22.33.45"]
    assert f"{UNREACHABLE_IP}: mail domains mx.{LISTED_DOMAIN}, {LISTED_DOMAIN} not checked: no " \
           "domain list among the chosen zones" in doc["notes"]
    assert doc["errors"] == [] and done.returncode == 0
