"""A hacked web application mailing through a real Exim: local submissions (`exim -odi`, as
PHP's mail() calls sendmail) to 120 foreign domains within minutes, delivered by Exim's smtp
transport to a loopback sink. Exim logs such arrivals `<= sender U=user P=local`, with no
`H=[ip]`; they are a trusted local sender's mail, judged by its volume
(`LOGS-SMTP-SENDER-VOLUME`), as Postfix's pickup is. Exim is run unpacked, not installed
(it conflicts with Postfix; tests/audit/exim/exim_bin.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from relayguard.logs.analyze import LogOptions, analyse
from tests.audit.exim.exim_bin import find_or_fetch
from tests.logs.smtp_sink import smtp_sink
from tests.servers.base import make_workdir

pytestmark = pytest.mark.server

SINK = "127.0.5.121"
SENDER = "www-data@web.relayguard.test"
DOMAINS = 120


def _config(wd: Path) -> str:
    # Exim re-executes itself for deliveries: through a wrapper that finds the unpacked
    # libraries (as root throughout, so the loader honours LD_LIBRARY_PATH), while the smtp
    # transport runs as Debian-exim, which Exim insists on
    return f"""exim_path = {wd}/exim
keep_environment = LD_LIBRARY_PATH
primary_hostname = web.relayguard.test
spool_directory = {wd}/spool
log_file_path = {wd}/log/%slog
exim_user = root
exim_group = root
trusted_users = root
begin routers
to_sink:
  driver = manualroute
  domains = ! web.relayguard.test
  route_list = * {SINK}
  transport = remote_smtp
  self = send
begin transports
remote_smtp:
  driver = smtp
  port = 2526
  user = Debian-exim
"""


@pytest.fixture(scope="module")
def mainlog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    exim = find_or_fetch()
    if isinstance(exim, str):
        pytest.skip(exim)
    keep = tmp_path_factory.mktemp("exim") / "mainlog"
    wd, _ = make_workdir(None, "exim")
    try:
        for sub in ("spool", "spool/db", "log"):
            (wd / sub).mkdir()
            os.chmod(wd / sub, 0o777)
        wrapper = wd / "exim"
        wrapper.write_text(f"#!/bin/sh\nLD_LIBRARY_PATH={exim.env['LD_LIBRARY_PATH']} "
                           f"exec {exim.argv[0]} \"$@\"\n" if exim.env else
                           f"#!/bin/sh\nexec {exim.argv[0]} \"$@\"\n", encoding="ascii")
        wrapper.chmod(0o755)
        conf = wd / "exim.conf"
        conf.write_text(_config(wd), encoding="ascii")
        with smtp_sink(SINK, 2526) as sink:
            for i in range(DOMAINS):
                done = subprocess.run([str(wrapper), "-C", str(conf), "-odi", "-f", SENDER,
                                       f"win{i}@prize{i}.example"],
                                      input=b"Subject: you won\n\nclick\n", capture_output=True,
                                      timeout=30, check=False)
                assert done.returncode == 0, done.stderr
            assert sink.messages == DOMAINS
        keep.write_bytes((wd / "log" / "mainlog").read_bytes())
    finally:
        shutil.rmtree(wd, ignore_errors=True)
    text = keep.read_text()
    assert f"<= {SENDER} U=root P=local" in text and text.count(" => ") == DOMAINS
    yield keep


def test_local_submissions_are_judged_by_the_senders_volume(mainlog: Path) -> None:
    report = analyse([str(mainlog)], LogOptions())
    mail = report.stats["mail"]
    assert mail["sent"] == DOMAINS
    assert [tuple(x) for x in mail["top_senders"]] == [(SENDER, DOMAINS)]
    assert [tuple(x) for x in mail["outbound_by_sender"]] == [(SENDER, DOMAINS)]
    assert [(f.rule, f.severity.label) for f in report.findings] == [
        ("LOGS-SMTP-SENDER-VOLUME", "high")]
    (inc,) = [i for i in report.stats["incidents"] if i["kind"] == "smtp-sender-volume"]
    assert inc["sender"] == SENDER and inc["authenticated"] is False
    assert inc["events"] == DOMAINS
