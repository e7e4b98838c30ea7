"""Every audit rule, as one explicit ordered tuple (no plugin discovery, no magic)."""

from __future__ import annotations

from relayguard.audit.cross import RULES as CROSS_RULES
from relayguard.audit.rules.apache import RULES as APACHE_RULES
from relayguard.audit.rules.exim import RULES as EXIM_RULES
from relayguard.audit.rules.nginx import RULES as NGINX_RULES
from relayguard.audit.rules.postfix import RULES as POSTFIX_RULES
from relayguard.audit.rules.proxies import RULES as PROXY_RULES
from relayguard.catalogue import Rule

RULES: tuple[Rule, ...] = (*APACHE_RULES, *NGINX_RULES, *POSTFIX_RULES, *EXIM_RULES,
                           *CROSS_RULES, *PROXY_RULES)
