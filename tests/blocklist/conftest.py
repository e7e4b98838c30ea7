"""Fixtures for the blocklist tests; the servers themselves live in blocklist_servers.py."""

from blocklist_servers import _no_system_resolver, faults, rbl_bad, rbl_good, silent

__all__ = ["_no_system_resolver", "faults", "rbl_bad", "rbl_good", "silent"]
