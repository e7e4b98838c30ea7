"""The command line as users and scripts meet it: `python -m relayguard` in a subprocess for the
commands, and the exit-status logic (0 / 1 / 2, DESIGN.md) on constructed Reports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from relayguard import __version__
from relayguard.catalogue import Rule, all_rules, rule_by_id
from relayguard.cli import ExitStatus, emit, exit_status, parse_fail_on
from relayguard.findings import (
    Category,
    Confidence,
    ErrorEntry,
    Finding,
    Location,
    Report,
    Severity,
)
from relayguard.report import OutputFormat

# Plain output to a pipe whatever the caller's environment forces (FORCE_COLOR would make rich
# write ANSI styles even into a pipe, as users who set it ask).
ENV = {**{k: v for k, v in os.environ.items()
          if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE")},
       "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def sigint_default() -> None:
    """`preexec_fn` of a child a test interrupts: SIGINT back to its default, so Python
    installs its KeyboardInterrupt handler even when the test run itself was started with
    SIGINT ignored (a background job of a non-interactive shell ignores it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relayguard", *args], capture_output=True,
                          text=True, timeout=60, env=ENV, cwd=cwd)


def flat(text: str) -> str:
    """Text with rich's box drawing and line wrapping removed, for substring checks."""
    return re.sub(r"[\s│╭╮╰╯─┃━]+", " ", text)


def test_version() -> None:
    """The version, and which access-log scanner this install has (the C one is optional)."""
    proc = run("--version")
    try:
        import relayguard._fastscan  # noqa: F401
        scanner = "C (relayguard/_fastscan.c)"
    except ImportError:
        scanner = "pure Python (no C compiler at install: slower, same results)"
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0, f"relayguard {__version__}\naccess-log scanner: {scanner}\n", "")
    # an install built without a compiler says so (the module cannot be imported there)
    pure = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['relayguard._fastscan'] = None; "
         "sys.argv = ['relayguard', '--version']; from relayguard.cli import main; main()"],
        capture_output=True, text=True, timeout=60, env=ENV)
    assert pure.stdout.endswith(
        "access-log scanner: pure Python (no C compiler at install: slower, same results)\n")


def test_ctrl_c_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """SIGINT during a command: 130 and one line, not click's "Aborted!" with 1 (which the
    exit-code contract reads as "findings") nor a traceback. `logs` reads a named pipe that
    stays open, as a live feed would; opening its write end returns once `logs` opened it."""
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "relayguard", "logs", str(fifo)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            preexec_fn=sigint_default)
    try:
        deadline = time.monotonic() + 30
        while True:  # the write end opens once the command has opened the pipe to read it
            try:
                feed = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, \
                    "logs never opened the pipe"
                time.sleep(0.02)
        os.write(feed, b'192.0.2.1 - - [01/Mar/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5'
                       b' "-" "-"\n')
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
        os.close(feed)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.decode() == "relayguard: interrupted\n"


def test_no_command_prints_help_and_exits_2() -> None:
    proc = run()
    assert proc.returncode == 2 and proc.stderr == ""
    assert proc.stdout.startswith("Usage: ") and " audit " in flat(proc.stdout)


def test_command_help_documents_positional_arguments_literally() -> None:
    """Argument help is shown (plain click would drop it) and brackets print as written."""
    text = flat(run("watch", "--help").stdout)
    assert "[FILES]... Log files to follow" in text
    assert "Default: [watch] files from --config." in text


def test_help_lists_every_command_and_a_command_loads_only_its_own_module() -> None:
    """Start-up is part of every command's run time (issue 5 times `logs` end to end), so
    `--version` loads no command module and a command only its own; `--help` still lists every
    command with its help."""
    import importlib

    from relayguard.cli import COMMANDS, app

    text = flat(run("--help").stdout)
    for name in COMMANDS:
        importlib.import_module(f"relayguard.cli.{name}")
        doc = app.commands[name].help or ""
        assert f" {name} {' '.join(doc.split()[:4])}" in text, name
    probe = ("import sys\nfrom relayguard.cli import main\nsys.argv[0] = 'relayguard'\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.startswith('relayguard.cli.')))")
    for args, loaded in ((["--version"], []), (["logs", "/nonexistent.log"], ["logs"]),
                         (["rules", "--help"], ["rules"])):
        proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                              text=True, timeout=60, env=ENV)
        assert proc.stdout.splitlines()[-1] == repr([f"relayguard.cli.{n}" for n in loaded])


