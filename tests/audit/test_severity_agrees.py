"""`relayguard rules` lists each rule's worst severity: no audit finding may be reported above
it (SQUID-IMPLICIT-ALLOW was listed high and reported critical). Every audit rule's `bad`
example is audited for an Internet client and for an untrusted loopback client."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from relayguard.audit import audit_paths
from relayguard.audit.base import AuditOptions
from relayguard.catalogue import Rule, rule_by_id
from tests.test_catalogue import AUDIT_RULES, example_path


@pytest.mark.parametrize("rule", AUDIT_RULES, ids=[r.id for r in AUDIT_RULES])
def test_no_finding_above_its_catalogue_severity(rule: Rule, tmp_path: Path) -> None:
    path = example_path(rule, rule.bad, tmp_path)
    for client in (None, ipaddress.ip_address("127.0.11.250")):
        report = audit_paths([path], server_type=rule.server,
                             options=AuditOptions(outside_client=client))
        for f in report.findings:
            listed = rule_by_id(f.rule)
            assert listed is not None
            assert f.severity <= listed.severity, \
                f"{f.rule}: reported {f.severity.label}, listed {listed.severity.label}"
