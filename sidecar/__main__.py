"""`python -m sidecar ...` is the `ringside` command (for hosts without the console script)."""

from sidecar.cli import main

main()
