"""DNS blocklist checks: a dated zone catalogue, RFC 5782 names, self-tested lists, verdicts.

Flow: `names` parses targets and builds query names, `dnsclient` asks the chosen resolver
politely, `check` self-tests each list and decides per (target, list) and per target,
`report` turns that into findings (rules in `rules`), errors, notes and stats.
"""
