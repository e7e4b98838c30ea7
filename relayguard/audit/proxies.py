"""The stand-alone proxy auditors (Squid, tinyproxy, Privoxy, Dante, microsocks), in report
order; one name for the audit driver's registry to import."""

from __future__ import annotations

from relayguard.audit.dante import DanteAuditor
from relayguard.audit.microsocks import MicrosocksAuditor
from relayguard.audit.privoxy import PrivoxyAuditor
from relayguard.audit.squid import SquidAuditor
from relayguard.audit.tinyproxy import TinyproxyAuditor

PROXY_AUDITORS = (SquidAuditor(), TinyproxyAuditor(), PrivoxyAuditor(), DanteAuditor(),
                  MicrosocksAuditor())
