"""Notifications: NotificationRules route server events to webhook, Slack and email channels.

Public API::

    notifier = Notifier.from_desired(desired_state, credential_resolver)
    bus.subscribe(BackgroundNotifier(notifier))   # or notifier.notify(event) directly

`Notifier.notify` takes an `Event` or a `metalform.events.BusEvent`. Matching, throttling
and digests are computed with an injectable clock; delivery failures are logged (redacted) and
counted in `notifier.stats`, never raised.
"""

from metalform.notify.background import BackgroundNotifier
from metalform.notify.channels import (
    Channel,
    EmailChannel,
    HttpChannel,
    Message,
    SmtpEndpoint,
)
from metalform.notify.config import NotificationConfigError, build_channel
from metalform.notify.event import Event, EventResource, plan_event
from metalform.notify.router import DeliveryStats, Notifier, Rule
from metalform.notify.templates import DEFAULT_TEMPLATES, Rendered, TemplateError, Templates

__all__ = [
    "DEFAULT_TEMPLATES",
    "BackgroundNotifier",
    "Channel",
    "DeliveryStats",
    "EmailChannel",
    "Event",
    "EventResource",
    "HttpChannel",
    "Message",
    "NotificationConfigError",
    "Notifier",
    "Rendered",
    "Rule",
    "SmtpEndpoint",
    "TemplateError",
    "Templates",
    "build_channel",
    "plan_event",
]
