"""A kind is declared once: a toy kind declared here (model, planner, provider) is loaded,
checked, ordered, planned and applied by the engine without any other file changing."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, ClassVar

import pytest
from pydantic import Field

from reconciler.engine import Engine
from reconciler.errors import InputError
from reconciler.load import load
from reconciler.model import Action, Address, ChangeKind, LiveResource, Resource
from reconciler.model.base import SpecModel
from reconciler.model.plan import Change
from reconciler.model.registry import Kind, Ref, kinds, references_of, register, unregister
from reconciler.planners import Draft, PlanContext, ResourcePlan
from reconciler.provider import ProviderContext


# --- the toy kind: its model ... ----------------------------------------------------------------
class RackSpec(SpecModel):
    credential: Annotated[str, Ref("Credential")] = Field(description="Name of a Credential")
    label: str


# ... its planner ...
def plan_rack(
    desired: Resource | None, live: LiveResource | None, ctx: PlanContext
) -> ResourcePlan:
    assert desired is not None and live is not None
    address = desired.address
    if live.state.get("label") == desired.spec.label:
        return ResourcePlan(address, Change(address=address, action=ChangeKind.NOOP))
    result = ResourcePlan(address, Change(address=address, action=ChangeKind.UPDATE))
    result.drafts.append(
        Draft(key="label", operation="rack.label", params={"label": desired.spec.label})
    )
    return result


RACK = Kind(
    "Rack",
    RackSpec,
    planner=f"{__name__}:plan_rack",
    phases={"rack": 5},
    drivers=lambda resource, provider_type: ["racks"],
)


# ... and its provider.
class RackProvider:
    kinds: ClassVar[frozenset[str]] = frozenset({"Rack"})
    operations: ClassVar[frozenset[str]] = frozenset({"rack.label"})
    labels: ClassVar[dict[Address, str]] = {}

    def __init__(self, context: ProviderContext) -> None:
        self.context = context

    def endpoint(self, resource: Resource) -> str:
        return f"rack:{resource.name}"

    def read(self, resources: Sequence[Resource]) -> Mapping[Address, LiveResource]:
        return {r.address: self._live(r.address) for r in resources}

    def execute(self, action: Action, resource: Resource) -> LiveResource:
        self.labels[action.address] = action.params["label"]
        return self._live(action.address)

    def _live(self, address: Address) -> LiveResource:
        return LiveResource(address=address, state={"label": self.labels.get(address, "")})

    def close(self) -> None:
        return None


@pytest.fixture
def rack_kind() -> Iterator[Kind]:
    register(RACK)
    RackProvider.labels.clear()
    yield RACK
    unregister("Rack")


def repo(tmp_path: Path, credential: str = "bmc") -> Path:
    (tmp_path / "site.yaml").write_text(
        textwrap.dedent(f"""\
        apiVersion: metalform/v1
        kind: Credential
        metadata: {{name: bmc}}
        spec: {{type: token, token: {{fromEnv: RACK_TOKEN}}}}
        ---
        apiVersion: metalform/v1
        kind: Rack
        metadata: {{name: r1}}
        spec: {{credential: {credential}, label: row-a}}
        """)
    )
    return tmp_path


def test_a_registered_kind_is_known_with_its_references(rack_kind: Kind) -> None:
    assert kinds()["Rack"] is rack_kind
    assert references_of(RackSpec) == ((("spec", "credential"), Ref("Credential")),)


def test_the_loader_checks_a_registered_kind(rack_kind: Kind, tmp_path: Path) -> None:
    with pytest.raises(InputError) as failed:
        load(repo(tmp_path, credential="nope"))
    messages = [d.render() for d in failed.value.diagnostics]
    assert messages == [
        "site.yaml:9:8: error: Rack/r1 spec.credential: Credential 'nope' is not defined"
    ], messages


def test_engine_plans_and_applies_a_registered_kind(
    rack_kind: Kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RACK_TOKEN", "t0ken")
    engine = Engine(factories={"racks": RackProvider})
    plan = engine.plan(repo(tmp_path)).plan
    assert [(a.address, a.operation) for a in plan.actions] == [("Rack/r1", "rack.label")]
    engine.apply(plan, path=tmp_path)
    assert RackProvider.labels == {"Rack/r1": "row-a"}
    assert engine.plan(repo(tmp_path)).plan.actions == []


def test_an_unregistered_kind_is_unknown_again(tmp_path: Path) -> None:
    assert "Rack" not in kinds()
