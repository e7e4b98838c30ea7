"""relayguard: find out what a stranger can make a server relay, and whether they already did."""

# The one place the version is written: pyproject.toml reads it from here (setuptools
# `attr:`), so asking for it costs no package-metadata lookup (importlib.metadata adds
# ~40 ms to every command's start-up).
__version__ = "0.1.0"

# The User-Agent of every HTTP request `probe` sends: `logs` and `watch` recognise this
# tool's own tests by it in the access logs they read later.
PROBE_USER_AGENT = "relayguard-probe"

__all__ = ["PROBE_USER_AGENT", "__version__"]
