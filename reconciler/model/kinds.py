"""The registry of kinds: kind name -> spec model, and the references between them."""

from __future__ import annotations

from pydantic import BaseModel

from reconciler.model.credentials import CredentialSpec
from reconciler.model.hardware import BiosTemplateSpec, ServerSpec
from reconciler.model.policy import PolicySpec

KIND_SPECS: dict[str, type[BaseModel]] = {
    "Credential": CredentialSpec,
    "BiosTemplate": BiosTemplateSpec,
    "Server": ServerSpec,
    "Policy": PolicySpec,
}


def spec_model(kind: str) -> type[BaseModel] | None:
    return KIND_SPECS.get(kind)
