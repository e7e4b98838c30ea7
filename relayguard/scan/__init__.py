"""`relayguard scan`: every kind of evidence about one host (or a fleet), correlated.

`scan_sites` / `scan_host` (runner.py) run audit, probe, logs and blocklist through their own
APIs; `correlate` turns the findings into stories and a verdict; `render` tells them.
"""

from relayguard.scan.runner import fleet_summary, scan_host, scan_sites
from relayguard.scan.site import ScanOptions, Site

__all__ = ["ScanOptions", "Site", "fleet_summary", "scan_host", "scan_sites"]
