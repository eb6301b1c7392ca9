"""schemas/ is the output of `metalform schema`, and the example inventory validates against it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from referencing import Registry, Resource

from reconciler.schema import COMBINED, all_schemas, render
from reconciler.yamlio import load_documents

ROOT = Path(__file__).resolve().parents[2]


def test_schemas_folder_is_up_to_date() -> None:
    expected = {name: render(schema) for name, schema in all_schemas().items()}
    found = {p.name: p.read_text() for p in (ROOT / "schemas").glob("*.json")}
    assert found == expected, "run `metalform schema --out schemas` and commit the result"


def _validator() -> jsonschema.Draft202012Validator:
    schemas = all_schemas()
    registry: Registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )
    return jsonschema.Draft202012Validator(schemas[COMBINED], registry=registry)


def test_example_inventory_validates_against_the_schema() -> None:
    validator = _validator()
    documents = 0
    for path in sorted((ROOT / "inventory-example").rglob("*.yaml")):
        first_line = path.read_text().splitlines()[0]
        assert first_line.startswith("# yaml-language-server: $schema="), path
        for doc, _ in load_documents(path.read_text()):
            errors = list(validator.iter_errors(doc))
            assert errors == [], f"{path}: {[e.message for e in errors]}"
            documents += 1
    assert documents >= 10


def test_schema_rejects_what_the_loader_rejects() -> None:
    validator = _validator()
    bad = {
        "apiVersion": "metalform/v1",
        "kind": "Server",
        "metadata": {"name": "n1"},
        "spec": {"bmc": {"driver": "redfsh", "address": "x", "credential": "c"}, "colour": 1},
    }
    messages = json.dumps([e.message for e in validator.iter_errors(bad)]) + json.dumps(
        [c.message for e in validator.iter_errors(bad) for c in e.context or []]
    )
    assert "colour" in messages
    assert "redfsh" in messages


def test_schema_rejects_metalform_metadata_keys_on_aggregates() -> None:
    validator = _validator()
    aggregate = {
        "apiVersion": "metalform/v1",
        "kind": "Aggregate",
        "metadata": {"name": "a"},
        "spec": {"provider": "cloud", "metadata": {"metalform:managed": "true"}},
    }
    messages = json.dumps(
        [c.message for e in validator.iter_errors(aggregate) for c in [e, *(e.context or [])]]
    )
    assert "'metalform:managed' should not be valid" in messages
    aggregate["spec"]["metadata"] = {"pool": "spot"}  # type: ignore[index]
    assert list(validator.iter_errors(aggregate)) == []
