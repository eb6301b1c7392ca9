"""Message templates: sandboxed Jinja2, strict about unknown variables, redacted output.

A rule's `template` comes from Git, so it is untrusted: it runs in Jinja2's immutable sandbox
(no attribute tricks such as `''.__class__`, no mutation of the data it is given) and with
`StrictUndefined`, so a misspelt variable is an error instead of an empty string. Both are
checked when the rule is loaded, by a static look at the names it uses and a trial render
against a sample event of every type the rule listens to, so a bad template fails validation
rather than the first real notification.

Templates see three variables: `event` (see `Event.context`), `rule` (name, events) and
`channel` (name, type; never its URL). Digests also see `digest`. Every string handed to a
template is redacted first and the rendered text again, so neither a secret in an event nor
one a template rebuilds from pieces reaches a message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jinja2
from jinja2 import StrictUndefined, meta
from jinja2.exceptions import SecurityError

from metalform.notify.event import Event, EventResource
from reconciler.errors import MetalformError
from reconciler.model.events import EventType
from reconciler.sandbox import MAX_SIZE, BoundedSandbox, TemplateLimit

Redact = Callable[[str], str]

VARIABLES = frozenset({"event", "rule", "channel"})
DIGEST_VARIABLES = VARIABLES | {"digest"}
MAX_TEXT = 30_000
"""Longest message body sent; chat services reject much longer texts."""
MAX_RENDERED = MAX_SIZE
"""A template rendering more than this is an error (the text sent is cut at MAX_TEXT)."""
MAX_LISTED = 20
"""Resources, results and diagnostics listed one by one in a default message."""


class TemplateError(MetalformError):
    """A rule's template is invalid or failed to render; names the rule, never a secret."""

    template = "template of NotificationRule/{rule}: {problem}"


HEADLINES: dict[EventType, str] = {
    EventType.PLAN_CREATED: (
        "Plan{% if event.plan_id %} {{ event.plan_id }}{% endif %} created"
        "{% if event.repository %} for {{ event.repository }}"
        "{% endif %}{% if event.revision %} at {{ event.revision[:12] }}{% endif %}"
    ),
    EventType.PLAN_FAILED: (
        "Plan{% if event.plan_id %} {{ event.plan_id }}{% endif %} failed"
        "{% if event.repository %} for {{ event.repository }}"
        "{% endif %}{% if event.revision %} at {{ event.revision[:12] }}{% endif %}"
    ),
    EventType.APPLY_STARTED: (
        "Apply{% if event.apply_id %} {{ event.apply_id }}{% endif %}"
        "{% if event.plan_id %} of plan {{ event.plan_id }}{% endif %} started"
        "{% if event.revision %} at {{ event.revision[:12] }}{% endif %}"
    ),
    EventType.APPLY_SUCCEEDED: (
        "Apply{% if event.apply_id %} {{ event.apply_id }}{% endif %}"
        "{% if event.plan_id %} of plan {{ event.plan_id }}{% endif %} succeeded"
        "{% if event.revision %} at {{ event.revision[:12] }}{% endif %}"
    ),
    EventType.APPLY_FAILED: (
        "Apply{% if event.apply_id %} {{ event.apply_id }}{% endif %}"
        "{% if event.plan_id %} of plan {{ event.plan_id }}{% endif %} failed"
        "{% if event.revision %} at {{ event.revision[:12] }}{% endif %}"
    ),
    EventType.DRIFT_DETECTED: (
        "Drift detected: {{ event.addresses | length }} resource(s) out of sync"
        "{% if event.repository %} in {{ event.repository }}{% endif %}"
        "{% if event.revision %} at {{ event.revision[:12] }}{% endif %}"
    ),
    EventType.WEBHOOK_REJECTED: (
        "Webhook rejected{% if event.repository %} for {{ event.repository }}{% endif %}"
    ),
    EventType.CREDENTIAL_ROTATED: (
        "Credential {{ event.payload.credential }} rotated on {{ event.addresses | length }} "
        "BMC(s){% if event.repository %} in {{ event.repository }}{% endif %}"
    ),
}
"""One line per event type: the email subject and the first line of a default message."""

