"""Rules of the stand-alone proxies (Squid, tinyproxy, Privoxy, Dante, microsocks), in
report order; one name for the audit rule registry to import."""

from __future__ import annotations

from relayguard.audit.rules.dante import RULES as DANTE_RULES
from relayguard.audit.rules.microsocks import RULES as MICROSOCKS_RULES
from relayguard.audit.rules.privoxy import RULES as PRIVOXY_RULES
from relayguard.audit.rules.squid import RULES as SQUID_RULES
from relayguard.audit.rules.tinyproxy import RULES as TINYPROXY_RULES
from relayguard.catalogue import Rule

RULES: tuple[Rule, ...] = (*SQUID_RULES, *TINYPROXY_RULES, *PRIVOXY_RULES, *DANTE_RULES,
                           *MICROSOCKS_RULES)
