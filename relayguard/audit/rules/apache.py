"""Apache httpd rules (being written)."""

from relayguard.catalogue import Rule

RULES: tuple[Rule, ...] = ()
