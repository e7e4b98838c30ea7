"""The lab's own small launchers: a real Debian Apache and Postfix on one loopback address.

Each runs in its own process group (so everything it forks can be killed), from a config the
lab writes into its work directory, and is always stopped by `Process.stop()`. Postfix binds
only addresses configured on an interface, so the lab adds HOST/32 to `lo` (and removes it
again if it added it). No mail can leave: every non-local transport is `discard:`.

The lab must never talk to the machine's real servers: if something already serves its
address and ports (a real MTA on *:25), it refuses to start (`ensure_free`), and a daemon is
"ready" only when its own pid file names the process the lab started and it answers with
the run's secret marker (web page, SMTP banner), never merely because a connect succeeded.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
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


def new_marker() -> str:
    """A per-run secret the lab's own daemons show (page, banner): nobody else's do."""
    return f"relayguard-lab-{secrets.token_hex(8)}"


def ensure_free(host: str, ports: tuple[int, ...]) -> None:
    """LabError when anything already serves `host` on one of `ports`.

    A wildcard listener (a real MTA on *:25) answers connections to every loopback address,
    so the lab's own daemon could not bind and its spammers would reach the real server.
    """
    from relayguard.scan.discover import listeners

    for port in ports:
        taken = sorted({f"[{s.address}]:{port}" if ":" in s.address else f"{s.address}:{port}"
                        for s in listeners() if s.port == port and s.serves(host)})
        problem = f"already served by {', '.join(taken)}" if taken else ""
        if not problem:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                except OSError as exc:
                    problem = f"cannot be bound ({exc.strerror})"
        if problem:
            raise LabError(
                f"{host}:{port} is {problem}: the lab's own server could not listen there, and "
                "its spammers would talk to that server instead. Stop what listens there, or "
                "run the lab on another loopback address (--address 127.0.N.M); the lab "
                "changed nothing.")


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
    pidfile: Path | None = None  # where the daemon writes the pid of the process we started
    marker: Callable[[], bool] = lambda: False  # the daemon answers with the run's secret
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    pids: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int | None:
        """The running daemon's pid (its process group and session have the same id)."""
        return self.proc.pid if self.proc is not None else None

    def ready(self) -> bool:
        """Our own daemon answers: its pid file names our process, and it shows our marker."""
        if self.proc is None or self.pidfile is None:
            return False
        try:
            pid = int(self.pidfile.read_text(encoding="ascii").strip() or "0")
        except (OSError, ValueError):
            return False
        return pid == self.proc.pid and self.marker()

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
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        raise LabError(f"{self.name} did not answer as the lab's own server on {self.host}:"
                       f"{self.port} within {START_TIMEOUT:g}s (pid file {self.pidfile}, "
                       f"marker not seen):\n{self.tail()}")

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


def apache_config(workdir: Path, host: str, port: int, marker: str = "") -> tuple[Path, Path]:
    """Write httpd.conf (server plumbing) and site.conf (the proxy, as in the incident)."""
    htdocs = workdir / "htdocs"
    htdocs.mkdir(exist_ok=True)
    os.chmod(htdocs, 0o755)
    (htdocs / "index.html").write_text(f"<h1>Welcome to the lab's web site</h1>\n"
                                       f"<!-- {marker} -->\n")
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


def _answers(host: str, port: int, request: bytes, marker: str) -> bool:
    """True when host:port answers `request` with a reply containing `marker` (bounded)."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            if request:
                s.sendall(request)
            data = b""
            while len(data) < 65536 and marker.encode() not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return marker.encode() in data
    except OSError:
        return False


def apache(workdir: Path, host: str, port: int) -> Process:
    marker = new_marker()
    conf, _ = apache_config(workdir, host, port, marker)
    request = (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
               "\r\n").encode()
    return Process("apache2", [APACHE, "-f", str(conf), "-DFOREGROUND"], workdir, host, port,
                   pidfile=workdir / "apache2.pid",
                   marker=lambda: _answers(host, port, request, marker))


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
    marker = new_marker()
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
        f"smtpd_banner = $myhostname ESMTP {marker}",
        "mydestination = $myhostname, localhost",
        f"inet_interfaces = {host}", "inet_protocols = ipv4", f"smtp_bind_address = {host}",
        "alias_maps =", "alias_database =",
        "maillog_file_prefixes = /var, /tmp", f"maillog_file = {workdir}/maillog",
        "disable_dns_lookups = yes", "smtp_host_lookup = native",
        "smtpd_peername_lookup = no",  # no reverse DNS: the lab stays on loopback
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
    return Process("postfix", [POSTFIX_MASTER, "-d", "-c", str(conf)], workdir, host, port,
                   pidfile=workdir / "queue" / "pid" / "master.pid",
                   marker=lambda: _answers(host, port, b"", marker))


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
