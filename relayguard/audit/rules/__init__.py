"""Every audit rule, as one explicit ordered tuple (no plugin discovery, no magic)."""

from __future__ import annotations

from relayguard.audit.rules.apache import RULES as APACHE_RULES
from relayguard.catalogue import Rule

RULES: tuple[Rule, ...] = (*APACHE_RULES,)
