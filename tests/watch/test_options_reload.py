"""Detector options (server_names, mail_domains, trusted_clients) come from the current
watch.toml after a restart and after SIGHUP, never from the state file; what the new options
end is closed with an alert saying why, and lines read afterwards are judged by them.

Real logs from /work/shared/data/real-logs: the kdent Postfix log of 7 Nov 2015 (a relay
forwarding mail for seaglass.com: with `mail_domains` that leave seaglass.com out, every
client handing mail in is relaying) and the secrepo Apache log (one absolute-URI request,
line 493, for the site's own name www.secrepo.com).
"""

from __future__ import annotations

import gzip
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from relayguard.findings import Severity
from relayguard.logs.analyze import LogOptions
from relayguard.watch.engine import Engine, ParseWindow, format_alert
from tests.watch.helpers import REPO, WatchProc, state, wait_until, watcher

DATA = REPO.parent / "shared/data/real-logs"
KDENT = DATA / "postfix-kdent-2015/mail3.log.gz"
SECREPO = DATA / "apache-secrepo-2018/access-2018-12-15.log.gz"
STAYED = "136.147.136.26"  # relays in lines 754 and 1529 (phase 1) and 3320 (phase 2)
LATE = "192.119.159.90"  # relays in line 2402 (phase 1) and 3078, 3092 (phase 2)
ABSOLUTE = 492  # index of `GET http://www.secrepo.com/twitter-icon.png` (line 493)

# (server_names, mail_domains, trusted_clients) per phase
PHASES = [
    ([], ["example.org"], [LATE]),
    (["www.secrepo.com"], ["example.org"], [STAYED]),
    (["secrepo.com"], ["example.org", "seaglass.com"], [STAYED]),
]


def _lines(src: Path) -> list[str]:
    with gzip.open(src, "rt", encoding="utf-8", errors="surrogateescape") as fh:
        return fh.read().splitlines(keepends=True)


def _config(tmp: Path, phase: int) -> str:
    names, domains, trusted = PHASES[phase]
    return f"""
[watch]
files = ["{tmp / 'mail.log'}", "{tmp / 'access.log'}"]
start = "beginning"
poll_interval = 0.1
server_names = {json.dumps(names)}
mail_domains = {json.dumps(domains)}
trusted_clients = {json.dumps(trusted)}
[incidents]
update_interval = 600
quiet = 600
min_severity = "info"
[alerts]
stdout = true
batch_window = 0.1
"""


def _relayed(doc: dict[str, Any]) -> dict[str, int]:
    return {i["client"]: i["events"] for i in doc["incidents"] if i["kind"] == "smtp-relayed"}


def _proxy_http(doc: dict[str, Any]) -> list[int]:
    return [i["events"] for i in doc["incidents"] if i["kind"] == "proxy-http"]


def _alerts(*outs: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for p in outs if p.exists() for x in p.read_text().splitlines()]


def _closes(alerts: list[dict[str, Any]]) -> dict[str, str]:
    return {a["key"]: a["reason"] for a in alerts if a.get("event") == "close"}


