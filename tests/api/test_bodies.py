"""Request bodies of the JSON routes: any Content-Type, strict revisions, bounded JSON."""

from __future__ import annotations

import pytest

from metalform.api.body import MAX_JSON_DEPTH, json_depth
from tests.server.harness import Harness


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/json",
    ],
)
def test_a_json_body_is_read_whatever_its_content_type(
    harness: Harness, content_type: str | None
) -> None:
    """`curl -d '{"revision": "main"}'` sends form data: the documented call must work."""
    headers = {"Content-Type": content_type} if content_type else {}
    created = harness.post(
        "/api/v1/plans", role="planner", body='{"revision": "main"}', headers=headers
    )
    assert created.status_code == 202, created.text
    harness.idle()
    plan = harness.get(f"/api/v1/plans/{created.json['id']}").json
    assert plan["revision"] == harness.remote.main


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ('{"revision": ', 400, "not valid JSON"),
        ("revision=main", 400, "not valid JSON"),
        ('["main"]', 422, "must be a JSON object"),
        ('{"revision": "main", "extra": 1}', 422, "the request body is invalid"),
        ('{"revision": 7}', 422, "the request body is invalid"),
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), 400, "levels deep"),
        ('{"a": ' * 40 + "1" + "}" * 40, 400, "levels deep"),
    ],
)
def test_bad_bodies_are_refused(harness: Harness, body: str, status: int, needle: str) -> None:
    answer = harness.post(
        "/api/v1/plans", role="planner", body=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == status, answer.text
    assert needle in answer.json["error"]["message"]
    assert harness.store.list_history(repository=harness.service.repository, limit=5).items == []


@pytest.mark.parametrize(
    "revision",
    [
        "main\n",
        "main\r",
        "\nmain",
        "ma\x00in",
        "ma\x1bin",
        "ma\x7fin",
        "ma\x85in",
        "-main",
        "a..b",
        "a b",
        "a~1",
        "a:b",
        "m@{1}",
        "",
    ],
)
def test_revisions_with_control_characters_are_refused(harness: Harness, revision: str) -> None:
    answer = harness.post("/api/v1/plans", role="planner", json={"revision": revision})
    assert answer.status_code == 422, answer.text
    assert answer.json["error"]["code"] == "VALIDATION_ERROR"


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth(b'{"a": "[[[[{{{{", "b": [1, [2]]}') == 3
    assert json_depth(b'["\\"[[[", [[]]]') == 3
    assert json_depth(b"1") == 0
