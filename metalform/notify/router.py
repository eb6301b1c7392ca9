"""Rules to channels: which events are told to whom, how often, and in what words.

`Notifier.notify(event)` finds the rules an event matches, renders each rule's message per
channel and delivers it. Matching and throttling are plain computations over an injectable
monotonic clock, so a burst of events in one window is tested without sleeping; only
delivery does I/O. A delivery failure is logged (redacted) and counted, never raised: a
notification must not fail a plan or an apply.

Throttle `{window: 10m, max: 5}`: a window opens with a rule's first event; the first `max`
events in it are sent one by one, later ones are held, and when the window has passed (seen
at the next event, `tick()` or `flush()`) the held events go out as one digest per channel.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jinja2
import requests

from metalform.notify.channels import Channel, CredentialResolver, Message, SecretResolver
from metalform.notify.config import NotificationConfigError, build_channel
from metalform.notify.event import SEVERITY_ORDER, BusEventLike, Event
from metalform.notify.templates import Redact, TemplateError, Templates, redact_data
from metalform.notify.throttle_state import ThrottleState, Window
from providers.base import with_retries
from reconciler.errors import ProviderError
from reconciler.load import DesiredState
from reconciler.model.credentials import SecretRef
from reconciler.model.notifications import NotificationChannelSpec, NotificationRuleSpec
from reconciler.secrets import REDACTOR, Secret, resolve

log = logging.getLogger("metalform.notify")

Clock = Callable[[], float]
MAX_HELD = 100
"""Events a digest lists one by one; the rest are only counted."""
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def window_seconds(text: str) -> float:
    """Seconds in a throttle window such as `10m` (the model checks the `^\\d+[smhd]$` form)."""
    return float(int(text[:-1]) * _UNITS[text[-1]])


@dataclass(frozen=True)
class Rule:
    """A NotificationRule ready to route: its spec and its compiled template."""

    name: str
    spec: NotificationRuleSpec
    template: jinja2.Template | None = None

    @property
    def window(self) -> float | None:
        return window_seconds(self.spec.throttle.window) if self.spec.throttle else None

    def matches(self, event: Event) -> bool:
        """Event type listed, some resource of the event matching kinds (any-of) and labels
        (all-of) when the rule names any, and severity at least the rule's."""
        if event.type not in self.spec.events:
            return False
        match = self.spec.match
        if match is None:
            return True
        if match.severity is not None and (
            SEVERITY_ORDER[event.effective_severity] < SEVERITY_ORDER[match.severity]
        ):
            return False
        if not match.kinds and not match.labels:
            return True
        return any(
            (not match.kinds or resource.kind in match.kinds)
            and all(resource.labels.get(k) == v for k, v in match.labels.items())
            for resource in event.resources
        )


@dataclass
class DeliveryStats:
    """Counters since start: what was sent, held back, and what failed."""

    sent: int = 0
    failed: int = 0
    retried: int = 0
    suppressed: int = 0
    digests: int = 0
    template_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, int)}


_Window = Window


@dataclass(frozen=True)
class _Outgoing:
    channel: str
    message: Message


