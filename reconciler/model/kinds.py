"""The registry of kinds: kind name -> spec model, and the references between them."""

from __future__ import annotations

from pydantic import BaseModel

from reconciler.model.credentials import CredentialSpec
from reconciler.model.hardware import BiosTemplateSpec, ServerSpec
from reconciler.model.notifications import NotificationChannelSpec, NotificationRuleSpec
from reconciler.model.openstack import AggregateSpec
from reconciler.model.policy import PolicySpec
from reconciler.model.providers import ProviderSpec
from reconciler.model.services import ServiceSpec

KIND_SPECS: dict[str, type[BaseModel]] = {
    "Credential": CredentialSpec,
    "Provider": ProviderSpec,
    "BiosTemplate": BiosTemplateSpec,
    "Server": ServerSpec,
    "Aggregate": AggregateSpec,
    "Service": ServiceSpec,
    "NotificationChannel": NotificationChannelSpec,
    "NotificationRule": NotificationRuleSpec,
    "Policy": PolicySpec,
}


def spec_model(kind: str) -> type[BaseModel] | None:
    return KIND_SPECS.get(kind)
