"""The server keeps its providers' journals in its store, where every replica reads them."""

from __future__ import annotations

from reconciler.engine import open_session
from reconciler.provider import ProviderContext
from tests.server.harness import Harness


def test_the_servers_providers_keep_their_journals_in_its_store(harness: Harness) -> None:
    seen: list[ProviderContext] = []

    class Probe:
        def close(self) -> None:
            pass

    def factory(context: ProviderContext) -> Probe:
        seen.append(context)
        return Probe()

    engine = harness.service.engine
    with open_session({}, ["probe"], engine.settings, None, {"probe": factory}):  # type: ignore[dict-item]
        pass
    [context] = seen
    assert context.journals is not None
    context.journals("redfish-accounts").record("https://10.0.0.5 monitor", fingerprint="fp")
    stored = harness.store.journal_entries("redfish-accounts")
    assert stored["https://10.0.0.5 monitor"]["fingerprint"] == "fp"
