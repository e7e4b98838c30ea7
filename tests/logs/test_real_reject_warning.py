"""`warn_if_reject`: an admin trying a restriction out before enforcing it. A real Postfix
logs `NOQUEUE: reject_warning: … Client host rejected` and accepts the mail anyway; the
message is then delivered. That is no reject: counting it as one (or, for an RBL or relay
check tried out this way, as a blocklist reject or a refused relay attempt) would tell the
admin the server refused what it let through."""

from __future__ import annotations

from pathlib import Path

import pytest

from relayguard.logs.analyze import analyse
from tests.logs.smtp_sink import smtp_sink
from tests.logs.test_real_servers import _smtp, _wait_log
from tests.servers.postfix import postfix

pytestmark = pytest.mark.server

MTA, SINK, CLIENT = "127.0.5.101", "127.0.5.102", "127.0.5.103"
TRYING_OUT = ("mynetworks = 127.0.0.1/32\nrelay_domains = far.test\n"
              "smtpd_client_restrictions = warn_if_reject reject_unknown_client_hostname\n"
              "transport_maps = texthash:$config_directory/transport\n")


@pytest.fixture(scope="module")
def warned_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keep = tmp_path_factory.mktemp("warn") / "mail.log"
    with smtp_sink(SINK, 2526) as sink, \
            postfix(MTA, 2525, TRYING_OUT,
                    files={"transport": f"far.test smtp:[{SINK}]:2526\n"}) as mta:
        replies = _smtp(MTA, 2525, CLIENT, ["someone@far.test"])
        assert replies[3].startswith("250"), replies  # warned, not rejected
        _wait_log(lambda: mta.log("mail"), "status=sent", 1)
        assert sink.messages == 1
        keep.write_text(mta.log("mail"), encoding="utf-8")
    assert "reject_warning: RCPT from" in keep.read_text()
    return keep


def test_a_reject_warning_is_counted_apart_from_rejects(warned_log: Path) -> None:
    report = analyse([str(warned_log)])
    mail = report.stats["mail"]
    assert (mail["rejects"], mail["reject_warnings"], mail["sent"]) == (0, 1, 1)
    assert report.findings == () and report.errors == ()
