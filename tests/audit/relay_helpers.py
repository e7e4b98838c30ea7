"""Helpers the nginx/Postfix/Exim/cross audit tests share: apply a finding's edits the way
`--fix --write` would, launch nginx on loopback, and speak just enough SMTP to see RCPT's fate.
"""

from __future__ import annotations

import contextlib
import shutil
import smtplib
from collections.abc import Iterable, Iterator
from pathlib import Path

from relayguard.findings import Edit, Finding
from tests.audit.proxytools import apply_edits as write_edits
from tests.servers.base import Daemon, make_workdir, run_daemon

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STRANGER = "127.0.8.250"  # the untrusted client every agreement test speaks from


def apply_edits(findings: Iterable[Finding]) -> list[Edit]:
    """Apply every edit of the findings to the files, with the real `--fix --write` code."""
    edits = [e for f in findings for e in f.edits]
    write_edits(edits)
    return edits


@contextlib.contextmanager
def nginx(conf_text: str, host: str, port: int, workdir: Path | None = None) -> Iterator[Daemon]:
    """Real nginx in the foreground with `conf_text` as nginx.conf (prefix = its directory)."""
    wd, created = make_workdir(workdir, "nginx")
    (wd / "tmp").mkdir(exist_ok=True)
    conf = wd / "nginx.conf"
    conf.write_text(conf_text, encoding="utf-8")
    daemon = Daemon(name="nginx", host=host, port=port, workdir=wd, config=conf,
                    logs={"error": wd / "error.log"})
    argv = [NGINX, "-c", str(conf), "-p", f"{wd}/", "-g", "daemon off; user root;"]
    with run_daemon(daemon, argv, remove_workdir=created) as d:
        yield d


def rcpt(host: str, port: int, *, sender: str = "someone@outside.example",
         recipient: str = "victim@relay-target.example", source: str = STRANGER,
         timeout: float = 10.0) -> tuple[int, str]:
    """EHLO, MAIL FROM, RCPT TO from `source`: the RCPT reply (code, text)."""
    with smtplib.SMTP(host, port, timeout=timeout, source_address=(source, 0)) as s:
        s.ehlo("client.outside.example")
        code, msg = s.mail(sender)
        if code >= 400:
            return code, msg.decode("utf-8", "replace")
        code, msg = s.rcpt(recipient)
        return code, msg.decode("utf-8", "replace")
