"""`relayguard audit PATH` without --type: the proxy auditors claim exactly their own files
(Debian's stock configs, by name and by content) and nothing else in the shared data."""

from __future__ import annotations

from pathlib import Path

import pytest

from relayguard.audit import audit_paths
from relayguard.audit.proxies import PROXY_AUDITORS

REAL = Path(__file__).resolve().parents[2].parent / "shared/data/real-configs"
OWNER = {"squid/squid.conf": "squid", "tinyproxy/tinyproxy.conf": "tinyproxy",
         "privoxy/config": "privoxy", "dante-server/danted.conf": "dante"}


def claimed(path: Path) -> list[str]:
    return [a.name for a in PROXY_AUDITORS if a.recognise(path)]


def test_each_stock_file_is_claimed_by_its_own_auditor_only() -> None:
    if not REAL.is_dir():
        pytest.skip("shared real-configs not present")
    for p in sorted(REAL.rglob("*")):
        if p.is_file():
            rel = str(p.relative_to(REAL))
            assert claimed(p) == ([OWNER[rel]] if rel in OWNER else []), rel


def test_renamed_configs_are_recognised_by_content(tmp_path: Path) -> None:
    files = {
        "proxy-a": "http_port 3128\nhttp_access deny all\n",
        "proxy-b": 'Port 8888\nViaProxyName "tinyproxy"\n',
        "proxy-c": "confdir /etc/privoxy\nlisten-address 127.0.0.1:8118\n",
        "proxy-d": "internal: eth0 port = 1080\nsocks pass {\n from: 0/0 to: 0/0\n}\n",
        "proxy-e": "#!/bin/sh\nexec nohup /usr/local/bin/microsocks -i 0.0.0.0 &\n",
        "notes.md": "We removed microsocks and privoxy; listen-address was :8118.\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    got = {name: claimed(tmp_path / name) for name in files}
    assert got == {"proxy-a": ["squid"], "proxy-b": ["tinyproxy"], "proxy-c": ["privoxy"],
                   "proxy-d": ["dante"], "proxy-e": ["microsocks"], "notes.md": []}
    report = audit_paths([tmp_path / "proxy-e"])
    assert [(f.rule, f.location.line) for f in report.findings] == [("MICROSOCKS-NO-AUTH", 2)]


@pytest.mark.parametrize(("directory", "name"), [
    ("etc/squid", "squid"), ("etc/tinyproxy", "tinyproxy"), ("etc/privoxy", "privoxy")])
def test_config_directories(tmp_path: Path, directory: str, name: str) -> None:
    d = tmp_path / directory
    d.mkdir(parents=True)
    main = {"squid": "squid.conf", "tinyproxy": "tinyproxy.conf", "privoxy": "config"}[name]
    (d / main).write_text("# empty\n", encoding="utf-8")
    if name == "privoxy":
        (d / "default.action").write_text("", encoding="utf-8")
    assert claimed(d) == [name]
    assert claimed(tmp_path / "etc") == []
