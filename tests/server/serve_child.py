"""`metalform serve` with the in-memory fleet, for tests that kill the server.

    python -m tests.server.serve_child CONFIG FLEET_FILE [BLOCK_AT]

The fleet's state is kept in FLEET_FILE (JSON, rewritten after every action), so it outlives
the process like real machines do. With BLOCK_AT = N > 0 the N-th action of this process
writes FLEET_FILE.blocked and then waits for FLEET_FILE.release to exist: the apply stays
running until the test releases it or kills the process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from metalform.cli import _configure_logging
from metalform.server.serve import serve
from providers.memory import MemoryFleet, MemoryProvider
from reconciler.engine import Engine
from reconciler.model import Action, LiveResource, Resource
from reconciler.provider import ProviderContext
from tests.fixtures.ordering import fleet


class KeptFleet(MemoryFleet):
    """A memory fleet saved to a file after every action."""

    def __init__(self, path: Path) -> None:
        if path.exists():
            super().__init__(json.loads(path.read_text(encoding="utf-8")))
        else:
            super().__init__({a: s for a, s in fleet().systems.items()})
        self.path = path
        self.save()

    def save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        with self.lock:
            temporary.write_text(json.dumps(self.systems), encoding="utf-8")
        os.replace(temporary, self.path)


class BlockingProvider(MemoryProvider):
    executed = 0

    def __init__(self, context: ProviderContext, kept: KeptFleet, block_at: int) -> None:
        super().__init__(context, kept)
        self.kept = kept
        self.block_at = block_at

    def execute(self, action: Action, resource: Resource) -> LiveResource:
        BlockingProvider.executed += 1
        if BlockingProvider.executed == self.block_at:
            self.kept.path.with_suffix(".blocked").write_text(
                f"{action.address} {action.operation}", encoding="utf-8"
            )
            release = self.kept.path.with_suffix(".release")
            while not release.exists():  # or until the test kills this process
                time.sleep(0.05)
        result = super().execute(action, resource)
        self.kept.save()
        return result


def main(argv: list[str]) -> int:
    _configure_logging(debug=False)  # as `metalform serve` does
    config, fleet_file = Path(argv[0]), Path(argv[1])
    block_at = int(argv[2]) if len(argv) > 2 else 0
    kept = KeptFleet(fleet_file)

    def factory(context: ProviderContext) -> Any:
        return BlockingProvider(context, kept, block_at)

    return serve(config, engine=Engine(factories={"redfish": factory, "ipmi": factory}))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
