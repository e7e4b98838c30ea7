"""Meta-tests over the whole rule catalogue: every rule is documented, and every audit rule's
`bad` example fires it while its `good` example does not (so the docs cannot go stale).

Examples are written to a file named as the server names its config (httpd.conf, squid.conf,
main.cf…), which is what gets audited. Two conventions let an example say more:
- a first line `# file: NAME` writes it to NAME instead (e.g. Exim's update-exim4.conf.conf);
- a line `#--- NAME` starts another file of the same config directory (Postfix's master.cf).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from relayguard.catalogue import Rule, all_rules, rule_by_id
from relayguard.findings import Category, Severity

ROOT = Path(__file__).resolve().parent.parent
RULES = all_rules()
ID_RE = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+$")
# The file each audited server family reads as its main config.
CONFIG_NAME = {
    "apache": "httpd.conf",
    "nginx": "nginx.conf",
    "squid": "squid.conf",
    "tinyproxy": "tinyproxy.conf",
    "privoxy": "config",
    "dante": "danted.conf",
    "microsocks": "microsocks.conf",
    "postfix": "main.cf",
    "exim": "exim4.conf",
}
AUDIT_RULES = [r for r in RULES if r.server in CONFIG_NAME]
# Rules judged from other evidence; their examples (if any) are tested by their own modules.
OTHER_SERVERS = {"probe", "logs", "blocklist", "cross"}
FILE_HEADER = re.compile(r"\A#\s*(?:file|path):\s*(\S+)\s*\n")
NEXT_FILE = re.compile(r"^#---\s*(\S+)\s*\n", re.M)


def ids(rules: list[Rule]) -> list[str]:
    return [r.id for r in rules]


def test_catalogue_is_not_empty_and_ids_unique() -> None:
    assert RULES, "all_rules() returned nothing"
    seen = [r.id for r in RULES]
    assert len(seen) == len(set(seen)), sorted({i for i in seen if seen.count(i) > 1})


@pytest.mark.parametrize("rule", RULES, ids=ids(list(RULES)))
def test_rule_metadata(rule: Rule) -> None:
    assert ID_RE.match(rule.id), rule.id
    for name in ("title", "description", "why", "fix", "server"):
        value = getattr(rule, name)
        assert isinstance(value, str) and value.strip(), f"{rule.id}: empty {name}"
    assert "\n" not in rule.title, f"{rule.id}: the title is one line"
    url = urlsplit(rule.reference)
    assert url.scheme == "https" and url.netloc and not re.search(r"\s", rule.reference), (
        f"{rule.id}: reference must be an https URL, got {rule.reference!r}")
    # A misspelt family ("Squid", "postfix3") would silently skip the example test below.
    assert rule.server in CONFIG_NAME or rule.server in OTHER_SERVERS, (
        f"{rule.id}: unknown server {rule.server!r}; add it to CONFIG_NAME or OTHER_SERVERS "
        "in tests/test_catalogue.py")
    assert isinstance(rule.severity, Severity)
    assert isinstance(rule.category, Category)
    assert rule_by_id(rule.id.lower()) is rule


def example_path(rule: Rule, text: str, tmp: Path) -> Path:
    """Write the example's file(s) where the server would read them; return the main one."""
    m = FILE_HEADER.match(text)
    name = m.group(1) if m else CONFIG_NAME[rule.server]
    parts = NEXT_FILE.split(text)  # [main, name2, text2, name3, text3, ...]
    files = [(name, parts[0]), *zip(parts[1::2], parts[2::2], strict=True)]
    directory = tmp / rule.server
    for fname, body in files:
        path = directory / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    return directory / name


def audit_example(rule: Rule, text: str, tmp: Path) -> set[str]:
    from relayguard.audit import audit_paths

    report = audit_paths([example_path(rule, text, tmp)], server_type=rule.server)
    # An example that does not even parse would make "does not fire" meaningless.
    assert not report.errors, [str(e) for e in report.errors]
    return {f.rule for f in report.findings}


@pytest.mark.parametrize("rule", AUDIT_RULES, ids=ids(AUDIT_RULES))
def test_bad_example_fires_and_good_does_not(rule: Rule, tmp_path: Path) -> None:
    assert rule.bad.strip(), f"{rule.id}: audit rules need a `bad` example"
    assert rule.good.strip(), f"{rule.id}: audit rules need a `good` example"
    fired = audit_example(rule, rule.bad, tmp_path / "bad")
    assert rule.id in fired, f"{rule.id}: its bad example gave only {sorted(fired)}"
    fired = audit_example(rule, rule.good, tmp_path / "good")
    assert rule.id not in fired, f"{rule.id}: its good example fires it"


def test_rule_docs_are_up_to_date() -> None:
    """docs/rules/ is generated; regenerate with `python scripts/gen_rule_docs.py`."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_rule_docs.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_rule_docs_generator_detects_every_kind_of_staleness(tmp_path: Path) -> None:
    script = [sys.executable, str(ROOT / "scripts" / "gen_rule_docs.py"), "--docs", str(tmp_path)]

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([*script, "--check"], capture_output=True, text=True, timeout=60)

    assert check().returncode == 1  # missing
    assert subprocess.run(script, capture_output=True, timeout=60).returncode == 0
    assert check().returncode == 0
    pages = sorted(p.name for p in tmp_path.iterdir())
    assert pages == sorted(["index.md", *(f"{r.id}.md" for r in RULES)])
    index = (tmp_path / "index.md").read_text(encoding="utf-8")
    for r in RULES:
        assert f"| [{r.id}]({r.id}.md) | {r.server} | {r.category.value} | {r.severity.label} |" \
            in index
        assert (tmp_path / f"{r.id}.md").read_text(encoding="utf-8").endswith(r.doc())
    first = tmp_path / f"{RULES[0].id}.md"
    first.write_text(first.read_text(encoding="utf-8") + "edited by hand\n", encoding="utf-8")
    proc = check()
    assert proc.returncode == 1 and first.name in proc.stderr  # changed
    (tmp_path / "GONE-RULE.md").write_text("old\n", encoding="utf-8")
    subprocess.run(script, capture_output=True, timeout=60)
    assert not (tmp_path / "GONE-RULE.md").exists()  # pages of removed rules are deleted
    assert check().returncode == 0
