"""Ordering actions: phases across resources, dependencies within, waves for execution."""

from __future__ import annotations

import graphlib
from collections.abc import Sequence

from reconciler.model import Action
from reconciler.model.registry import phases


# SPEC: credentials and BMC settings, BIOS, reboot, power, provisioning, aggregate membership,
# services; deletions in reverse.
def phase(operation: str) -> int:
    """Where an operation stands in the action order (its kind declares it; 90 when not)."""
    return phases().get(operation.split(".", 1)[0], 90)


def waves(actions: Sequence[Action]) -> list[list[Action]]:
    """Groups of actions whose dependencies are all in earlier groups."""
    by_id = {a.id: a for a in actions}
    sorter = graphlib.TopologicalSorter({a.id: set(a.depends_on) & by_id.keys() for a in actions})
    sorter.prepare()
    out: list[list[Action]] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        out.append([by_id[i] for i in ready])
        sorter.done(*ready)
    return out
