"""microsocks has no config file: its options are its command line. This module finds that
command line where a system keeps it — systemd units (`ExecStart=`, with `Environment=` and
`EnvironmentFile=` variables substituted), init scripts, /etc/default files and, on the live
system (root `/`), the `/proc/PID/cmdline` of a running microsocks — and reads
microsocks' own options from it (`-i` listen address, default 0.0.0.0; `-p` port, default
1080; `-u`/`-P` user and password; `-1` auth-once; `-b` bind address; `-w` whitelist).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from relayguard.audit.base import AuditOptions, AuditResult, under_root
from relayguard.audit.directive import Directive, read_lines
from relayguard.audit.readfile import peek
from relayguard.digits import is_digits
from relayguard.errors import InputError
from relayguard.findings import ErrorEntry

UNIT_DIRS = ("etc/systemd/system", "run/systemd/system", "lib/systemd/system",
             "usr/lib/systemd/system", "usr/local/lib/systemd/system")
OTHER_PLACES = ("etc/init.d", "etc/default", "etc/supervisor/conf.d", "etc/sv",
                "etc/rc.local")
MAX_SCAN_FILES = 5000  # bound the walk over unit directories
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class Invocation:
    """One microsocks command line and the options it gives."""

    directive: Directive  # the ExecStart= (or script) line
    argv: tuple[str, ...]
    listen: str = "0.0.0.0"
    port: int = 1080
    user: str | None = None
    password: str | None = None
    auth_once: bool = False
    bind: str | None = None
    whitelist: str | None = None
    unresolved: tuple[str, ...] = ()  # variables we could not substitute

    @property
    def authenticated(self) -> bool:
        return self.user is not None and self.password is not None


@dataclass
class MicrosocksConfig:
    path: str
    invocations: list[Invocation] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    errors: list[ErrorEntry] = field(default_factory=list)


def _mentions(path: Path) -> bool:
    return "microsocks" in peek(path, 1 << 20)


def _proc_cmdline(path: Path) -> list[str] | None:
    """argv of a running process from /proc/PID/cmdline (NUL-separated), None if not one."""
    if path.name != "cmdline" or not path.parent.name.isdigit():
        return None
    try:
        data = path.read_bytes()[: 1 << 16]
    except OSError:
        return []
    argv: list[str] = []
    for a in data.split(b"\x00"):
        if a:
            argv.append(a.decode("utf-8", "replace"))
        elif argv and argv[-1] in ("-u", "-P"):
            argv.append("<hidden>")  # microsocks zeroes its user and password in argv
    return argv


def parse(path: Path, root: Path | None = None) -> MicrosocksConfig:
    """Every microsocks invocation in a unit file, script or /proc/PID/cmdline at `path`."""
    shown = str(path)
    cfg = MicrosocksConfig(path=shown)
    argv = _proc_cmdline(path)
    if argv is not None:
        cfg.files.append(shown)
        command = shlex.join(argv)
        d = Directive(shown, 1, "cmdline", (command,), command)
        inv = _invocation(cfg, d, command, {}) if argv else None
        if inv is None:
            cfg.errors.append(ErrorEntry(shown, "not a running microsocks process"))
        else:
            cfg.invocations.append(inv)
        return cfg
    lines = read_lines(path, shown)
    cfg.files.append(shown)
    env: dict[str, str] = {}
    is_unit = path.suffix in (".service", ".conf") or any(
        ln.strip().startswith(("[Service]", "[Unit]")) for ln in lines)
    i = 0
    while i < len(lines):
        start = i
        text = lines[i]
        raw = [text]
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1] + " " + lines[i]
            raw.append(lines[i])
        i += 1
        s = text.strip()
        if not s or s.startswith(("#", ";")):
            continue
        key, eq, value = s.partition("=")
        key = key.strip()
        if is_unit and eq and key == "Environment":
            _add_env(env, value)
            continue
        if is_unit and eq and key == "EnvironmentFile":
            _env_file(cfg, env, value.strip(), root, start + 1)
            continue
        if not is_unit and eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            env[key] = _unquote(value.strip())
        command = value.strip() if is_unit and key.startswith("ExecStart") and eq else s
        if "microsocks" not in command:
            continue
        d = Directive(shown, start + 1, key if is_unit and eq else "command",
                      (command,), "\n".join(raw))
        inv = _invocation(cfg, d, command, env)
        if inv is not None:
            cfg.invocations.append(inv)
    if not cfg.invocations:
        cfg.errors.append(ErrorEntry(shown, "no microsocks command line found in this file"))
    return cfg


def _unquote(v: str) -> str:
    try:
        parts = shlex.split(v)
    except ValueError:
        return v
    return " ".join(parts)


def _add_env(env: dict[str, str], value: str) -> None:
    try:
        items = shlex.split(value)
    except ValueError:
        items = value.split()
    for item in items:
        k, eq, v = item.partition("=")
        if eq:
            env[k] = v


def _env_file(cfg: MicrosocksConfig, env: dict[str, str], value: str, root: Path | None,
              line: int) -> None:
    optional = value.startswith("-")
    name = value.lstrip("-")
    target = under_root(name, root)
    try:
        lines = read_lines(target)
    except InputError as exc:
        if not optional:
            cfg.errors.append(ErrorEntry(cfg.path, f"EnvironmentFile {name}: {exc.message}",
                                         line))
        return
    cfg.files.append(str(target))
    for ln in lines:
        s = ln.strip()
        if s and not s.startswith("#") and "=" in s:
            k, _, v = s.partition("=")
            env[k.strip().removeprefix("export ").strip()] = _unquote(v.strip())


def _invocation(cfg: MicrosocksConfig, d: Directive, command: str,
                env: dict[str, str]) -> Invocation | None:
    command = command.lstrip("-@:+!")
    unresolved: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in env:
            return env[name]
        unresolved.append(name)
        return ""

    expanded = _VAR.sub(sub, command)
    try:
        argv = shlex.split(expanded)
    except ValueError as exc:
        cfg.errors.append(ErrorEntry(d.path, f"cannot split the command line: {exc}", d.line))
        return None
    idx = next((k for k, a in enumerate(argv) if os.path.basename(a) == "microsocks"), None)
    if idx is None or not all(_wrapper(a) for a in argv[:idx]):
        return None  # microsocks is mentioned, not run (a comment, a package list, …)
    opts: dict[str, str] = {}
    auth_once = False
    args = argv[idx + 1:]
    k = 0
    while k < len(args):
        a = args[k]
        k += 1
        if a == "-1":
            auth_once = True
            continue
        if len(a) >= 2 and a[0] == "-" and a[1] in "ipuPbw":
            if len(a) > 2:
                opts[a[1]] = a[2:]
            elif k < len(args):
                opts[a[1]] = args[k]
                k += 1
            else:
                cfg.errors.append(ErrorEntry(d.path, f"option {a} without a value", d.line))
            continue
        if a.startswith((";", "&", "|")):
            break
    port = 1080
    if "p" in opts:
        if is_digits(opts["p"]) and 0 < int(opts["p"]) < 65536:
            port = int(opts["p"])
        else:
            cfg.errors.append(ErrorEntry(d.path, f"-p {opts['p']!r} is not a port", d.line))
    return Invocation(d, tuple(argv), opts.get("i", "0.0.0.0"), port, opts.get("u"),
                      opts.get("P"), auth_once, opts.get("b"), opts.get("w"),
                      tuple(unresolved))


def running_processes(proc: Path = Path("/proc")) -> list[Path]:
    """/proc/PID/cmdline of every running microsocks (the live system's real options)."""
    out = []
    try:
        entries = sorted((p for p in proc.iterdir() if p.name.isdigit()),
                         key=lambda p: int(p.name))
    except OSError:
        return []
    for p in entries[:MAX_SCAN_FILES]:
        argv = _proc_cmdline(p / "cmdline")
        if argv and os.path.basename(argv[0]) == "microsocks":
            out.append(p / "cmdline")
    return out


_WRAPPERS = {"exec", "nohup", "sudo", "env", "setsid", "nice", "ionice", "stdbuf", "chrt",
             "taskset", "runuser", "su", "start-stop-daemon", "daemon", "chpst", "setpriv",
             "tini", "dumb-init", "--"}


def _wrapper(token: str) -> bool:
    """Words that may precede the program on a command line (`exec`, `VAR=x`, `nice -n 5`)."""
    return os.path.basename(token) in _WRAPPERS or "=" in token or token.startswith("-") \
        or token.isdigit()


class MicrosocksAuditor:
    """microsocks (its command line in systemd units and init scripts)."""

    name = "microsocks"

    def candidates(self, root: Path) -> list[Path]:
        found: list[Path] = []
        seen = 0
        for rel in (*UNIT_DIRS, *OTHER_PLACES):
            base = root / rel
            if base.is_file():
                files = [base]
            elif base.is_dir():
                files = sorted(p for p in base.rglob("*") if p.is_file())
            else:
                continue
            for p in files:
                seen += 1
                if seen > MAX_SCAN_FILES:
                    return found
                if not p.name.endswith(".wants") and _mentions(p) and p.resolve() not in [
                        f.resolve() for f in found]:
                    found.append(p)
        if root == Path("/"):
            found += running_processes()
        return found

    def recognise(self, path: Path) -> bool:
        argv = _proc_cmdline(path)
        if argv is not None:
            return bool(argv) and os.path.basename(argv[0]) == "microsocks"
        if not path.is_file():
            return False
        try:
            cfg = parse(path)
        except InputError:
            return False
        return bool(cfg.invocations)

    def audit(self, path: Path, options: AuditOptions) -> AuditResult:
        from relayguard.audit.rules import microsocks as rules

        cfg = parse(path, options.root)
        findings, facts = rules.check(cfg, options)
        return AuditResult(server=self.name, config=str(path), findings=findings,
                           errors=list(cfg.errors), files=list(cfg.files), facts=facts)

    def config_test(self, path: Path) -> tuple[bool, str] | None:
        """microsocks has no config file and no check mode: nothing to run."""
        return None
