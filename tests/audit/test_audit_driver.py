"""The audit driver: nothing audited is never reported as clean, a near-miss says what is
missing, and the same config named twice is audited once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def audit(*args: str, cwd: Path | None = None) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "relayguard", "audit", *args, "--format",
                           "json"], capture_output=True, text=True, timeout=120, check=False,
                          cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def messages(doc: dict) -> list[str]:
    return [f"{e['source']}: {e['message']}" for e in doc["errors"]]


def test_empty_root_is_an_error_not_a_clean_bill(tmp_path: Path) -> None:
    code, doc = audit("--root", str(tmp_path))
    assert code == 2
    assert doc["findings"] == [] and doc["stats"]["configs"] == 0
    assert any("no supported server config found" in m for m in messages(doc)), messages(doc)


@pytest.mark.parametrize("content", [b"just some notes\n", b"\x7fELF\x00\x01"])
def test_explicit_paths_none_recognised_is_an_error(tmp_path: Path, content: bytes) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    code, doc = audit(str(notes))
    assert code == 2
    assert any("no supported server config found" in m for m in messages(doc)), messages(doc)


def test_postfix_directory_without_main_cf_says_so(tmp_path: Path) -> None:
    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "master.cf").write_text("smtp inet n - y - - smtpd\n")
    code, doc = audit(str(conf))
    assert code == 2
    assert any(m.startswith(f"{conf}: ") and "main.cf is missing" in m
               for m in messages(doc)), messages(doc)


def test_the_same_config_named_twice_is_audited_once(tmp_path: Path) -> None:
    (tmp_path / "squid.conf").write_text("http_port 3128\nhttp_access allow all\n")
    _, once = audit("squid.conf", cwd=tmp_path)
    code, twice = audit("squid.conf", "./squid.conf", str(tmp_path / "squid.conf"), cwd=tmp_path)
    assert code == 1 and once["findings"]
    assert [f["fingerprint"] for f in twice["findings"]] == \
        [f["fingerprint"] for f in once["findings"]]
    assert twice["stats"]["configs"] == 1
    assert sum("given more than once" in n for n in twice["notes"]) == 2


REAL_SQUID = Path(__file__).resolve().parents[2].parent / "shared/data/real-configs/squid"
REAL_NGINX = Path(__file__).resolve().parents[2].parent / "shared/data/real-configs/nginx"


@pytest.mark.parametrize(("name", "extra"), [
    ("squid.conf", "http_access allow all\n"),
    ("nginx.conf", "http { server { listen 80; location / { proxy_pass http://$http_host; }"
                   " } }\n")])
def test_a_directory_and_its_main_file_are_audited_once(tmp_path: Path, name: str,
                                                         extra: str) -> None:
    """`relayguard audit /etc/squid /etc/squid/squid.conf` names one config two ways: one
    set of findings, not each twice."""
    src = REAL_SQUID if name == "squid.conf" else REAL_NGINX
    conf = tmp_path / "etc" / name.removesuffix(".conf")
    conf.mkdir(parents=True)
    text = (src / name).read_text(encoding="utf-8")
    if name == "nginx.conf":  # the stock file includes /etc/nginx/*: keep it self-contained
        text = "events {}\n"
    else:  # first match wins: the admin's allow goes before the stock rules
        text = text.replace("include /etc/squid/conf.d/*.conf\n", "")
    (conf / name).write_text(extra + text, encoding="utf-8")
    _, once = audit(str(conf))
    code, twice = audit(str(conf), str(conf / name))
    assert code == 1 and once["findings"]
    assert [f["fingerprint"] for f in twice["findings"]] == \
        [f["fingerprint"] for f in once["findings"]]
    assert twice["stats"]["configs"] == 1
    assert any("audited once" in n for n in twice["notes"]), twice["notes"]


def test_relative_root_reads_absolute_includes_under_it(tmp_path: Path) -> None:
    """`--root backup` (relative, as typed in a shell) must map the stock
    `include /etc/squid/conf.d/*.conf` into the backup, like an absolute --root does."""
    etc = tmp_path / "backup/etc/squid"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "squid.conf").write_bytes((REAL_SQUID / "squid.conf").read_bytes())
    (etc / "conf.d/debian.conf").write_bytes((REAL_SQUID / "conf.d-debian.conf").read_bytes())
    (etc / "conf.d/open.conf").write_text("http_access allow all\n", encoding="utf-8")
    code, doc = audit("--root", "backup", "backup/etc/squid", cwd=tmp_path)
    assert messages(doc) == []
    opened = [f for f in doc["findings"] if f["rule"] == "SQUID-OPEN-HTTP-ACCESS"]
    assert [(Path(f["location"]["path"]).name, f["location"]["line"]) for f in opened] == \
        [("open.conf", 1)]
    assert code == 1
