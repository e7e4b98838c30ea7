"""`python -m relayguard` runs the CLI."""

from relayguard.cli import main

main()
