"""JSON Schemas of the desired-state documents, generated from the pydantic models.

`schemas/` in the repository holds the output of `metalform schema`; a test fails when it
drifts from the models. Editors validate inventory files through their
`# yaml-language-server: $schema=...` line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler.model import API_VERSION, KIND_SPECS
from reconciler.model.base import NAME_MAX, Metadata

DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = "https://metalform.dev/schemas/"
COMBINED = "metalform.schema.json"


def _file_name(kind: str) -> str:
    return f"{kind.lower()}.schema.json"


def _metadata_schema() -> dict[str, Any]:
    schema = Metadata.model_json_schema(by_alias=True)
    schema["properties"]["name"].update(
        {"pattern": "^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", "maxLength": NAME_MAX}
    )
    schema.pop("title", None)
    return schema


def kind_schema(kind: str) -> dict[str, Any]:
    """The schema of one document of `kind`."""
    spec = KIND_SPECS[kind].model_json_schema(by_alias=True, mode="validation")
    defs = spec.pop("$defs", {})
    spec.pop("title", None)
    schema: dict[str, Any] = {
        "$schema": DIALECT,
        "$id": BASE_ID + _file_name(kind),
        "title": f"Metalform {kind}",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": kind},
            "metadata": _metadata_schema(),
            "spec": spec,
        },
    }
    if defs:
        schema["$defs"] = defs
    return schema


def combined_schema() -> dict[str, Any]:
    """One schema for any document: dispatches on `kind` to the kind's schema."""
    kinds = sorted(KIND_SPECS)
    return {
        "$schema": DIALECT,
        "$id": BASE_ID + COMBINED,
        "title": "Metalform desired-state document",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"kind": {"enum": kinds}},
        "allOf": [
            {
                "if": {"properties": {"kind": {"const": k}}, "required": ["kind"]},
                "then": {"$ref": _file_name(k)},
            }
            for k in kinds
        ],
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    out = {_file_name(k): kind_schema(k) for k in sorted(KIND_SPECS)}
    out[COMBINED] = combined_schema()
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas().items():
        path = out_dir / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