@pytest.mark.parametrize("how", ["restart", "sighup"])
def test_changed_options_apply_to_saved_state(tmp_path: Path, how: str) -> None:
    mail_src, web_src = _lines(KDENT), _lines(SECREPO)
    mail_parts = [mail_src[:2600], mail_src[2600:3600], mail_src[3600:]]
    web_parts = [web_src[:600], [web_src[ABSOLUTE], *web_src[600:700]],
                 [web_src[ABSOLUTE], *web_src[700:800]]]
    mail, web, cfg = tmp_path / "mail.log", tmp_path / "access.log", tmp_path / "watch.toml"
    db = tmp_path / "state.sqlite"
    args = ["--config", str(cfg), "--state", str(db)]
    total = 0
    running: WatchProc | None = None

    def phase(n: int) -> dict[str, Any]:
        """Config n, then its lines; returns the state once every line is read."""
        nonlocal total, running
        cfg.write_text(_config(tmp_path, n), encoding="utf-8")
        if how == "sighup" and running is not None:
            reloads = running.stderr().count("configuration reloaded")
            running.signal(signal.SIGHUP)
            assert wait_until(lambda: running is not None and running.stderr().count(
                "configuration reloaded") > reloads, 10), running.stderr()
        with open(mail, "a", encoding="utf-8", errors="surrogateescape") as fh:
            fh.writelines(mail_parts[n])
        with open(web, "a", encoding="utf-8", errors="surrogateescape") as fh:
            fh.writelines(web_parts[n])
        total += len(mail_parts[n]) + len(web_parts[n])
        if running is None:
            running = WatchProc(tmp_path, args, f"w{n}" if how == "restart" else "w")
        assert wait_until(lambda: state(db).get("lines") == total, 30), running.stderr()
        if how == "restart":
            assert running.terminate() == 0, running.stderr()
            running = None
        return state(db)

    outs = [tmp_path / f"w{n}.stdout" for n in range(3)] + [tmp_path / "w.stdout"]
    try:
        # 1: LATE is trusted, STAYED relays (to seaglass.com, foreign with these domains);
        # the absolute-URI request for the site's own name counts (no server_names)
        doc = phase(0)
        assert _relayed(doc)[STAYED] == 2 and LATE not in _relayed(doc)
        assert _proxy_http(doc) == [1]
        assert wait_until(lambda: any(a.get("key") == f"smtp-relayed@{STAYED}"
                                      for a in _alerts(*outs)), 10)

        # 2: STAYED trusted now, LATE not; www.secrepo.com is a server name now
        doc = phase(1)
        relayed = _relayed(doc)
        assert STAYED not in relayed  # its record dropped, its line 3320 allowed
        assert relayed[LATE] == 2  # lines 3078 and 3092: ignored before, counted now
        assert _proxy_http(doc) == []  # closed, and the same request again is ignored
        closes = wait_until(lambda: _closes(_alerts(*outs)), 10)
        assert closes[f"smtp-relayed@{STAYED}"] == (
            f"no longer an incident with the new options (server_names +www.secrepo.com; "
            f"trusted_clients +{STAYED} -{LATE})")
        (http_key,) = [k for k in closes if k.startswith("proxy-http#")]
        assert [k for k in closes if k.startswith("smtp-relayed@")] == [
            f"smtp-relayed@{STAYED}"]

        # 3: seaglass.com is one of our domains: no client relays any more, and the
        # absolute-URI request (www. is no longer a server name) counts again
        doc = phase(2)
        assert _relayed(doc) == {}
        assert _proxy_http(doc) == [1]
        closes = wait_until(lambda: f"smtp-relayed@{LATE}" in _closes(_alerts(*outs)) and
                            _closes(_alerts(*outs)), 10)
        assert "mail_domains +seaglass.com" in closes[f"smtp-relayed@{LATE}"]
        opened = [a for a in _alerts(*outs) if a.get("event") == "open" and
                  a.get("incident", {}).get("kind") == "proxy-http"]
        assert len(opened) == 2 and opened[1]["key"] != http_key
    finally:
        if running is not None and running.proc.poll() is None:
            running.terminate()

    log = "".join(p.read_text() for p in tmp_path.glob("w*.stderr"))
    said = "options changed since the state was saved" if how == "restart" else "SIGHUP"
    assert f"{said}: trusted_clients +{STAYED} -{LATE}" in log
    assert f"{said}: relay record of {STAYED} dropped: a trusted client now" in log
    assert f"{said}: server_names +www.secrepo.com" in log
    assert f"{said}: mail_domains +seaglass.com" in log
    assert f"{said}: server_names +secrepo.com -www.secrepo.com" in log
    assert "Traceback" not in log
    # every alert once, and no incident left open for ever in the tracker
    alerts = _alerts(*outs)
    assert len({a["id"] for a in alerts}) == len(alerts)


def test_unchanged_options_change_nothing(tmp_path: Path) -> None:
    """A restart with the same config logs no option change and closes nothing."""
    mail = tmp_path / "mail.log"
    mail.write_text("".join(_lines(KDENT)[:2600]), encoding="utf-8", errors="surrogateescape")
    (tmp_path / "access.log").write_text("")
    cfg = tmp_path / "watch.toml"
    cfg.write_text(_config(tmp_path, 0), encoding="utf-8")
    args = ["--config", str(cfg), "--state", str(tmp_path / "s.sqlite"), "--once"]
    for name in ("a", "b"):
        with watcher(tmp_path, args, name) as w:
            assert w.proc.wait(timeout=60) == 0, w.stderr()
    again = (tmp_path / "b.stderr").read_text()
    assert "options changed" not in again and "Traceback" not in again
    assert _closes(_alerts(tmp_path / "b.stdout")) == {}
    assert f"smtp-relayed@{STAYED}" in {a.get("key") for a in _alerts(tmp_path / "a.stdout")}


def test_alerts_saved_under_their_old_name_are_still_handed_out() -> None:
    """State written before `format_alerts` became `queued_alerts` loses no alert."""
    window = ParseWindow(lines=10, parsed=0, failing=True)
    alert = format_alert("a.log", "combined", window, "a.log: only 0 of 10 line(s) parse")
    saved = Engine(LogOptions()).__getstate__()
    saved.pop("queued_alerts")
    saved["format_alerts"] = [alert]
    old = Engine.__new__(Engine)
    old.__setstate__(saved)
    assert old.review(0.0, 60, 300, Severity.LOW)[0] == [alert]
    assert "format_alerts" not in vars(old)
