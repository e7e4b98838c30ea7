"""Real stock configs stay quiet; the seed incident in the stock layout is found on its line."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from relayguard.audit import audit_paths
from relayguard.findings import Category, Severity

REAL = Path(__file__).resolve().parents[3].parent / "shared/data/real-configs/apache2"
ETC = Path("/etc/apache2")
PROXY_MODS = ("proxy", "proxy_http", "proxy_connect")


def debian_tree_from_samples(dest: Path) -> Path:
    """Lay out `real-configs/apache2` (renamed files) as Debian installs it, with a2enmod links.

    Only the enabled modules' `.load` lines are synthesised (the samples list their names in
    mods-enabled.default.txt, not their one-line contents).
    """
    for d in ("mods-available", "mods-enabled", "sites-available", "sites-enabled",
              "conf-available", "conf-enabled"):
        (dest / d).mkdir(parents=True)
    for name in ("apache2.conf", "ports.conf", "envvars"):
        shutil.copy(REAL / name, dest / name)
    shutil.copy(REAL / "sites-available-000-default.conf",
                dest / "sites-available/000-default.conf")
    os.symlink("../sites-available/000-default.conf", dest / "sites-enabled/000-default.conf")
    shutil.copy(REAL / "conf-available-security.conf", dest / "conf-available/security.conf")
    os.symlink("../conf-available/security.conf", dest / "conf-enabled/security.conf")
    for f in REAL.glob("mods-available-*"):
        shutil.copy(f, dest / "mods-available" / f.name.removeprefix("mods-available-"))
    for entry in (REAL / "mods-enabled.default.txt").read_text().split():
        src = dest / "mods-available" / entry
        if not src.exists():
            mod = entry.rsplit(".", 1)[0]
            src.write_text(f"LoadModule {mod}_module /usr/lib/apache2/modules/mod_{mod}.so\n"
                           if entry.endswith(".load") else "")
        os.symlink(f"../mods-available/{entry}", dest / "mods-enabled" / entry)
    return dest


def enable_proxy(tree: Path) -> int:
    """What an admin does in the seed incident: a2enmod proxy…, uncomment ProxyRequests On."""
    for mod in PROXY_MODS:
        link = tree / "mods-enabled" / f"{mod}.load"
        if not link.exists():
            os.symlink(f"../mods-available/{mod}.load", link)
    conf_link = tree / "mods-enabled/proxy.conf"
    if not conf_link.exists():
        os.symlink("../mods-available/proxy.conf", conf_link)
    conf = tree / "mods-available/proxy.conf"
    lines = conf.read_text().splitlines()
    n = lines.index("#ProxyRequests On")
    lines[n] = "ProxyRequests On"
    conf.write_text("\n".join(lines) + "\n")
    return n + 1


def above_info(tree: Path) -> list[str]:
    report = audit_paths([tree])
    assert not report.errors, [str(e) for e in report.errors]
    return [f"{f.rule} {f.location}" for f in report.findings if f.severity > Severity.INFO]


def test_shared_debian_samples_give_nothing_above_info(tmp_path: Path) -> None:
    tree = debian_tree_from_samples(tmp_path / "apache2")
    assert above_info(tree) == []


def test_seed_incident_in_sample_layout_found_on_its_line(tmp_path: Path) -> None:
    tree = debian_tree_from_samples(tmp_path / "apache2")
    line = enable_proxy(tree)
    report = audit_paths([tree])
    where = {(f.category, f.location.path, f.location.line) for f in report.findings}
    proxy_conf = str(tree / "mods-enabled/proxy.conf")
    for cat in (Category.OPEN_HTTP_PROXY, Category.OPEN_CONNECT_PROXY, Category.SMTP_VIA_PROXY):
        assert (cat, proxy_conf, line) in where
    # The Debian <Directory /> deny is cited as *not* protecting the proxy.
    http = next(f for f in report.findings if f.category is Category.OPEN_HTTP_PROXY)
    assert any("<Directory>" in e.text for e in http.evidence)
    assert any(e.new == ("ProxyRequests Off",) and e.line == line for e in http.edits)


@pytest.mark.skipif(not (ETC / "apache2.conf").exists(), reason="apache2 is not installed")
def test_installed_debian_config_gives_nothing_above_info() -> None:
    assert above_info(ETC) == []


@pytest.mark.skipif(not (ETC / "apache2.conf").exists(), reason="apache2 is not installed")
def test_installed_layout_with_proxy_enabled_is_found_and_httpd_agrees_it_parses(
        tmp_path: Path) -> None:
    tree = tmp_path / "apache2"
    shutil.copytree(ETC, tree, symlinks=True)
    line = enable_proxy(tree)
    report = audit_paths([tree])
    assert not report.errors
    hits = {(f.rule, f.location.line) for f in report.findings
            if f.location.path == str(tree / "mods-enabled/proxy.conf")}
    assert ("APACHE-OPEN-FORWARD-PROXY", line) in hits
    # httpd itself parses this tree (Debian's envvars supply ${APACHE_*}).
    env = dict(os.environ, APACHE_RUN_USER="www-data", APACHE_RUN_GROUP="www-data",
               APACHE_PID_FILE=str(tmp_path / "pid"), APACHE_RUN_DIR=str(tmp_path),
               APACHE_LOCK_DIR=str(tmp_path), APACHE_LOG_DIR=str(tmp_path))
    proc = subprocess.run(["apache2", "-t", "-d", str(tree), "-f", str(tree / "apache2.conf")],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_forward_proxy_in_a_loopback_vhost_is_not_open_to_strangers(tmp_path: Path) -> None:
    """A local-only forward proxy beside the public site (`Listen 127.0.0.1:3128`,
    `<VirtualHost 127.0.0.1:3128> ProxyRequests On`): strangers connect to port 80 and can
    never reach that vhost, so it is local exposure (low), not an open proxy for them."""
    tree = debian_tree_from_samples(tmp_path / "apache2")
    enable_proxy(tree)
    conf = tree / "mods-available/proxy.conf"
    conf.write_text(conf.read_text().replace("ProxyRequests On\n", "ProxyRequests Off\n"))
    with (tree / "ports.conf").open("a") as fh:
        fh.write("Listen 127.0.0.1:3128\n")
    site = tree / "sites-available/local-proxy.conf"
    site.write_text("<VirtualHost 127.0.0.1:3128>\n\tProxyRequests On\n</VirtualHost>\n")
    os.symlink("../sites-available/local-proxy.conf", tree / "sites-enabled/local-proxy.conf")
    report = audit_paths([tree])
    assert not report.errors, [str(e) for e in report.errors]
    proxy = [f for f in report.findings if f.location.path == str(
        tree / "sites-enabled/local-proxy.conf")]
    assert {f.category for f in proxy} >= {Category.OPEN_HTTP_PROXY, Category.OPEN_CONNECT_PROXY}
    assert all(f.severity == Severity.LOW and "loopback only" in f.title for f in proxy), proxy
    assert [f.rule for f in report.findings if f.severity > Severity.LOW] == []
