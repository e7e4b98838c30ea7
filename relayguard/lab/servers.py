"""The lab's own small launchers: a real Debian Apache and Postfix on one loopback address.

Each runs in its own process group (so everything it forks can be killed), from a config the
lab writes into its work directory, and is always stopped by `Process.stop()`. Postfix binds
only addresses configured on an interface, so the lab adds HOST/32 to `lo` (and removes it
again if it added it). No mail can leave: every non-local transport is `discard:`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

APACHE = "/usr/sbin/apache2"
APACHE_MODULES = Path("/usr/lib/apache2/modules")
POSTFIX = "/usr/sbin/postfix"
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"
IP = "/usr/sbin/ip"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0

# What the lab needs, as (Debian package, file that proves it is installed).
REQUIREMENTS: tuple[tuple[str, str], ...] = (
    ("apache2", APACHE),
    ("apache2", str(APACHE_MODULES / "mod_proxy_connect.so")),
    ("postfix", POSTFIX_MASTER),
    ("iproute2", IP),
)

# The incident: the forward proxy switched on with no ACL, CONNECT allowed to port 25 too.
OPEN_PROXY_BODY = """\
# The lab's site config, as it was on the day of the incident.
ProxyRequests On
AllowCONNECT 443 25
<Proxy "*">
    Require all granted
</Proxy>
"""


class LabError(RuntimeError):
    """The lab could not set itself up; the message says what to do."""


def missing_packages() -> list[str]:
    """Debian packages the lab needs that are not installed (in install order)."""
    out: list[str] = []
    for package, proof in REQUIREMENTS:
        if not Path(proof).exists() and package not in out:
            out.append(package)
    return out


@dataclass
class Process:
    """A daemon started by the lab: its process group is killed on stop."""

    name: str
    argv: list[str]
    workdir: Path
    host: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    pids: set[int] = field(default_factory=set)

    def start(self) -> None:
        self.log = self.workdir / f"{self.name}.stderr"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=self.workdir)
        self.pids.add(self.proc.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"{self.name} exited at start:\n{self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection(
                    (self.host, self.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise LabError(f"{self.name} did not listen on {self.host}:{self.port} within "
                       f"{START_TIMEOUT:g}s:\n{self.tail()}")

    def tail(self) -> str:
        try:
            return (self.log.read_text(errors="replace") if self.log else "")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL what lingers; never raises."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()


def apache_config(workdir: Path, host: str, port: int) -> tuple[Path, Path]:
    """Write httpd.conf (server plumbing) and site.conf (the proxy, as in the incident)."""
    htdocs = workdir / "htdocs"
    htdocs.mkdir(exist_ok=True)
    os.chmod(htdocs, 0o755)
    (htdocs / "index.html").write_text("<h1>Welcome to the lab's web site</h1>\n")
    modules = ("mpm_event", "authz_core", "authz_host", "mime", "dir", "proxy", "proxy_http",
               "proxy_connect")
    lines = [
        "# relayguard lab: a web server on loopback",
        f'ServerRoot "{workdir}"', "ServerName lab.relayguard.invalid",
        f'PidFile "{workdir}/apache2.pid"', f'DefaultRuntimeDir "{workdir}"',
        f"Mutex file:{workdir} default", f"Listen {host}:{port}",
        *(f"LoadModule {m}_module {APACHE_MODULES / f'mod_{m}.so'}" for m in modules),
        "StartServers 1", "ServerLimit 2", "ThreadsPerChild 16", "MaxRequestWorkers 32",
        "Timeout 10", "TypesConfig /etc/mime.types",
        f'ErrorLog "{workdir}/error.log"', "LogLevel warn",
        'LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{Referer}i\\" \\"%{User-Agent}i\\"" '
        "combined",
        f'CustomLog "{workdir}/access.log" combined',
        f'DocumentRoot "{htdocs}"', f'<Directory "{htdocs}">', "    Require all granted",
        "</Directory>",
    ]
    if os.geteuid() == 0:
        lines += ["User www-data", "Group www-data"]
    site = workdir / "site.conf"
    site.write_text(OPEN_PROXY_BODY)
    lines.append(f'Include "{site}"')
    conf = workdir / "httpd.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf, site


def apache(workdir: Path, host: str, port: int) -> Process:
    conf, _ = apache_config(workdir, host, port)
    return Process("apache2", [APACHE, "-f", str(conf), "-DFOREGROUND"], workdir, host, port)


def _master_cf(port: int) -> str:
    """Debian's master.cf with smtpd on `port` and chroot off."""
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


def postfix(workdir: Path, host: str, port: int) -> Process:
    """A Postfix that trusts loopback (Debian's default mynetworks) and delivers nowhere."""
    conf = workdir / "postfix"
    conf.mkdir(exist_ok=True)
    for sub in ("queue", "data"):
        (workdir / sub).mkdir(exist_ok=True)
    shutil.chown(workdir / "data", "postfix")
    (conf / "main.cf").write_text("\n".join([
        "# relayguard lab: an MTA on loopback that trusts loopback, like Debian's default",
        "compatibility_level = 3.6",
        f"queue_directory = {workdir}/queue", f"data_directory = {workdir}/data",
        "mail_owner = postfix", "setgid_group = postdrop",
        "myhostname = mx.lab.relayguard.invalid", "mydomain = lab.relayguard.invalid",
        "mydestination = $myhostname, localhost",
        f"inet_interfaces = {host}", "inet_protocols = ipv4", f"smtp_bind_address = {host}",
        "alias_maps =", "alias_database =",
        "maillog_file_prefixes = /var, /tmp", f"maillog_file = {workdir}/maillog",
        "disable_dns_lookups = yes", "smtp_host_lookup = native",
        "mynetworks = 127.0.0.0/8",
        # Belt and braces: nothing is ever delivered anywhere, even if a DATA got through
        # (`discard:` accepts at RCPT like a real relay would, then drops the message).
        "default_transport = discard:relayguard lab: no mail leaves this machine",
        "relay_transport = discard:relayguard lab: no mail leaves this machine",
        "",
    ]))
    (conf / "master.cf").write_text(_master_cf(port))
    check = subprocess.run(["script", "-qec", f"{POSTFIX} -c {conf} check", "/dev/null"],
                           capture_output=True, text=True, timeout=60, check=False)
    if check.returncode != 0:
        raise LabError(f"postfix -c {conf} check failed:\n{check.stdout}{check.stderr}")
    return Process("postfix", [POSTFIX_MASTER, "-d", "-c", str(conf)], workdir, host, port)


def add_loopback_address(host: str) -> bool:
    """Configure host/32 on lo; True when the lab added it (so it removes it afterwards)."""
    shown = subprocess.run([IP, "-o", "addr", "show", "dev", "lo"], capture_output=True,
                           text=True, check=False).stdout
    if f" {host}/" in shown:
        return False
    done = subprocess.run([IP, "addr", "add", f"{host}/32", "dev", "lo"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 and "File exists" not in done.stderr:
        raise LabError(f"cannot add {host}/32 to lo (Postfix needs it): {done.stderr.strip()}")
    return done.returncode == 0


def remove_loopback_address(host: str) -> None:
    subprocess.run([IP, "addr", "del", f"{host}/32", "dev", "lo"], capture_output=True,
                   check=False)
