"""The API against its own OpenAPI document: a property-based fuzzer (schemathesis) sends
generated requests to every documented operation of `create_app` on a real SQLite store and
fails on any 5xx and on any response the document does not describe (status, content type,
body schema, headers), and on a request the document allows that the API refuses. Invalid
requests need not be refused: the API ignores unknown query parameters, and every request
carries the operator token (a fuzzer removing it expects a refusal). Fixed seed
(`derandomize`), bounded time."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection

from tests.server.harness import Harness

EXAMPLES_PER_OPERATION = 25


def fuzz(
    operation: Any,
    mode: GenerationMode,
    headers: dict[str, str],
    known: dict[str, str] | None = None,
) -> None:
    """Up to EXAMPLES_PER_OPERATION generated requests to one operation, each checked:
    valid ones (POSITIVE) and ones the document says are invalid (NEGATIVE); with `known`
    path parameters, requests for records that exist."""

    @given(case=operation.as_strategy(mode, path_parameters=known))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    def check(case: Any) -> None:
        case.call_and_validate(headers=headers, excluded_checks=[negative_data_rejection])

    try:
        check()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # nothing to get wrong: no parameter, no body


@pytest.mark.timeout(60)
def test_the_api_matches_its_openapi_document(harness: Harness) -> None:
    harness.service.tracker.fetch()  # plans of generated revisions resolve at once
    plan = harness.plan()
    applied = harness.apply(plan["id"])
    known = {
        "/api/v1/plans/{id}": {"id": plan["id"]},
        "/api/v1/applies/{id}": {"id": applied["id"]},
        "/api/v1/applies/{id}/events": {"id": applied["id"]},
        "/api/v1/resources/{kind}/{name}": {"kind": "Server", "name": "a1"},
    }
    schema = schemathesis.openapi.from_wsgi("/openapi.json", harness.app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = harness.get("/openapi.json", role=None).json["paths"]
    # every documented operation but the document's own route, which schemathesis leaves out
    assert {op.label for op in operations} == {
        f"{method.upper()} {path}"
        for path, item in documented.items()
        for method in item
        if path != "/openapi.json"
    }
    for operation in operations:
        for mode in GenerationMode:
            try:
                fuzz(operation, mode, harness.headers("operator"))
            except (Exception, BaseExceptionGroup) as exc:  # report every operation's failure
                failures.append(f"{operation.label} ({mode.value}): {exc}")
        if operation.method.upper() == "GET" and operation.path in known:
            try:
                fuzz(
                    operation,
                    GenerationMode.POSITIVE,
                    harness.headers("operator"),
                    known[operation.path],
                )
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} (existing records): {exc}")
    assert not failures, "\n\n".join(failures)
