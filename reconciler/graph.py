"""Ordering actions: the phase of an operation across resources (declared by its kind)."""

from __future__ import annotations

from reconciler.model.registry import phases


# SPEC: credentials and BMC settings, BIOS, reboot, power, provisioning, aggregate membership,
# services; deletions in reverse.
def phase(operation: str) -> int:
    """Where an operation stands in the action order (its kind declares it; 90 when not)."""
    return phases().get(operation.split(".", 1)[0], 90)
