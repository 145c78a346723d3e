"""Files of this checkout that several tests read."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_INVENTORY = ROOT / "config" / "distributed_hosts.example.yaml"
"""The orchestrator's inventory format, sanitized: a copy of ``../shared/fixtures``' file kept in
the repository so the tests need nothing outside the checkout (``test_packaging`` checks that
the copy has not drifted where the original is present)."""
