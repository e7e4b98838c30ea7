"""relayguard: find out what a stranger can make a server relay, and whether they already did."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("relayguard")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
