"""A botnet probing a closed relay: a real Postfix refuses one relay attempt from each of 80
loopback clients. The count of distinct clients is what an abuse report and a firewall rule
start from; it must be the true one, not the size of the bounded top-clients table."""

from __future__ import annotations

from pathlib import Path

import pytest

from relayguard.logs.analyze import LogOptions, analyse
from tests.logs.test_real_servers import _smtp, _wait_log
from tests.servers.postfix import postfix

pytestmark = pytest.mark.server

MTA = "127.0.5.95"
BOTS = [f"127.0.8.{i}" for i in range(1, 81)]


@pytest.fixture(scope="module")
def botnet_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keep = tmp_path_factory.mktemp("botnet") / "mail.log"
    with postfix(MTA, 2525, "mynetworks = 127.0.0.1/32\n") as mta:
        for bot in BOTS:
            replies = _smtp(MTA, 2525, bot, ["victim@far.test"])
            assert replies[3].startswith("454 4.7.1"), replies
        _wait_log(lambda: mta.log("mail"), "Relay access denied", len(BOTS))
        keep.write_bytes(mta.logs["mail"].read_bytes())
    return keep


def test_every_probing_client_is_counted(botnet_log: Path) -> None:
    report = analyse([str(botnet_log)], LogOptions())
    (inc,) = [i for i in report.stats["incidents"] if i["kind"] == "smtp-relay-denied"]
    assert inc["events"] == 80 and inc["clients_distinct"] == 80
    (finding,) = report.findings
    assert finding.title == "80 relay attempt(s) refused from 80 client(s)"
    # the top-clients table is bounded (64): it says its list is not the whole story
    assert inc["approximate"] is True and len(inc["clients"]) == 10
