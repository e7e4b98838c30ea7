"""A real Exim for the tests without installing it: Debian's exim4 conflicts with postfix (both
provide mail-transport-agent), so the packages are `apt-get download`ed and unpacked with
`dpkg -x` into a cache directory, and `exim4 -C CONF -bh IP` runs from there (a fake SMTP
session that evaluates the ACLs exactly as the daemon would, delivering nothing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("RELAYGUARD_EXIM_CACHE", "/var/cache/relayguard-tests/exim"))
PACKAGES = ("exim4-daemon-light", "exim4-base", "exim4-config", "libidn12")


@dataclass(frozen=True)
class Exim:
    argv: tuple[str, ...]  # how to run exim4
    env: dict[str, str]
    update_conf: Path  # Debian's update-exim4.conf script
    etc: Path  # the package's /etc/exim4 (template, conf.d)

    def rcpt(self, conf: Path, client: str, sender: str = "forged@mx.relayguard.test",
             recipient: str = "victim@relay-target.example") -> tuple[int, str]:
        """`exim -C conf -bh client`: the reply to RCPT TO (code, text). The default sender
        is forged in the server's own domain, as a spammer would."""
        script = (f"EHLO client.outside.example\r\nMAIL FROM:<{sender}>\r\n"
                  f"RCPT TO:<{recipient}>\r\nQUIT\r\n")
        proc = subprocess.run([*self.argv, "-C", str(conf), "-bh", client], input=script,
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, **self.env}, check=False)
        replies = [ln for ln in proc.stdout.splitlines() if ln[:3].isdigit()]
        # Replies: banner, EHLO (multi-line, last "250 "), MAIL, RCPT, QUIT.
        finals = [ln for ln in replies if len(ln) > 3 and ln[3] == " "]
        if len(finals) < 4:
            raise RuntimeError(f"exim -bh gave no RCPT reply:\n{proc.stdout}\n{proc.stderr}")
        rc = finals[3]
        return int(rc[:3]), rc[4:]

    def ehlo(self, conf: Path, client: str) -> list[str]:
        """`exim -C conf -bh client`: the EHLO reply lines (what is advertised)."""
        proc = subprocess.run([*self.argv, "-C", str(conf), "-bh", client],
                              input="EHLO client.outside.example\r\nQUIT\r\n",
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, **self.env}, check=False)
        return [ln for ln in proc.stdout.splitlines() if ln.startswith("250")]

    def check(self, conf: Path) -> tuple[bool, str]:
        proc = subprocess.run([*self.argv, "-C", str(conf), "-bV"], capture_output=True,
                              text=True, timeout=60, env={**os.environ, **self.env},
                              check=False)
        return proc.returncode == 0, proc.stdout + proc.stderr

    def generate(self, confdir: Path, out: Path) -> None:
        """Run Debian's own update-exim4.conf on confdir (its debconf file + template)."""
        proc = subprocess.run(["bash", str(self.update_conf), "-d", str(confdir), "-o",
                               str(out)], capture_output=True, text=True, timeout=60,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"update-exim4.conf failed: {proc.stderr}")


def find_or_fetch() -> Exim | str:
    """An Exim to run, or the reason there is none."""
    if shutil.which("exim4") and Path("/usr/sbin/update-exim4.conf").exists():
        return Exim(("exim4",), {}, Path("/usr/sbin/update-exim4.conf"), Path("/etc/exim4"))
    root = CACHE / "root"
    exe = root / "usr/sbin/exim4"
    if not exe.exists():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return "exim not installed and cannot be fetched (needs root and apt-get)"
        CACHE.mkdir(parents=True, exist_ok=True)
        got = subprocess.run(["apt-get", "download", *PACKAGES], cwd=CACHE,
                             capture_output=True, text=True, timeout=300, check=False)
        debs = sorted(CACHE.glob("*.deb"))
        if got.returncode != 0 or len(debs) < len(PACKAGES):
            return f"apt-get download of exim failed: {got.stderr.strip()[-300:]}"
        for deb in debs:
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=120)
    if subprocess.run(["getent", "passwd", "Debian-exim"], capture_output=True,
                      check=False).returncode != 0:
        # The binary looks its run-time user up by name at start.
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir",
                               "/var/spool/exim4", "--shell", "/usr/sbin/nologin",
                               "Debian-exim"], capture_output=True, text=True, check=False)
        if made.returncode != 0:
            return f"cannot create the Debian-exim user: {made.stderr.strip()}"
    env = {"LD_LIBRARY_PATH": str(root / "usr/lib/x86_64-linux-gnu")}
    return Exim((str(exe),), env, root / "usr/sbin/update-exim4.conf", root / "etc/exim4")
