"""What a site worker sends back: a fact many resources share crosses once, and comes back as
one object; a worker's tasks share its per-endpoint request slots."""

from __future__ import annotations

import json
from typing import Any

from metalform.sites.tasks import WorkerState
from metalform.sites.wire import (
    COMPRESS_OVER,
    lives_from_json,
    lives_json,
    pack_reply,
    unpack_reply,
)
from reconciler.model import LiveResource
from reconciler.model.live import unreachable

REGISTRY = {
    "RegistryEntries": {
        "Attributes": [
            {"AttributeName": f"UniqueAttribute{i}", "Type": "Enumeration", "Value": ["A", "B"]}
            for i in range(50)
        ]
    }
}


def _fleet(registry: dict[str, Any]) -> dict[str, LiveResource]:
    lives = {
        f"Server/n{i}": LiveResource(
            address=f"Server/n{i}",
            state={"power": "On", "bios.attributes.UniqueAttribute1": "A"},
            facts={"model": "G8", "biosRegistry": registry, "serial": f"S{i}"},
        )
        for i in range(3)
    }
    lives["Server/lone"] = LiveResource(
        address="Server/lone", facts={"biosRegistry": {"RegistryEntries": {"Attributes": []}}}
    )
    lives["Server/down"] = unreachable("Server/down", "connection refused")
    return lives


def test_a_shared_registry_crosses_once_and_comes_back_as_one_object() -> None:
    lives = _fleet(REGISTRY)
    text = json.dumps(lives_json(lives))
    assert text.count("UniqueAttribute49") == 1  # not once per server
    known: dict[str, Any] = {}
    back = lives_from_json(json.loads(text), known)
    assert back == lives  # every field, facts included, as the worker read it
    registries = [back[f"Server/n{i}"].facts["biosRegistry"] for i in range(3)]
    assert all(r is registries[0] for r in registries)
    assert back["Server/lone"].facts["biosRegistry"] == {"RegistryEntries": {"Attributes": []}}
    assert back["Server/down"].error == "connection refused"

    # The next answer of the same plan (another chunk) reuses the copy already decoded.
    again = lives_from_json(json.loads(json.dumps(lives_json(_fleet(REGISTRY)))), known)
    assert again["Server/n0"].facts["biosRegistry"] is registries[0]
    assert len(known) == 1


def test_different_registries_stay_apart() -> None:
    other = {"RegistryEntries": {"Attributes": [{"AttributeName": "Other"}]}}
    lives = {**_fleet(REGISTRY), **{f"Server/m{i}": _model_b(i, other) for i in range(2)}}
    back = lives_from_json(json.loads(json.dumps(lives_json(lives))))
    assert back["Server/m0"].facts["biosRegistry"] == other
    assert back["Server/n0"].facts["biosRegistry"] == REGISTRY


def _model_b(i: int, registry: dict[str, Any]) -> LiveResource:
    return LiveResource(address=f"Server/m{i}", facts={"biosRegistry": registry})


def test_a_workers_tasks_share_one_limiter_per_sender_setting() -> None:
    state = WorkerState(site="east", key=b"k", label="site", per_endpoint=3)
    first = state.limiter({"parallelism": 64, "perEndpoint": 2})
    assert state.limiter({"parallelism": 64, "perEndpoint": 2}) is first
    assert (first.parallelism, first.per_endpoint) == (64, 2)
    assert state.limiter({"parallelism": 64, "perEndpoint": 4}) is not first
    default = state.limiter({})  # an older sender: the worker's own limits
    assert default.per_endpoint == 3


def test_a_big_reply_goes_compressed_and_a_small_one_as_json() -> None:
    small = {"task": "t", "live": {}}
    assert pack_reply(small).startswith(b"{")
    assert unpack_reply(pack_reply(small)) == small
    assert unpack_reply(pack_reply(small).decode()) == small
    big = lives_json(_fleet(REGISTRY) | {f"Server/x{i}": _model_b(i, {"n": i}) for i in range(400)})
    packed = pack_reply(big)
    assert len(json.dumps(big)) > COMPRESS_OVER > len(packed)
    assert unpack_reply(packed) == big
