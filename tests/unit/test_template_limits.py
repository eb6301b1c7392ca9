"""Templates from Git are bounded: hostile ones fail fast with the template line, good ones render.

The same bounded sandbox serves notification templates and cloud-init user data.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from metalform.notify.templates import TemplateError, Templates
from reconciler.model.notifications import EventType
from reconciler.sandbox import MAX_SECONDS, BoundedSandbox, TemplateLimit
from reconciler.userdata import UserDataError, render_user_data, repository_files
from tests.fixtures.maas import maas_server

HOSTILE = [
    # (template, line, the error's words)
    (
        "a\n{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        2,
        "took longer than",
    ),
    ("{% for i in range(100000) recursive %}{{ loop([1]) }}{% endfor %}", 1, "too deeply"),
    ("a\n{{ 'A' * 3000000000 }}", 2, "repeated string"),
    ("{{ 3000000000 * 'A' }}", 1, "repeated string"),
    ("{{ ([1] * 100000) * 100000 }}", 1, "repeated string"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}", 1, "too deeply"),
    ("{{ 9 ** 999999999 }}", 1, "4096 bits"),
    ("{{ 'x'.center(3000000000) }}", 1, "width"),
    ("{{ 'x' | center(3000000000) }}", 1, "width"),
    ("{{ ('x\\n' * 1000) | indent(100000) }}", 1, "width"),
    ("{{ '%0999999999d' % 1 }}", 1, "format width"),
    ("{{ '%*d' % (999999999, 1) }}", 1, "'*'"),
    ("{{ '{:>999999999}'.format(1) }}", 1, "format width"),
    ("{{ '{0:{1}}'.format(1, 999999999) }}", 1, "({:{}})"),
    ("{{ '%999999999s' | format(1) }}", 1, "format width"),
    ("{% set s = 'x' * 900000 %}\n{{ s ~ s }}", 2, "joined with ~"),
    (
        "{% set ns = namespace(x='ab') %}{% for i in range(64) %}{% set ns.x = ns.x ~ ns.x %}"
        "{% endfor %}",
        1,
        "joined with ~",
    ),
    ("{% set s = 'x' * 900000 %}{{ s + s }}", 1, "sum of strings"),
    ("{{ range(100000) | map('string') | map('center', 1000) | join }}", 1, "joined string"),
    ("{{ '(' * 5000 }}{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", 1, "nests"),
    ("x\n{{ 1" + " + 1" * 5000 + " }}", 2, "nests"),
    ("\n".join(["{% for i in [1] %}"] * 25 + ["{% endfor %}"] * 25), 25, "nests"),
]


def _render(source: str) -> str:
    env = BoundedSandbox(autoescape=False)
    return env.render(env.from_string(source), {}, 1_000_000)


@pytest.mark.parametrize(("source", "line", "words"), HOSTILE)
def test_hostile_templates_stop_fast_at_their_line(source: str, line: int, words: str) -> None:
    start = time.monotonic()
    with pytest.raises(TemplateLimit) as caught:
        _render(source)
    assert time.monotonic() - start < MAX_SECONDS + 1
    assert caught.value.line == line
    assert words in caught.value.message


def test_output_is_bounded() -> None:
    env = BoundedSandbox(autoescape=False)
    template = env.from_string("{% for i in range(1000) %}{{ 'x' * 100 }}{% endfor %}")
    assert len(env.render(template, {}, 100_000)) == 100_000
    with pytest.raises(TemplateLimit, match="renders more than 99999 characters"):
        env.render(template, {}, 99_999)


def test_ordinary_templates_still_render() -> None:
    assert (
        _render(
            "{% for i in range(3) %}{{ i }},{% endfor %}{{ 'ab' * 2 }}|{{ '%5d' % 3 }}|"
            "{{ '{:>4}'.format(7) }}|{{ [1, 2] | join('-') }}|{{ 2 ** 100 }}|"
            "{{ 'x' | center(5) }}|{{ 'a' ~ 'b' }}"
        )
        == "0,1,2,abab|    3|   7|1-2|1267650600228229401496703205376|  x  |ab"
    )


def test_the_deadline_is_per_render() -> None:
    env = BoundedSandbox(autoescape=False)
    slow = env.from_string(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    )
    with pytest.raises(TemplateLimit):
        env.render(slow, {}, 100)
    assert (
        env.render(env.from_string("{% for i in range(3) %}{{ i }}{% endfor %}"), {}, 100) == "012"
    )


def test_notification_templates_name_the_rule_and_line() -> None:
    templates = Templates(lambda text: text)
    with pytest.raises(TemplateError) as caught:
        templates.compile("r", "hello\n{{ 'A' * 3000000000 }}", [EventType.APPLY_FAILED])
    assert str(caught.value).startswith("template of NotificationRule/r: line 2: ")
    with pytest.raises(TemplateError, match="line 1: the template nests"):
        templates.compile(
            "r", "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", [EventType.APPLY_FAILED]
        )


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("#cloud-config\nx: {{ 'A' * 3000000000 }}\n", "node.yaml.j2:2: a repeated string"),
        ("#cloud-config\n{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}\n", "node.yaml.j2:2: "),
        ("#cloud-config\nx: {{ '[' * 5000 }}{{ ']' * 5000 }}\n", "YAML nested deeper than 100"),
        ("#cloud-config\nx: !!float .nan\n", "numbers must be finite"),
        ("#cloud-config\nx: 1\n---\ny: 2\n", "must render one YAML document"),
    ],
)
def test_user_data_templates_are_bounded(tmp_path: Path, template: str, problem: str) -> None:
    (tmp_path / "cloud-init").mkdir()
    (tmp_path / "cloud-init" / "node.yaml.j2").write_text(template)
    server = maas_server("n1", template="cloud-init/node.yaml.j2", vars={})
    with pytest.raises(UserDataError) as caught:
        render_user_data(server, repository_files(tmp_path))
    assert problem in str(caught.value)
    assert str(caught.value).startswith("template cloud-init/node.yaml.j2")
