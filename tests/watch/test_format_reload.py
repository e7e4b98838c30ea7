"""A changed forced format (`[watch] formats`) applies after SIGHUP and after a restart, also
to a file whose format was already decided: a wrong format set by mistake and then corrected
must not leave the file unwatched until the state is deleted.

Real log: the elastic Apache log (combined format) from /work/shared/data/real-logs.
"""

from __future__ import annotations

import gzip
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.watch.helpers import REPO, WatchProc, state, wait_until

ELASTIC = REPO.parent / "shared/data/real-logs/apache-elastic-2015/apache_logs.gz"


def _config(access: Path, fmt: str) -> str:
    return (f'[watch]\nfiles = ["{access}"]\nstart = "beginning"\npoll_interval = 0.1\n'
            f'formats = {{ "{access}" = "{fmt}" }}\n[alerts]\nstdout = true\n'
            f'batch_window = 0.1\n')


@pytest.mark.parametrize("how", ["sighup", "restart"])
def test_a_corrected_forced_format_applies_to_a_decided_file(tmp_path: Path, how: str) -> None:
    with gzip.open(ELASTIC, "rt", encoding="utf-8", errors="surrogateescape") as fh:
        lines = [next(fh) for _ in range(300)]
    access, cfg, db = tmp_path / "access.log", tmp_path / "watch.toml", tmp_path / "s.sqlite"
    access.write_text("".join(lines[:200]), encoding="utf-8", errors="surrogateescape")
    cfg.write_text(_config(access, "squid"), encoding="utf-8")
    args = ["--config", str(cfg), "--state", str(db)]
    running = WatchProc(tmp_path, args, "a")
    try:
        # squid parses none of the Apache lines: an alert, and the file counts as unparsable
        doc: dict[str, Any] = wait_until(lambda: state(db).get("lines") == 200 and state(db), 30)
        assert doc, running.stderr()
        assert (doc["parsed"], doc["unparsable"]) == (0, [str(access)])
        assert doc["formats"] == {str(access): "access:squid"}
        cfg.write_text(_config(access, "combined"), encoding="utf-8")
        if how == "sighup":
            running.signal(signal.SIGHUP)
            assert wait_until(lambda: "configuration reloaded" in running.stderr(), 10), \
                running.stderr()
        else:
            assert running.terminate() == 0, running.stderr()
            running = WatchProc(tmp_path, args, "b")
        with open(access, "a", encoding="utf-8", errors="surrogateescape") as fh:
            fh.writelines(lines[200:])
        doc = wait_until(lambda: state(db).get("lines") == 300 and state(db), 30)
        assert doc, running.stderr()
        # the 100 new lines parse as combined; the file is no longer unparsable
        assert (doc["parsed"], doc["unparsed"]) == (100, 200)
        assert doc["formats"] == {str(access): "access:combined"}
        assert doc["unparsable"] == []
    finally:
        running.terminate()
    log = "".join(p.read_text() for p in tmp_path.glob("*.stderr"))
    said = "SIGHUP" if how == "sighup" else "options changed since the state was saved"
    assert f"{said}: format of {access}: squid -> combined (decided again)" in log
    assert "Traceback" not in log
    alerts = [json.loads(x) for p in tmp_path.glob("*.stdout") for x in p.read_text().splitlines()]
    assert [(a["event"], a["format"]) for a in alerts if a["type"] == "format"] == [
        ("unparsed", "squid")]