_BODY = """
{%- if event.message %}
{{ event.message }}
{%- endif %}
{%- if event.summary %}
Summary: {% for key, count in event.summary | dictsort %}{{ key }} {{ count }}
{%- if not loop.last %}, {% endif %}{% endfor %}
{%- endif %}
{%- if event.addresses %}
Resources:
{%- for address in event.addresses[:max_listed] %}
- {{ address }}
{%- endfor %}
{%- if event.addresses | length > max_listed %}
- ... and {{ event.addresses | length - max_listed }} more
{%- endif %}
{%- endif %}
{%- if event.results %}
Results:
{%- for r in event.results[:max_listed] %}
- {{ r.get('address', '') }} {{ r.get('operation', '') }}: {{ r.get('status', '') }}
{%- if r.get('error') %} ({{ r.get('error') }}){% endif %}
{%- endfor %}
{%- if event.results | length > max_listed %}
- ... and {{ event.results | length - max_listed }} more
{%- endif %}
{%- endif %}
{%- if event.diagnostics %}
Diagnostics:
{%- for d in event.diagnostics[:max_listed] %}
- {{ d.get('severity', '') }}: {% if d.get('address') %}{{ d.get('address') }}: {% endif %}
{{- d.get('message', '') }}
{%- endfor %}
{%- if event.diagnostics | length > max_listed %}
- ... and {{ event.diagnostics | length - max_listed }} more
{%- endif %}
{%- endif %}
"""

DEFAULT_TEMPLATES: dict[EventType, str] = {
    event_type: headline + _BODY for event_type, headline in HEADLINES.items()
}
"""The message body of a rule without a `template`, per event type."""

DIGEST_TEMPLATE = """\
{{ digest.suppressed }} more notification(s) of rule {{ rule.name }} were held back \
between {{ digest.start }} and {{ digest.end }} (at most {{ digest.max }} per \
{{ digest.window }}):
{%- for item in digest.events[:digest.listed] %}
- {{ item.time }} {{ item.type }}: {{ item.headline }}
{%- if item.message %} ({{ item.message }}){% endif %}
{%- endfor %}
{%- if digest.suppressed > digest.listed %}
- ... and {{ digest.suppressed - digest.listed }} more
{%- endif %}"""


@dataclass(frozen=True)
class Rendered:
    """A message ready for a channel: a one-line subject and the body text."""

    subject: str
    text: str


