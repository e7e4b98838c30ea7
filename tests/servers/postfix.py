"""Launch a real Debian Postfix (its `master -d`, foreground) on a loopback address and port.

    with postfix("127.0.4.40", 2525, "mynetworks = 127.0.0.0/8\\n") as mta:
        ...  # talk SMTP from 127.0.4.99; mta.log("mail") is Postfix's own log

`main_cf` is appended to a small, stock-like main.cf (later lines win in Postfix, so it can
override any default); `files` are written next to it (e.g. a `cidr:` or `texthash:` map
for `check_client_access`, which need no postmap). Postfix only binds addresses configured on
an interface, so the launcher runs `ip addr add HOST/32 dev lo` (root only) and leaves it.
Running master directly avoids `postfix start`'s alternate_config_directories check; the
queue is created by `postfix -c DIR check` under the workdir, chroot is off everywhere.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.servers.base import Daemon, DaemonError, make_workdir, run_daemon

MASTER = "/usr/lib/postfix/sbin/master"


def ensure_loopback_address(host: str) -> None:
    """Configure host/32 on lo unless it already is (Postfix refuses unconfigured addresses)."""
    shown = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                           text=True, check=False).stdout
    if f" {host}/" in shown or host.startswith("127.0.0.1"):
        return
    done = subprocess.run(["ip", "addr", "add", f"{host}/32", "dev", "lo"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 and "File exists" not in done.stderr:
        raise DaemonError(f"cannot add {host}/32 to lo: {done.stderr.strip()}")


def master_cf(port: int) -> str:
    """Debian's master.cf with smtpd on `port` and chroot off (no queue-dir copy of /etc)."""
    out = []
    for line in Path("/etc/postfix/master.cf").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if line[:1].isalnum() and len(fields) >= 8:
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = str(port)
            if fields[4] == "y":
                fields[4] = "n"
            line = " ".join(fields)
        out.append(line)
    return "\n".join(out) + "\n"


def main_cf_base(host: str, workdir: Path) -> str:
    """What every instance needs; relay policy is left to Postfix's own defaults."""
    return "\n".join([
        "# Written by tests/servers/postfix.py",
        "compatibility_level = 3.6",
        f"queue_directory = {workdir}/queue",
        f"data_directory = {workdir}/data",
        "mail_owner = postfix",
        "setgid_group = postdrop",
        "myhostname = mx.relayguard.test",
        "mydomain = relayguard.test",
        "mydestination = $myhostname, localhost.$mydomain, localhost",
        f"inet_interfaces = {host}",
        "inet_protocols = ipv4",
        f"smtp_bind_address = {host}",
        "alias_maps =",
        "alias_database =",
        "smtpd_banner = $myhostname ESMTP Postfix",
        "maillog_file_prefixes = /var, /tmp, /dev/stdout",
        f"maillog_file = {workdir}/maillog",
        "smtp_host_lookup = native",
        "disable_dns_lookups = yes",
        # No reverse lookup of clients: it would ask the machine's resolver, off loopback,
        # and stall sessions for its timeout under load.
        "smtpd_peername_lookup = no",
        "",
    ])


@contextlib.contextmanager
def postfix(host: str, port: int = 25, main_cf: str = "", *,
            files: Mapping[str, str] | None = None, master_cf_extra: str = "",
            workdir: Path | None = None, timeout: float = 15.0) -> Iterator[Daemon]:
    """Run Postfix's master in the foreground with smtpd on host:port; always stopped.

    `master_cf_extra` lines are appended to master.cf (e.g. an SMTPS listener:
    `4650 inet n - n - - smtpd -o smtpd_tls_wrappermode=yes`).

    Logs: `daemon.logs["mail"]` (maillog). `daemon.extra["conf_dir"]` is the config dir
    (main.cf and master.cf), so `postconf -c` and audit tests can read it.
    """
    wd, created = make_workdir(workdir, "postfix")
    conf = wd / "conf"
    conf.mkdir(exist_ok=True)
    for sub in ("queue", "data"):
        (wd / sub).mkdir(exist_ok=True)
    shutil.chown(wd / "data", "postfix")
    for name, text in (files or {}).items():
        (conf / name).write_text(text, encoding="utf-8")
    (conf / "main.cf").write_text(main_cf_base(host, wd) + main_cf, encoding="utf-8")
    (conf / "master.cf").write_text(master_cf(port) + master_cf_extra, encoding="utf-8")
    ensure_loopback_address(host)
    check = subprocess.run(["script", "-qec", f"postfix -c {conf} check", "/dev/null"],
                           capture_output=True, text=True, timeout=60, check=False)
    if check.returncode != 0:
        if created:
            shutil.rmtree(wd, ignore_errors=True)
        raise DaemonError(f"postfix -c {conf} check failed:\n{check.stdout}{check.stderr}")
    daemon = Daemon(name="postfix", host=host, port=port, workdir=wd, config=conf / "main.cf",
                    logs={"mail": wd / "maillog"}, extra={"conf_dir": conf})
    argv = [MASTER, "-d", "-c", str(conf)]
    with run_daemon(daemon, argv, timeout=timeout, remove_workdir=created) as d:
        yield d
