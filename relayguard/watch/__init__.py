"""`relayguard watch`: the `logs` detectors fed live from followed files (logs/follow.py),
with persisted state (state.py), alert channels (alerts.py), responses (respond.py), metrics
(metrics.py) and blocklist re-checks (recheck.py), driven by daemon.py."""
