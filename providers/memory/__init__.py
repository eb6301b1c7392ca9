"""An in-memory BMC provider: the same contract as Redfish, no network.

Used by the pure-core tests, the CPU-only benchmark and to try plans offline. Each resource's
live state is a dict of flat paths; BIOS values staged with `bios.set` are pending until a
reset or power-on, like a real BMC.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from reconciler.errors import PermanentError, UnreachableError
from reconciler.model import Action, Address, LiveResource, Resource, typed
from reconciler.model.hardware import ServerSpec
from reconciler.model.live import unreachable
from reconciler.provider import ProviderContext

BIOS = "bios.attributes."


class MemoryFleet:
    """The live systems a MemoryProvider serves, keyed by address; shared across providers."""

    def __init__(self, systems: Mapping[Address, Mapping[str, Any]] | None = None) -> None:
        self.lock = threading.Lock()
        self.systems: dict[Address, dict[str, Any]] = {
            a: {
                "state": dict(s.get("state", {})),
                "pending": dict(s.get("pending", {})),
                "facts": dict(s.get("facts", {})),
            }
            for a, s in (systems or {}).items()
        }
        self.down: set[Address] = set()
        self.fail_operations: dict[tuple[Address, str], str] = {}
        self.calls: list[tuple[Address, str]] = []
        self.latency: dict[str, float] = {}
        """Seconds an operation takes (`power.reset` -> 2.0): a BMC's answer, a reboot; `read`
        is one BMC's answer to a read, the provider reading `parallelism` BMCs at once."""

    def snapshot(self, address: Address) -> LiveResource:
        with self.lock:
            if address in self.down or address not in self.systems:
                return unreachable(address, f"{address}: connection refused")
            system = self.systems[address]
            state, pending = dict(system["state"]), dict(system["pending"])
        return LiveResource.model_construct(
            address=address, state=state, pending=pending, facts=system["facts"]
        )


class MemoryProvider:
    name: ClassVar[str] = "memory"
    kinds: ClassVar[frozenset[str]] = frozenset({"Server"})
    operations: ClassVar[frozenset[str]] = frozenset(
        {"power.on", "power.off", "power.reset", "bios.set", "boot.set", "account.rotate"}
    )

    def __init__(self, context: ProviderContext, fleet: MemoryFleet) -> None:
        self.context = context
        self.fleet = fleet

    def endpoint(self, resource: Resource) -> str:
        return f"memory:{typed(resource, ServerSpec).spec.bmc.address}"

    def read(self, resources: Sequence[Resource]) -> Mapping[Address, LiveResource]:
        delay = self.fleet.latency.get("read", 0.0)
        if delay and resources:
            # As a network provider: `parallelism` requests in flight, each taking `delay`.
            rounds = math.ceil(len(resources) / self.context.limiter.parallelism)
            time.sleep(delay * rounds)
        return {r.address: self.fleet.snapshot(r.address) for r in resources}

    def execute(self, action: Action, resource: Resource) -> LiveResource:
        fleet = self.fleet
        address = action.address
        delay = fleet.latency.get(action.operation, 0.0)
        if delay:
            time.sleep(delay)  # outside the lock: the fleet's BMCs work in parallel
        with fleet.lock:
            fleet.calls.append((address, action.operation))
            if address in fleet.down:
                raise UnreachableError(endpoint=self.endpoint(resource), cause="connection refused")
            failure = fleet.fail_operations.get((address, action.operation))
            if failure:
                raise PermanentError(f"{address}: {failure}")
            system = fleet.systems[address]
            state, pending = system["state"], system["pending"]
            op = action.operation
            if op == "bios.set":
                for name, value in action.params["attributes"].items():
                    pending[BIOS + name] = value
            elif op == "boot.set":
                for key, value in action.params.items():
                    state[f"boot.{key}"] = value
            elif op in ("power.on", "power.reset"):
                state.update(pending)
                pending.clear()
                state["power"] = "On"
            elif op == "power.off":
                state["power"] = "Off"
            elif op == "account.rotate":  # the BMC now takes the Credential's new secret
                state["bmc.login"] = "current"
            else:
                raise PermanentError(f"operation {op} is not supported")
        return fleet.snapshot(address)

    def close(self) -> None:
        return None


def memory_factory(fleet: MemoryFleet) -> Any:
    """A provider factory bound to `fleet`, for `Engine(factories={...})`."""
    return lambda context: MemoryProvider(context, fleet)
