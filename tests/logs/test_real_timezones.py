"""Syslog stamps are the writing machine's local time with no zone. Real Postfix and Apache
run with TZ=Asia/Kathmandu (+05:45, no DST: any error shows as minutes), and `relayguard logs`
runs in a subprocess with the zone set (or `--tz`): mail and web incidents land on the same
true UTC instants, and --since/--until cut where they should."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.logs.test_real_servers import _smtp, _smtp_through_tunnel, _wait_log
from tests.servers import PROXY_MODULES, apache, tcp_canary
from tests.servers.postfix import postfix

pytestmark = pytest.mark.server

ZONE = "Asia/Kathmandu"
MTA, WEBPROXY, MX, PROBER = "127.0.5.48", "127.0.5.17", "127.0.5.76", "127.0.5.53"


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(t)))


def _logs(*args: str, tz_env: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "relayguard", "logs", *args, "-f", "json"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "TZ": tz_env})
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def zoned_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    keep = tmp_path_factory.mktemp("zoned")
    out: dict[str, Any] = {}
    saved = os.environ.get("TZ")
    os.environ["TZ"] = ZONE  # the daemons inherit it: Postfix imports TZ, Apache uses it
    try:
        with tcp_canary(MX, 25), postfix(MTA, 2525, "mynetworks = 127.0.0.1/32\n") as mta, \
                apache(WEBPROXY, 18085, "ProxyRequests On\nAllowCONNECT 25\n",
                       modules=PROXY_MODULES) as proxy:
            out["t0"] = time.time()
            replies = _smtp(MTA, 2525, PROBER, ["x@far.test"])
            assert replies[3].startswith("454"), replies
            _smtp_through_tunnel(proxy.address, PROBER, f"{MX}:25")
            out["t1"] = time.time()
            _wait_log(lambda: mta.log("mail"), "Relay access denied", 1)
            _wait_log(lambda: proxy.log("access"), "CONNECT", 1)
            for name, d, log in (("mail", mta, "mail"), ("web", proxy, "access")):
                out[name] = keep / f"{name}.log"
                shutil.copy(d.logs[log], out[name])
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
    assert "+0545]" in out["web"].read_text()  # Apache wrote the zone's offset
    return out


def _firsts(doc: dict[str, Any]) -> dict[str, str]:
    return {i["kind"]: i["first_seen"] for i in doc["stats"]["incidents"]}


def test_mail_and_web_incidents_share_true_utc(zoned_logs: dict[str, Any]) -> None:
    lo, hi = _iso(zoned_logs["t0"]), _iso(zoned_logs["t1"] + 1)
    paths = (str(zoned_logs["web"]), str(zoned_logs["mail"]))
    for args, env in (((), ZONE), (("--tz", ZONE), "UTC")):
        doc = _logs(*paths, *args, tz_env=env)
        firsts = _firsts(doc)
        assert set(firsts) == {"proxy-smtp", "smtp-relay-denied"}, doc["stats"]["incidents"]
        assert all(lo <= t <= hi for t in firsts.values()), (firsts, lo, hi)
        assert any(ZONE in n for n in doc["notes"])
    # read as UTC, the mail stamps are 5h45 late: the zone matters
    wrong = _firsts(_logs(str(zoned_logs["mail"]), tz_env="UTC"))["smtp-relay-denied"]
    assert wrong > hi


def test_since_and_until_cut_in_utc(zoned_logs: dict[str, Any]) -> None:
    before, after = _iso(zoned_logs["t0"] - 60), _iso(zoned_logs["t1"] + 60)
    mail = str(zoned_logs["mail"])
    assert set(_firsts(_logs(mail, "--since", before, tz_env=ZONE))) == {"smtp-relay-denied"}
    assert _firsts(_logs(mail, "--since", after, tz_env=ZONE)) == {}
    assert _firsts(_logs(mail, "--until", before, tz_env=ZONE)) == {}
    assert set(_firsts(_logs(mail, "--until", after, tz_env=ZONE))) == {"smtp-relay-denied"}


def test_bad_zone_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "relayguard", "logs", str(tmp_path),
                           "--tz", "Mars/Olympus"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2 and "unknown time zone" in proc.stderr
    assert "Traceback" not in proc.stderr