class Notifier:
    """Routes events to channels by rules; usable directly as an event-bus subscriber."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        rules: Sequence[Rule],
        *,
        templates: Templates | None = None,
        clock: Clock = time.monotonic,
        retries: int = 2,
        sleep: Callable[[float], None] = time.sleep,
        labels_of: Mapping[str, Mapping[str, str]] | None = None,
        redact: Redact = REDACTOR,
        state: ThrottleState | None = None,
    ) -> None:
        missing = sorted({c for r in rules for c in r.spec.channels if c not in channels})
        if missing:
            raise NotificationConfigError([f"unknown channel(s) {', '.join(missing)}"])
        self.channels = dict(channels)
        self.rules = list(rules)
        self.redact = redact
        self.templates = templates or Templates(redact)
        self.state = state
        """Where throttle windows outlive this process (CLI runs); None: in memory only."""
        self.clock = state.clock if state is not None else clock
        self.retries = retries
        self.sleep = sleep
        self.labels_of = dict(labels_of or {})
        self.stats = DeliveryStats()
        self._stats_lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def from_desired(
        cls,
        desired: DesiredState,
        credential_resolver: CredentialResolver,
        *,
        base_dir: Path | None = None,
        secret_resolver: SecretResolver | None = None,
        session: requests.Session | None = None,
        timeout: float = 10.0,
        **options: Any,
    ) -> Notifier:
        """Channels and rules of a `DesiredState`.

        Secret channel URLs and SMTP credentials are resolved only when a message is sent.
        Raises NotificationConfigError listing every problem (a template that fails its
        sandbox or names an unknown variable, a channel whose provider is not smtp, ...).
        """
        redact: Redact = options.get("redact", REDACTOR)
        templates = options.pop("templates", None) or Templates(redact)

        def default_secret(ref: SecretRef) -> Secret:
            return resolve(ref, base_dir=base_dir, what="the url of a NotificationChannel")

        secrets = secret_resolver or default_secret
        problems: list[str] = []
        channels: dict[str, Channel] = {}
        for resource in desired.of_kind("NotificationChannel", NotificationChannelSpec):
            try:
                channels[resource.name] = build_channel(
                    resource.name,
                    resource.spec,
                    desired,
                    credential_resolver,
                    secrets,
                    session=session,
                    timeout=timeout,
                )
            except NotificationConfigError as exc:
                problems.extend(exc.problems)
        rules: list[Rule] = []
        for rule in desired.of_kind("NotificationRule", NotificationRuleSpec):
            spec = rule.spec
            unknown = [c for c in spec.channels if desired.get("NotificationChannel", c) is None]
            if unknown:
                problems.append(
                    f"NotificationRule/{rule.name}: unknown channel(s) {', '.join(unknown)}"
                )
            template = None
            if spec.template is not None:
                try:
                    template = templates.compile(rule.name, spec.template, spec.events)
                except TemplateError as exc:
                    problems.append(str(exc))
            rules.append(Rule(rule.name, spec, template))
        if problems:
            raise NotificationConfigError(problems)
        labels_of = {r.address: dict(r.metadata.labels) for r in desired.resources.values()}
        return cls(channels, rules, templates=templates, labels_of=labels_of, **options)

    # --- routing ---------------------------------------------------------------------------

    def notify(self, event: Event | BusEventLike) -> int:
        """Route one event; returns how many messages were delivered (digests included)."""
        if not isinstance(event, Event):
            try:
                event = Event.from_bus(event, self.labels_of)
            except (ValueError, TypeError):
                log.debug("no notifications for event type %s", event.type)
                return 0
        now = self.clock()
        with self._lock, self._kept():
            outgoing = self._due_digests(now)
            to_render: list[Rule] = []
            for rule in self.rules:
                if not rule.matches(event):
                    continue
                if self._admit(rule, event, now):
                    to_render.append(rule)
        for rule in to_render:
            outgoing.extend(self._render(rule, event))
        return self._deliver(outgoing)

    def __call__(self, event: Event | BusEventLike) -> None:
        """The event-bus subscriber: `bus.subscribe(notifier)`."""
        self.notify(event)

    def tick(self) -> int:
        """Send the digests of windows that have ended; call it now and then when idle."""
        with self._lock, self._kept():
            outgoing = self._due_digests(self.clock())
        return self._deliver(outgoing)

    def flush(self) -> int:
        """Send every held digest now and close all windows (at shutdown, in tests)."""
        with self._lock, self._kept():
            outgoing = self._due_digests(None)
        return self._deliver(outgoing)

    def close(self) -> None:
        """Flush held digests and release connections. With a kept state, only the digests
        of ended windows go: open windows carry over to the next run."""
        if self.state is not None:
            self.tick()
        else:
            self.flush()
        for channel in self.channels.values():
            channel.close()

    def matching(self, event: Event) -> list[str]:
        """Names of the rules an event matches (for tests and `explain` tooling)."""
        return [rule.name for rule in self.rules if rule.matches(event)]

    def _count(self, counter: str) -> None:
        # Deliveries run outside the routing lock, from whichever threads emit events.
        with self._stats_lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)

    # --- throttle --------------------------------------------------------------------------

    @contextmanager
    def _kept(self) -> Iterator[None]:
        """Load the kept windows before routing and save them after (no-op in memory)."""
        if self.state is None:
            yield
            return
        with self.state.windows() as kept:
            self._windows = dict(kept)
            yield
            kept.clear()
            kept.update(self._windows)

    def _admit(self, rule: Rule, event: Event, now: float) -> bool:
        """True when the event goes out now; False when a throttle holds it for a digest."""
        throttle = rule.spec.throttle
        if throttle is None:
            return True
        window = self._windows.get(rule.name)
        if window is None:
            window = self._windows[rule.name] = _Window(opened=now, opened_at=event.time)
        if window.sent < throttle.max:
            window.sent += 1
            return True
        window.suppressed += 1
        self._count("suppressed")
        if len(window.held) < MAX_HELD:
            window.held.append(event)
        return False

    def _due_digests(self, now: float | None) -> list[_Outgoing]:
        """Close windows that ended by `now` (all of them when None); digests for held ones."""
        outgoing: list[_Outgoing] = []
        rules = {rule.name: rule for rule in self.rules}
        for name, window in list(self._windows.items()):
            rule = rules[name]
            length = rule.window or 0.0
            if now is not None and now < window.opened + length:
                continue
            del self._windows[name]
            if window.suppressed:
                outgoing.extend(self._digest(rule, window, length))
        return outgoing

    # --- rendering -------------------------------------------------------------------------

    def _render(self, rule: Rule, event: Event) -> list[_Outgoing]:
        outgoing = []
        event_data = redact_data(event.context(), self.redact)
        for name in rule.spec.channels:
            channel = self.channels[name]
            where = (name, channel.type.value)
            try:
                rendered = self.templates.render_event(event, rule.name, where, rule.template)
            except TemplateError as exc:
                # The rule's own template broke on this event: say so, in the default words.
                self._count("template_errors")
                log.error("%s; sending the default message instead", self.redact(str(exc)))
                rendered = self.templates.render_event(event, rule.name, where, None)
                note = self.redact(f"\n\n(the rule's template failed: {exc})")
                rendered = type(rendered)(rendered.subject, rendered.text + note)
            outgoing.append(
                _Outgoing(
                    name,
                    Message(
                        rule=rule.name,
                        channel=name,
                        subject=rendered.subject,
                        text=rendered.text,
                        event=event_data,
                        headers={"X-Metalform-Event": event.type.value},
                    ),
                )
            )
        return outgoing

    def _digest(self, rule: Rule, window: _Window, length: float) -> list[_Outgoing]:
        throttle = rule.spec.throttle
        assert throttle is not None
        end = window.opened_at + timedelta(seconds=length)
        outgoing = []
        for name in rule.spec.channels:
            channel = self.channels[name]
            rendered = self.templates.render_digest(
                rule.name,
                (name, channel.type.value),
                window.held,
                suppressed=window.suppressed,
                start=window.opened_at,
                end=end,
                window=throttle.window,
                max_messages=throttle.max,
            )
            digest = redact_data(
                {
                    "suppressed": window.suppressed,
                    "window": throttle.window,
                    "start": window.opened_at.isoformat(timespec="seconds"),
                    "end": end.isoformat(timespec="seconds"),
                    "events": [
                        {
                            "type": e.type.value,
                            "time": e.time.isoformat(timespec="seconds"),
                            "headline": self.templates.headline(e),
                            "message": e.message,
                        }
                        for e in window.held
                    ],
                },
                self.redact,
            )
            outgoing.append(
                _Outgoing(
                    name,
                    Message(
                        rule=rule.name,
                        channel=name,
                        subject=rendered.subject,
                        text=rendered.text,
                        digest=digest,
                        headers={"X-Metalform-Event": "digest"},
                    ),
                )
            )
        return outgoing

    # --- delivery --------------------------------------------------------------------------

    def _deliver(self, outgoing: Iterable[_Outgoing]) -> int:
        delivered = 0
        for item in outgoing:
            channel = self.channels[item.channel]
            what = f"notification of rule {item.message.rule} to channel {item.channel}"

            def attempt(channel: Channel = channel, message: Message = item.message) -> None:
                channel.send(message)

            def count_retry(seconds: float) -> None:
                self._count("retried")
                self.sleep(seconds)

            try:
                with_retries(attempt, retries=self.retries, what=what, sleep=count_retry)
            except ProviderError as exc:
                self._count("failed")
                log.warning("%s failed: %s", what, self.redact(str(exc)))
                continue
            except Exception as exc:
                # Unexpected: its text may quote a secret URL in pieces, so only its class.
                self._count("failed")
                log.warning("%s failed: unexpected %s", what, type(exc).__name__)
                continue
            delivered += 1
            if item.message.digest is not None:
                self._count("digests")
            self._count("sent")
        return delivered