def test_rules_lists_every_rule() -> None:
    proc = run("rules")
    assert proc.returncode == 0, proc.stderr
    rules = all_rules()
    assert proc.stdout.splitlines()[0].strip() == f"{len(rules)} rules"
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 5 and cells[0]:
            rows[cells[0]] = cells
    for r in rules:
        assert r.id in rows, f"{r.id} missing from `relayguard rules`"
        assert rows[r.id][1:4] == [r.server, r.category.value, r.severity.label]
        # The description column may wrap; its first words are on the id's line.
        assert rows[r.id][4] and r.title.startswith(rows[r.id][4])


@pytest.mark.parametrize("rule", all_rules()[:3], ids=lambda r: r.id)
def test_rules_id_prints_the_doc(rule: Rule) -> None:
    proc = run("rules", rule.id.lower())  # ids are case-insensitive
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == rule.doc()
    assert proc.stdout.startswith(f"# {rule.id}: {rule.title}\n")


def test_unknown_rule_exits_2_with_a_clear_message() -> None:
    proc = run("rules", "NO-SUCH-RULE")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == ("relayguard: error: no rule 'NO-SUCH-RULE'; `relayguard rules` "
                           "lists them\n")


def test_bad_fail_on_is_a_usage_error() -> None:
    proc = run("audit", "--fail-on", "severe")
    assert proc.returncode == 2
    err = flat(proc.stderr)
    assert "--fail-on" in err and "unknown severity 'severe'" in err
    assert "Traceback" not in proc.stderr


def test_unknown_command_and_format_are_usage_errors() -> None:
    assert run("frobnicate").returncode == 2
    proc = run("audit", "--format", "xml")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.skipif(rule_by_id("APACHE-OPEN-FORWARD-PROXY") is None,
                    reason="the Apache rules are not in this tree")
def test_audit_exit_codes_end_to_end(tmp_path: Path) -> None:
    rule = rule_by_id("APACHE-OPEN-FORWARD-PROXY")
    assert rule is not None
    bad = tmp_path / "httpd.conf"
    bad.write_text(rule.bad, encoding="utf-8")
    proc = run("audit", "--type", "apache", "--format", "json", str(bad))
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["command"] == "audit"
    assert "APACHE-OPEN-FORWARD-PROXY" in {f["rule"] for f in doc["findings"]}
    quiet = tmp_path / "quiet" / "httpd.conf"
    quiet.parent.mkdir()
    quiet.write_text("ServerRoot /etc/apache2\nListen 8080\n", encoding="utf-8")
    proc = run("audit", "--type", "apache", "--format", "json", str(quiet))
    assert (proc.returncode, json.loads(proc.stdout)["findings"]) == (0, [])
    proc = run("audit", "--type", "apache", "--format", "json", str(tmp_path / "missing.conf"))
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["errors"][0]["message"] == "no such file or directory"


# --- exit status logic, on constructed reports -------------------------------------------------

def rep(*severities: Severity, errors: int = 0) -> Report:
    findings = tuple(Finding(f"R-{i}", Category.OPEN_HTTP_PROXY, s, Confidence.LIKELY, "t",
                             Location(path="/x", line=i + 1)) for i, s in enumerate(severities))
    return Report("audit", findings, tuple(ErrorEntry("/y", "unreadable") for _ in range(errors)))


