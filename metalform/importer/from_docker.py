"""Docker containers -> `Service` documents that adopt them, and `Credential`s for secrets.

Each container Metalform did not create becomes a Service with `adopt: true` and what the
container runs beyond its image's own settings (see providers.docker.adopt). An environment
value that looks like a secret is never written: the Service refers to a new Credential
(`{credential: NAME}`) whose token comes from an environment variable to fill in, and the
report names that variable. Containers Metalform manages already are left to their Services.
"""

from __future__ import annotations

import re
from typing import Any

from metalform.importer.collected import Collected, SourceOptions
from metalform.importer.documents import document, slug
from providers.docker import DockerProvider
from providers.docker.adopt import inspected_config, looks_secret, running
from providers.docker.client import DockerEngine
from providers.docker.mapping import container_name, is_managed, resource_of
from reconciler.load import DesiredState
from reconciler.model import Resource
from reconciler.model.providers import ProviderSpec
from reconciler.planners.service import RESERVED_LABEL_PREFIX
from reconciler.provider import ProviderContext
from reconciler.secrets import REDACTOR

VARIABLE_PREFIX = "METALFORM_SECRET_"


def variable_for(container: str, name: str) -> str:
    """The environment variable a secret's Credential reads: METALFORM_SECRET_WEB_DB_PASSWORD."""
    return VARIABLE_PREFIX + re.sub(r"[^A-Z0-9]+", "_", f"{container}_{name}".upper()).strip("_")


class _Service:
    """One container as a Service document, its secrets' Credentials and notes."""

    def __init__(self, name: str, provider: str, labels: dict[str, str]) -> None:
        self.name, self.provider, self.labels = name, provider, labels
        self.credentials: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def env(self, values: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for variable, value in sorted(values.items()):
            if not looks_secret(variable, value):
                out[variable] = value
                continue
            REDACTOR.add(value)
            credential = slug(f"{self.name}-{variable}")
            fill = variable_for(self.name, variable)
            spec = {"type": "token", "token": {"fromEnv": fill}}
            self.credentials.append(document("Credential", credential, spec, self.labels))
            out[variable] = {"credential": credential}
            self.notes.append(
                f"Service/{self.name}: env {variable} looks like a secret: not written; set "
                f"{fill} to its value (Credential/{credential}) before planning"
            )
        return out

    def document(self, container: dict[str, Any], image: dict[str, Any] | None) -> dict[str, Any]:
        config = inspected_config(container, image)
        spec: dict[str, Any] = {"provider": self.provider, "image": config["image"]}
        if not running(container):
            spec["state"] = "Stopped"
        if "command" in config:
            spec["command"] = config["command"]
        if config["env"]:
            spec["env"] = self.env(config["env"])
        for field in ("ports", "volumes"):
            if config[field]:
                spec[field] = config[field]
        spec["restartPolicy"] = config["restartPolicy"]
        labels = {k: v for k, v in config["labels"].items()}
        reserved = sorted(k for k in labels if k.startswith(RESERVED_LABEL_PREFIX))
        if reserved:
            self.notes.append(
                f"Service/{self.name}: labels {', '.join(reserved)} are reserved for "
                "Metalform: not written (a re-creation drops them)"
            )
        labels = {k: v for k, v in labels.items() if k not in reserved}
        if labels:
            spec["labels"] = labels
        if "networkMode" in config:
            spec["networkMode"] = config["networkMode"]
        own = ((image or {}).get("Config") or {}).get("Entrypoint")
        if (container.get("Config") or {}).get("Entrypoint") != own:
            self.notes.append(
                f"Service/{self.name}: its entrypoint differs from its image's; a Service has "
                "none, so a re-creation would use the image's"
            )
        spec["adopt"] = True
        return document("Service", self.name, spec, self.labels)


def _import_one(
    engine: DockerEngine,
    summary: dict[str, Any],
    provider: str,
    labels: dict[str, str],
    existing: set[str],
) -> tuple[list[dict[str, Any]], list[str]]:
    name = container_name(summary)
    if is_managed(summary):
        return [], [
            f"container {name!r} is managed by Metalform already (as {resource_of(summary)})"
        ]
    if slug(name) != name:
        return [], [
            f"container {name!r}: not a valid resource name (lowercase letters, digits, '.', "
            "'-'); a Service adopts the container of its own name only, so it is skipped"
        ]
    container = engine.inspect(str(summary["Id"]))
    image = engine.inspect_image(str((container.get("Config") or {}).get("Image")))
    service = _Service(name, provider, labels)
    written = service.document(container, image)
    if f"Service/{name}" in existing:
        return [written], []  # listed as skipped; its secrets are the repository's business
    return [*service.credentials, written], service.notes


def collect(
    provider: Resource[ProviderSpec],
    context: ProviderContext,
    options: SourceOptions,
    state: DesiredState,
) -> Collected:
    """Every container of the Provider's engine: one listing, then one inspection each."""
    docker = DockerProvider(context)
    spec = provider.spec
    documents: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        engine = docker.engine(
            spec.url, spec.timeout if "timeout" in spec.model_fields_set else None
        )
        listing = sorted(engine.list_all(), key=container_name)
        for summary in listing:
            written, said = _import_one(
                engine, summary, provider.name, options.labels, set(state.resources)
            )
            documents += written
            notes += said
    finally:
        docker.close()
    return Collected(documents, len(listing), "container(s)", notes)
