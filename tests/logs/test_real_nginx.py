"""`relayguard logs /var/log/nginx/*` on what a real nginx wrote: its access log (stock
`combined`) is analysed, its error log is recognised and skipped with a note, as Apache's
is, not an error that fails the run. nginx is no forward proxy: it answers an absolute-URI
request with its own page and refuses CONNECT."""

from __future__ import annotations

from pathlib import Path

import pytest

from relayguard.logs.analyze import analyse
from tests.servers.http import http_get, http_request
from tests.servers.nginx import nginx

pytestmark = pytest.mark.server

WEB, VISITOR, PROBER = "127.0.5.97", "127.0.5.98", "127.0.5.99"
HOME = "<html>" + "nginx home page " * 20 + "</html>\n"


@pytest.fixture(scope="module")
def nginx_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    keep = tmp_path_factory.mktemp("nginx")
    with nginx(WEB, 18097, "        root html;\n") as web:
        (web.workdir / "html").mkdir()
        (web.workdir / "html" / "index.html").write_text(HOME, encoding="utf-8")
        for _ in range(3):
            assert http_get(web.host, web.port, "/", source=VISITOR).status == 200
        own = http_request(web.host, web.port, "GET http://far.example/ HTTP/1.1\r\n"
                           "Host: far.example\r\n\r\n", source=PROBER)
        assert own.status == 200 and own.text == HOME
        refused = http_request(web.host, web.port, "CONNECT mx.far.example:25 HTTP/1.1\r\n"
                               "Host: mx.far.example:25\r\n\r\n", source=PROBER)
        assert refused.status == 400
        web.wait_log("access", "CONNECT")
        web.wait_log("error", "CONNECT")
        out = {}
        for name in ("access", "error"):
            out[name] = keep / f"{name}.log"
            out[name].write_bytes(web.logs[name].read_bytes())
    return out


def test_error_log_is_skipped_and_access_log_judged(nginx_logs: dict[str, Path]) -> None:
    access, error = str(nginx_logs["access"]), str(nginx_logs["error"])
    report = analyse([access, error])
    assert report.errors == ()
    assert f"{error}: nginx-error log, not analysed" in report.notes
    assert [(f["path"], f["format"]) for f in report.stats["files"]] == [
        (access, "combined"), (error, "nginx-error")]
    assert report.stats["lines"] == 5 and report.stats["unparsed"] == 0
    got = {i["kind"]: (i["verdict"], i["statuses"], i["clients"])
           for i in report.stats["incidents"]}
    assert got == {"proxy-http": ("probably served locally", {"200": 1}, [(PROBER, 1)]),
                   "proxy-smtp": ("refused", {"400": 1}, [(PROBER, 1)])}
    assert [(f.rule, f.severity.label) for f in report.findings] == [
        ("LOGS-PROXY-SCAN", "info"), ("LOGS-PROXY-SCAN", "low")]