@pytest.mark.parametrize(("report", "fail_on", "status"), [
    (rep(), Severity.HIGH, ExitStatus.OK),
    (rep(), Severity.INFO, ExitStatus.OK),
    (rep(Severity.MEDIUM, Severity.LOW), Severity.HIGH, ExitStatus.OK),
    (rep(Severity.HIGH), Severity.HIGH, ExitStatus.FINDINGS),  # at the threshold counts
    (rep(Severity.CRITICAL), Severity.HIGH, ExitStatus.FINDINGS),
    (rep(Severity.INFO), Severity.INFO, ExitStatus.FINDINGS),
    (rep(Severity.HIGH), Severity.CRITICAL, ExitStatus.OK),
    # Anything unchecked is never "clean", and outranks findings.
    (rep(errors=1), Severity.HIGH, ExitStatus.ERROR),
    (rep(Severity.CRITICAL, errors=2), Severity.HIGH, ExitStatus.ERROR),
    (rep(Severity.INFO, errors=1), Severity.CRITICAL, ExitStatus.ERROR),
])
def test_exit_status(report: Report, fail_on: Severity, status: ExitStatus) -> None:
    assert exit_status(report, fail_on) is status
    assert (int(ExitStatus.OK), int(ExitStatus.FINDINGS), int(ExitStatus.ERROR)) == (0, 1, 2)


def test_parse_fail_on() -> None:
    assert parse_fail_on("Medium") is Severity.MEDIUM
    with pytest.raises(click.BadParameter, match="unknown severity 'x'"):
        parse_fail_on("x")


def test_emit_prints_and_exits_with_the_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(click.exceptions.Exit) as exc:
        emit(rep(Severity.CRITICAL), OutputFormat.JSON, Severity.HIGH)
    assert exc.value.exit_code == 1
    assert [f["rule"] for f in json.loads(capsys.readouterr().out)["findings"]] == ["R-0"]
    with pytest.raises(click.exceptions.Exit) as exc:
        emit(rep(Severity.LOW), None, Severity.HIGH)  # text by default, never ANSI to a pipe
    out = capsys.readouterr().out
    assert exc.value.exit_code == 0 and "1 finding(s): 1 low" in out and "\x1b" not in out


def test_emit_writes_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "report.md"
    with pytest.raises(click.exceptions.Exit) as exc:
        emit(rep(errors=1), OutputFormat.MARKDOWN, Severity.HIGH, target)
    assert exc.value.exit_code == 2
    assert capsys.readouterr().out == ""
    assert target.read_text(encoding="utf-8").startswith("# relayguard audit report\n")
    with pytest.raises(click.exceptions.Exit) as exc:
        emit(rep(), OutputFormat.JSON, Severity.HIGH, tmp_path / "no" / "dir" / "x.json")
    assert exc.value.exit_code == 2
    assert capsys.readouterr().err.startswith("relayguard: error: cannot write ")


def test_rules_listing_prints_titles_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    """Titles are not rich markup: "[P]" (RewriteRule's proxy flag) must survive."""
    from click.testing import CliRunner

    from relayguard.cli import app

    fake = Rule(id="APACHE-REWRITE-P-FLAG-WITH-A-RATHER-LONG-IDENTIFIER", server="apache",
                category=Category.OPEN_HTTP_PROXY, severity=Severity.HIGH,
                title="RewriteRule [P] to a host taken from the request [bold]x[/]",
                description="d", why="w", fix="f", reference="https://httpd.apache.org/")
    monkeypatch.setattr("relayguard.cli.rules.all_rules", lambda: (fake,))
    result = CliRunner().invoke(app, ["rules"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert fake.id in result.output  # never folded, even on a narrow terminal
    assert "RewriteRule [P]" in flat(result.output)
    assert "[bold]" in result.output and "[/]" in result.output


def test_rules_json_for_scripts() -> None:
    proc = run("rules", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert [r["id"] for r in listed] == [r.id for r in all_rules()]
    first = all_rules()[0]
    assert listed[0] == {"id": first.id, "server": first.server,
                         "category": first.category.value, "severity": first.severity.label,
                         "title": first.title, "description": first.description,
                         "why": first.why, "fix": first.fix, "reference": first.reference,
                         "bad": first.bad, "good": first.good}
    proc = run("rules", first.id, "-f", "json")
    assert (proc.returncode, json.loads(proc.stdout)) == (0, listed[0])


def test_rules_markdown_and_unsupported_sarif() -> None:
    proc = run("rules", "--format", "markdown")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["| id | server | category | severity | title |", "|---|---|---|---|---|"]
    assert len(lines) == 2 + len(all_rules())
    proc = run("rules", "--format", "sarif")
    assert proc.returncode == 2 and "use json or markdown" in proc.stderr
