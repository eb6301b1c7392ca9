"""Bounds of the desired-state loader and of the values that used to validate then break plan."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from metalform.server.config import parse_config
from reconciler.errors import InputError
from reconciler.load import SourceFile, load_files
from reconciler.model.base import NAME_PATTERN
from reconciler.windows import (
    CronError,
    check_fires_yearly,
    is_open,
    next_opening,
    parse_duration,
    zone,
)
from reconciler.yamlio import MAX_DEPTH, YamlProblem, load_documents
from webhooks.events import GitEvent


def _problem(text: str) -> YamlProblem:
    with pytest.raises(YamlProblem) as caught:
        list(load_documents(text))
    return caught.value


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH])
def test_nesting_up_to_the_limit_loads(depth: int) -> None:
    # The root mapping is one level: `a` holds depth - 1 more.
    text = "a: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n"
    assert list(load_documents(text))


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("a: " + "[" * 30000 + "]" * 30000 + "\n", 0, 3 + MAX_DEPTH - 1),
        ("a: " + "{b: " * 20000 + "x" + "}" * 20000 + "\n", 0, 3 + 4 * (MAX_DEPTH - 1)),
        ("x: 1\na:\n  " + "- " * 30000 + "x\n", 2, 2 + 2 * (MAX_DEPTH - 1)),
        (
            "".join(" " * i + f"k{i}:\n" for i in range(150)) + " " * 150 + "x\n",
            MAX_DEPTH,
            MAX_DEPTH,
        ),
    ],
)
def test_deeper_nesting_is_refused_where_the_limit_is_passed(
    text: str, line: int, column: int
) -> None:
    problem = _problem(text)
    assert problem.message == f"YAML nested deeper than {MAX_DEPTH} levels"
    assert (problem.line, problem.column) == (line, column)


def test_aliases_cannot_nest_past_the_limit() -> None:
    # Each line is at most 41 levels deep; a1 holds a0 (81 once expanded), a2 holds a1 (111).
    chain = "a0: &a0 " + "[" * 40 + "x" + "]" * 40 + "\n"
    chain += "a1: &a1 " + "[" * 40 + "*a0" + "]" * 40 + "\n"
    assert list(load_documents(chain))
    problem = _problem(chain + "a2: " + "[" * 30 + "*a1" + "]" * 30 + "\n")
    assert "once its aliases are expanded" in problem.message
    assert problem.line is not None


def test_the_server_configuration_is_bounded_too() -> None:
    with pytest.raises(InputError) as caught:
        parse_config("listen: " + "[" * 30000 + "]" * 30000 + "\n", "server.yaml")
    rendered = caught.value.diagnostics[0].render()
    assert rendered.startswith("server.yaml:1:")
    assert "nested deeper than" in rendered


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('a: "x\\0y"\n', "a NUL character"),
        ("a: b\nc: d\0e\n", "control character #x0000"),
        ("a: .nan\n", "finite"),
        ("a: [1, -.inf]\n", "finite"),
        ("a: 1e999\n", "finite"),
    ],
)
def test_nul_control_characters_and_non_finite_numbers_are_located(text: str, message: str) -> None:
    problem = _problem(text)
    assert message in problem.message
    assert problem.line is not None and problem.column is not None


@pytest.mark.parametrize(
    "value",
    [
        "!!int hunter2-literal",
        "!!timestamp hunter2-literal",
        "!vault hunter2-literal",
        "!!float hunter2-literal",
    ],
)
def test_unreadable_tagged_values_are_never_quoted(value: str) -> None:
    problem = _problem(f"password: {value}\n")
    assert "hunter2" not in problem.message
    assert (problem.line, problem.column) == (0, 10)


def test_a_tagged_literal_secret_is_refused_without_its_value() -> None:
    text = b"""apiVersion: metalform/v1
kind: Credential
metadata: {name: bmc}
spec: {username: admin, password: !!int 1234567890}
"""
    with pytest.raises(InputError) as caught:
        load_files([SourceFile("a.yaml", text)], "r")
    rendered = caught.value.diagnostics[0].render()
    assert "literal secret in Git" in rendered
    assert "1234567890" not in rendered


def test_names_are_matched_whole() -> None:
    assert NAME_PATTERN.fullmatch("n1")
    assert not NAME_PATTERN.fullmatch("n1\n")


@pytest.mark.parametrize(
    "cron", ["0 2 * * SAT", "0 2 31 12 *", "0 2 29 2 MON", "*/5 * * * *", "0 2 28 2 *"]
)
def test_crons_that_fire_every_year_are_accepted(cron: str) -> None:
    check_fires_yearly(cron)


@pytest.mark.parametrize("cron", ["0 2 30 2 *", "0 2 29 2 *", "0 2 31 4,6,9,11 *"])
def test_crons_that_do_not_fire_every_year_are_refused(cron: str) -> None:
    with pytest.raises(CronError, match="does not fire every year"):
        check_fires_yearly(cron)


@pytest.mark.parametrize("text", ["0m", "32d", "99999999999d", "٤h", "4h\n"])
def test_durations_are_bounded(text: str) -> None:
    with pytest.raises(CronError):
        parse_duration(text)


def test_the_longest_window_is_still_quick_to_evaluate() -> None:
    now = datetime(2024, 3, 1, tzinfo=UTC)
    assert parse_duration("31d").days == 31
    assert is_open("0 2 1 * *", "31d", "UTC", now)
    assert next_opening("0 2 1 * *", "UTC", now) is not None


@pytest.mark.parametrize("name", ["America", "", "../../etc/passwd", "UTC\0", "Europe/"])
def test_time_zones_that_are_not_zones_are_refused(name: str) -> None:
    with pytest.raises(CronError, match="unknown time zone"):
        zone(name)


def test_shas_and_digests_from_outside_are_matched_whole() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    event = {"kind": "push", "forge": "github", "delivery_id": "d", "event_name": "push"}
    assert GitEvent.model_validate({**event, "head_sha": sha}).head_sha == sha
    with pytest.raises(ValidationError):
        GitEvent.model_validate({**event, "head_sha": sha + "\n"})
    digest = "0" * 64
    token = 'tokens: [{name: ci, role: viewer, sha256: "%s"}]\n'  # "\\n" is a newline
    assert parse_config(token % digest).tokens[0].sha256 == digest
    with pytest.raises(InputError):
        parse_config(token % (digest + "\\n"))
