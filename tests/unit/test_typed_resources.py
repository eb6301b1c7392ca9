"""`Resource` is generic in its spec: the narrowing helpers check the spec model at run time."""

from __future__ import annotations

import pytest

from reconciler.load import DesiredState
from reconciler.model import Metadata, Resource, find, is_of, typed
from reconciler.model.hardware import Bmc, BmcDriver, ServerSpec
from reconciler.model.providers import ProviderSpec, ProviderType


def server(name: str = "node-1") -> Resource[ServerSpec]:
    bmc = Bmc(driver=BmcDriver.REDFISH, address="https://10.0.0.1", credential="bmc")
    return Resource(kind="Server", metadata=Metadata(name=name), spec=ServerSpec(bmc=bmc))


def provider(name: str = "maas") -> Resource[ProviderSpec]:
    spec = ProviderSpec(type=ProviderType.MAAS, url="http://127.0.0.1:5240/MAAS")
    return Resource(kind="Provider", metadata=Metadata(name=name), spec=spec)


def state(*resources: Resource) -> DesiredState:
    return DesiredState(revision="r", resources={r.address: r for r in resources})


def test_typed_returns_the_resource_itself_when_its_spec_is_of_the_model() -> None:
    resource: Resource = server()
    assert typed(resource, ServerSpec) is resource
    assert is_of(resource, ServerSpec)
    assert not is_of(resource, ProviderSpec)


def test_typed_names_the_resource_and_both_models_when_the_spec_is_another() -> None:
    with pytest.raises(TypeError, match=r"Server/node-1: spec is a ServerSpec, not a ProviderSpec"):
        typed(server(), ProviderSpec)


def test_of_kind_and_get_type_by_spec_model() -> None:
    desired = state(server("a"), server("b"), provider())
    assert [r.name for r in desired.of_kind("Server", ServerSpec)] == ["a", "b"]
    assert desired.of_kind("Server") == desired.of_kind("Server", ServerSpec)
    found = desired.get("Provider", "maas", ProviderSpec)
    assert found is not None and found.spec.type is ProviderType.MAAS
    assert desired.get("Provider", "absent", ProviderSpec) is None
    with pytest.raises(TypeError, match="not a ServerSpec"):
        desired.of_kind("Provider", ServerSpec)


def test_find_looks_up_an_address_typed() -> None:
    resources = {r.address: r for r in (server(), provider())}
    found = find(resources, "Server/node-1", ServerSpec)
    assert found is not None and found.spec.bmc.credential == "bmc"
    assert find(resources, "Server/other", ServerSpec) is None
    with pytest.raises(TypeError):
        find(resources, "Provider/maas", ServerSpec)


def test_a_resource_serializes_its_spec_as_its_own_model() -> None:
    # The field's declared type is the bound (no fields): the spec must still dump in full.
    dumped = server().model_dump(mode="json", by_alias=True)
    assert dumped["spec"]["bmc"]["address"] == "https://10.0.0.1"
    assert dumped["spec"]["reboot"] == server().spec.reboot.value