def redact_data(value: Any, redact: Redact) -> Any:
    """A copy of JSON-like data with every string (keys included) redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact(str(k)): redact_data(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v, redact) for v in value]
    return value


class _AnyKey(dict[str, Any]):
    """A sample payload: any key a template reads exists (payloads differ by emitter)."""

    def __missing__(self, key: str) -> str:
        return ""


def sample_event(event_type: EventType) -> Event:
    """An event with every field filled, for trial renders of a template."""
    return Event(
        type=event_type,
        time=datetime(2024, 1, 1, tzinfo=UTC),
        repository="infra",
        revision="0123456789abcdef0123456789abcdef01234567",
        plan_id="p-1",
        apply_id="a-1",
        resources=(EventResource("Server/sample", {"site": "sample"}),),
        message="sample",
        summary={
            "create": 0,
            "update": 1,
            "delete": 0,
            "noop": 0,
            "deferred": 0,
            "refused": 0,
            "unreachable": 0,
            "succeeded": 1,
            "failed": 0,
            "skipped": 0,
        },
        diagnostics=[{"severity": "warning", "address": "Server/sample", "message": "sample"}],
        results=[
            {
                "address": "Server/sample",
                "operation": "bios.set",
                "status": "succeeded",
                "error": "",
            }
        ],
        payload=_AnyKey(),
    )


class Templates:
    """Compiles and renders notification templates in one sandboxed environment."""

    def __init__(self, redact: Redact) -> None:
        self.redact = redact
        self.env = BoundedSandbox(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
        )
        self.env.globals["max_listed"] = MAX_LISTED
        self._defaults = {t: self.env.from_string(s) for t, s in DEFAULT_TEMPLATES.items()}
        self._headlines = {t: self.env.from_string(s) for t, s in HEADLINES.items()}
        self._digest = self.env.from_string(DIGEST_TEMPLATE)

    def compile(self, rule: str, source: str, event_types: Iterable[EventType]) -> jinja2.Template:
        """Compile a rule's template and prove it against a sample of each of its events.

        Raises TemplateError naming the rule for a syntax error, an unknown variable or a
        sandbox violation.
        """
        try:
            tree = self.env.parse(source)
            template = self.env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(rule=rule, problem=f"line {exc.lineno}: {exc.message}") from None
        except TemplateLimit as exc:
            raise TemplateError(rule=rule, problem=str(exc)) from None
        unknown = meta.find_undeclared_variables(tree) - VARIABLES - set(self.env.globals)
        if unknown:
            raise TemplateError(
                rule=rule,
                problem=f"unknown variable(s) {', '.join(sorted(unknown))}; "
                f"a template can use {', '.join(sorted(VARIABLES))}",
            )
        for event_type in event_types:
            self._render(rule, template, self.context(sample_event(event_type), rule, None))
        return template

    def context(self, event: Event, rule: str, channel: tuple[str, str] | None) -> dict[str, Any]:
        """The variables of a template, every string already redacted."""
        name, kind = channel if channel is not None else ("sample", "webhook")
        data: dict[str, Any] = {
            "event": event.context(),
            "rule": {"name": rule},
            "channel": {"name": name, "type": kind},
        }
        redacted: dict[str, Any] = redact_data(data, self.redact)
        if isinstance(event.payload, _AnyKey):  # keep the sample's any-key behaviour
            redacted["event"]["payload"] = event.payload
        return redacted

    def render_event(
        self,
        event: Event,
        rule: str,
        channel: tuple[str, str],
        template: jinja2.Template | None,
    ) -> Rendered:
        """Subject and body of one event's message (the default body without a template)."""
        context = self.context(event, rule, channel)
        subject = self._render(rule, self._headlines[event.type], context)
        body = self._render(rule, template or self._defaults[event.type], context)
        return Rendered(subject=_one_line(subject), text=body)

    def headline(self, event: Event) -> str:
        """The one-line description of an event (the default subject)."""
        return _one_line(
            self._render("(default)", self._headlines[event.type], self.context(event, "", None))
        )

    def render_digest(
        self,
        rule: str,
        channel: tuple[str, str],
        events: list[Event],
        *,
        suppressed: int,
        start: datetime,
        end: datetime,
        window: str,
        max_messages: int,
        listed: int = 100,
    ) -> Rendered:
        """One message standing for the events a throttle held back."""
        items = [
            {
                "time": e.time.isoformat(timespec="seconds"),
                "type": e.type.value,
                "headline": self.headline(e),
                "message": _one_line(e.message),
            }
            for e in events[:listed]
        ]
        context = {
            "rule": {"name": rule},
            "channel": {"name": channel[0], "type": channel[1]},
            "event": {},
            "digest": redact_data(
                {
                    "suppressed": suppressed,
                    "listed": min(listed, len(items)),
                    "events": items,
                    "start": start.isoformat(timespec="seconds"),
                    "end": end.isoformat(timespec="seconds"),
                    "window": window,
                    "max": max_messages,
                },
                self.redact,
            ),
        }
        text = self._render(rule, self._digest, context)
        subject = f"{suppressed} more notification(s) from rule {rule}"
        return Rendered(subject=self.redact(subject), text=text)

    def _render(self, rule: str, template: jinja2.Template, context: Mapping[str, Any]) -> str:
        try:
            text = self.env.render(template, context, MAX_RENDERED)
        except TemplateLimit as exc:
            raise TemplateError(rule=rule, problem=str(exc)) from None
        except SecurityError as exc:
            problem = f"not allowed in the sandbox: {exc}"
            raise TemplateError(rule=rule, problem=self.redact(problem)) from None
        except jinja2.UndefinedError as exc:
            problem = f"undefined variable or field: {exc.message}"
            raise TemplateError(rule=rule, problem=self.redact(problem)) from None
        except jinja2.TemplateError as exc:
            raise TemplateError(rule=rule, problem=self.redact(str(exc))) from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise TemplateError(
                rule=rule, problem=f"{type(exc).__name__} while rendering"
            ) from None
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT] + "\n... (truncated)"
        # Redact again: the output is what leaves the process, and a secret may have been
        # resolved (and registered) by another thread after the context was built.
        return self.redact(text.strip())


def _one_line(text: str) -> str:
    return " ".join(text.split())
