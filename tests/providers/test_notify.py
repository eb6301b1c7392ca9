"""Notifications against real peers: aiosmtpd for email, a loopback HTTP receiver for
webhooks and Slack. Throttling runs on an injected clock; nothing here sleeps."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from metalform.events import EventBus
from metalform.lab.smtp import SmtpPeer
from metalform.notify import (
    BackgroundNotifier,
    Event,
    EventResource,
    NotificationConfigError,
    Notifier,
    plan_event,
)
from metalform.notify.router import Rule
from reconciler.errors import InputError
from reconciler.load import DesiredState, SourceFile, load_files
from reconciler.model.base import Diagnostic, Severity
from reconciler.model.credentials import SecretRef
from reconciler.model.notifications import EventType, NotificationRuleSpec
from reconciler.model.notifications import Severity as NotifySeverity
from reconciler.model.plan import Plan, Summary
from reconciler.secrets import RedactingFilter, ResolvedCredential, Secret, resolve

if TYPE_CHECKING:
    from tests.fixtures.notify import HttpReceiver, SmtpSink

HEADER = "apiVersion: metalform/v1\n"
SERVERS = """
kind: Server
metadata: {name: gpu-1, labels: {site: yul1, gpu: l40}}
spec: {bmc: {driver: redfish, address: "http://127.0.0.1:9", credential: bmc}}
---
apiVersion: metalform/v1
kind: Server
metadata: {name: cpu-1, labels: {site: yul1}}
spec: {bmc: {driver: redfish, address: "http://127.0.0.1:10", credential: bmc}}
---
apiVersion: metalform/v1
kind: Credential
metadata: {name: bmc}
spec: {type: basic, username: admin, password: {fromEnv: NOTIFY_TEST_BMC_PASSWORD}}
"""


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def desired(*documents: str) -> DesiredState:
    """A validated desired state from YAML documents (the test servers included)."""
    text = "---\n".join(HEADER + textwrap.dedent(d).strip() + "\n" for d in (SERVERS, *documents))
    try:
        return load_files([SourceFile("notify.yaml", text.encode())], "test-revision")
    except InputError as exc:
        pytest.fail("\n".join(d.render() for d in exc.diagnostics), pytrace=False)


def channel(name: str, kind: str, url: str) -> str:
    url = url if url.startswith("{") else f"'{url}'"
    return (
        f"kind: NotificationChannel\nmetadata: {{name: {name}}}\nspec: {{type: {kind}, url: {url}}}"
    )


def rule(name: str, events: str, channels: str, extra: str = "") -> str:
    return (
        f"kind: NotificationRule\nmetadata: {{name: {name}}}\n"
        f"spec:\n  events: {events}\n  channels: {channels}\n{extra}"
    )


def smtp_provider(url: str, extra: str = "") -> str:
    return f"kind: Provider\nmetadata: {{name: mail}}\nspec: {{type: smtp, url: '{url}'{extra}}}"


SMTP_CREDENTIAL = (
    "kind: Credential\nmetadata: {name: smtp}\nspec: {type: basic, "
    "username: notify, password: {fromEnv: NOTIFY_TEST_SMTP_PASSWORD}}"
)
EMAIL_CHANNEL = (
    "kind: NotificationChannel\nmetadata: {name: ops-mail}\nspec:\n  type: email\n"
    "  email: {provider: mail, from: metalform@lab.example, "
    "to: [ops@lab.example, oncall@lab.example]}"
)


def no_credentials(name: str) -> ResolvedCredential:
    raise AssertionError(f"no credential expected, asked for {name}")


def notifier(
    state: DesiredState,
    credentials: Callable[[str], ResolvedCredential] = no_credentials,
    **options: Any,
) -> Notifier:
    options.setdefault("sleep", lambda seconds: None)
    return Notifier.from_desired(state, credentials, **options)


def apply_failed(message: str = "2 action(s) failed", **fields: Any) -> Event:
    return Event(
        EventType.APPLY_FAILED,
        repository="infra",
        revision="a" * 40,
        plan_id="p-7",
        apply_id="a-3",
        message=message,
        resources=(EventResource("Server/gpu-1", {"site": "yul1", "gpu": "l40"}),),
        summary={"succeeded": 3, "failed": 2, "skipped": 1},
        results=[
            {
                "address": "Server/gpu-1",
                "operation": "bios.set",
                "status": "failed",
                "error": "HTTP 500 from BMC",
            }
        ],
        **fields,
    )


# --- email ---------------------------------------------------------------------------------


def test_email_arrives_with_subject_and_body(smtp_sink: SmtpSink) -> None:
    state = desired(
        smtp_provider(smtp_sink.url),
        EMAIL_CHANNEL,
        rule("mail-applies", "[apply.succeeded]", "[ops-mail]"),
    )
    n = notifier(state)
    event = Event(
        EventType.APPLY_SUCCEEDED,
        repository="infra",
        revision="b" * 40,
        plan_id="p-1",
        apply_id="a-1",
        summary={"succeeded": 4, "failed": 0},
        resources=(EventResource("Server/gpu-1"),),
    )

    assert n.notify(event) == 1

    [mail] = smtp_sink.handler.wait_for(1)
    assert mail.sender == "metalform@lab.example"
    assert sorted(mail.recipients) == ["oncall@lab.example", "ops@lab.example"]
    assert mail.message["Subject"] == (
        "[metalform] Apply a-1 of plan p-1 succeeded at bbbbbbbbbbbb"
    )
    body = mail.message.get_content()
    assert "Summary: failed 0, succeeded 4" in body
    assert "- Server/gpu-1" in body
    assert mail.message["X-Metalform-Rule"] == "mail-applies"
    assert n.stats.sent == 1 and n.stats.failed == 0


def test_email_with_credential_uses_starttls_and_login(
    smtp_tls_sink: SmtpSink, smtp_login: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password = smtp_login
    monkeypatch.setenv("NOTIFY_TEST_SMTP_PASSWORD", password)
    state = desired(
        SMTP_CREDENTIAL.replace("notify", user),
        smtp_provider(smtp_tls_sink.url, ", credential: smtp, verifyTls: false"),
        EMAIL_CHANNEL,
        rule("mail-failures", "[apply.failed]", "[ops-mail]"),
    )

    def credentials(name: str) -> ResolvedCredential:
        spec = state.resources[f"Credential/{name}"].spec
        return ResolvedCredential(name, spec.username, resolve(spec.secret))

    n = notifier(state, credentials)
    assert n.notify(apply_failed()) == 1
    [mail] = smtp_tls_sink.handler.wait_for(1)
    assert "Apply a-3 of plan p-7 failed" in mail.message["Subject"]
    assert password.encode() not in mail.raw


def test_credential_is_never_sent_without_tls(
    smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    state = desired(
        SMTP_CREDENTIAL,
        smtp_provider(smtp_sink.url, ", credential: smtp"),
        EMAIL_CHANNEL,
        rule("mail-failures", "[apply.failed]", "[ops-mail]"),
    )
    password = "plain-Pa55word-must-stay-home"

    def credentials(name: str) -> ResolvedCredential:
        return ResolvedCredential(name, "user", Secret(password))

    n = notifier(state, credentials)
    with caplog.at_level(logging.INFO):
        assert n.notify(apply_failed()) == 0
    assert smtp_sink.mails == []
    assert n.stats.failed == 1
    assert "offers no STARTTLS" in caplog.text and password not in caplog.text


# --- HTTP channels --------------------------------------------------------------------------


def test_slack_payload_is_text_only_and_its_secret_url_is_resolved(
    http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_TEST_SLACK_URL", http_receiver.url("/services/T0/B0/s3cr3t"))
    state = desired(
        channel("chat", "slack", "{fromEnv: NOTIFY_TEST_SLACK_URL}"),
        rule("chat-failures", "[apply.failed]", "[chat]"),
    )
    n = notifier(state)

    assert n.notify(apply_failed()) == 1

    [post] = http_receiver.to("/services/T0/B0/s3cr3t")
    assert post.headers["Content-Type"] == "application/json"
    payload = post.json()
    assert list(payload) == ["text"]
    assert payload["text"].startswith("Apply a-3 of plan p-7 failed at aaaaaaaaaaaa")
    assert "- Server/gpu-1 bios.set: failed (HTTP 500 from BMC)" in payload["text"]


def test_webhook_posts_the_event_as_json(http_receiver: HttpReceiver) -> None:
    state = desired(
        channel("hook", "webhook", http_receiver.url("/hook")),
        rule("everything", "[plan.created, drift.detected]", "[hook]"),
    )
    n = notifier(state)
    plan = Plan(
        revision="c" * 40,
        created_at="2024-05-01T00:00:00Z",
        summary=Summary(update=2, noop=3),
        diagnostics=[
            Diagnostic(
                severity=Severity.WARNING,
                address="Server/cpu-1",
                message="attribute X is read-only",
            )
        ],
    )

    n.notify(plan_event(EventType.PLAN_CREATED, plan, repository="infra", plan_id="p-9"))

    [post] = http_receiver.to("/hook")
    body = post.json()
    assert body["rule"] == "everything" and body["channel"] == "hook"
    assert body["subject"] == "Plan p-9 created for infra at cccccccccccc"
    event = body["event"]
    assert event["type"] == "plan.created"
    assert event["revision"] == "c" * 40
    assert event["summary"]["update"] == 2
    assert event["diagnostics"][0]["message"] == "attribute X is read-only"
    assert event["severity"] == "info"
    assert "warning: Server/cpu-1: attribute X is read-only" in body["text"]
    assert post.headers["X-Metalform-Event"] == "plan.created"


def test_custom_template_sees_event_rule_and_channel(http_receiver: HttpReceiver) -> None:
    template = (
        '  template: "{{ rule.name }}@{{ channel.name }}/{{ channel.type }}: '
        "{{ event.type }} {{ event.addresses | join(',') }} "
        'failed={{ event.summary.failed }}"\n'
    )
    state = desired(
        channel("hook", "webhook", http_receiver.url("/t")),
        rule("custom", "[apply.failed]", "[hook]", template),
    )
    notifier(state).notify(apply_failed())
    [post] = http_receiver.to("/t")
    assert post.json()["text"] == "custom@hook/webhook: apply.failed Server/gpu-1 failed=2"


# --- matching -------------------------------------------------------------------------------

GPU = EventResource("Server/gpu-1", {"site": "yul1", "gpu": "l40"})
CPU = EventResource("Server/cpu-1", {"site": "yul1"})
SERVICE = EventResource("Service/exporter", {"site": "yul1", "gpu": "l40"})


@pytest.mark.parametrize(
    ("match", "event_type", "resources", "severity", "expected"),
    [
        (None, EventType.DRIFT_DETECTED, (), None, True),
        (None, EventType.APPLY_FAILED, (GPU,), None, False),  # type not listed
        ({"kinds": ["Server"]}, EventType.DRIFT_DETECTED, (CPU,), None, True),
        ({"kinds": ["Service"]}, EventType.DRIFT_DETECTED, (CPU,), None, False),
        (
            {"kinds": ["Aggregate", "Service"]},
            EventType.DRIFT_DETECTED,
            (CPU, SERVICE),
            None,
            True,
        ),  # kinds: any of
        ({"kinds": ["Server"]}, EventType.DRIFT_DETECTED, (), None, False),
        ({"labels": {"gpu": "l40"}}, EventType.DRIFT_DETECTED, (CPU, GPU), None, True),
        (
            {"labels": {"gpu": "l40", "site": "yul1"}},
            EventType.DRIFT_DETECTED,
            (CPU,),
            None,
            False,
        ),  # labels: all of, on one resource
        ({"labels": {"gpu": "l40", "site": "yyz2"}}, EventType.DRIFT_DETECTED, (GPU,), None, False),
        (
            {"kinds": ["Server"], "labels": {"gpu": "l40"}},
            EventType.DRIFT_DETECTED,
            (CPU, SERVICE),
            None,
            False,
        ),  # both on the same resource
        ({"severity": "warning"}, EventType.DRIFT_DETECTED, (), None, True),  # default warning
        ({"severity": "error"}, EventType.DRIFT_DETECTED, (), None, False),
        ({"severity": "error"}, EventType.DRIFT_DETECTED, (), "error", True),
        ({"severity": "info"}, EventType.DRIFT_DETECTED, (), "info", True),
    ],
)
def test_rule_matching(
    match: dict[str, Any] | None,
    event_type: EventType,
    resources: tuple[EventResource, ...],
    severity: str | None,
    expected: bool,
) -> None:
    spec = NotificationRuleSpec.model_validate(
        {"events": ["drift.detected"], "channels": ["c"], "match": match}
    )
    event = Event(
        event_type,
        resources=resources,
        severity=None if severity is None else NotifySeverity(severity),
    )
    assert Rule("r", spec).matches(event) is expected


def test_bus_events_match_by_the_labels_of_the_desired_state(http_receiver: HttpReceiver) -> None:
    match = "  match: {kinds: [Server], labels: {gpu: l40}}\n"
    state = desired(
        channel("hook", "webhook", http_receiver.url("/gpu")),
        rule("gpu-drift", "[drift.detected]", "[hook]", match),
    )
    bus = EventBus()
    bus.subscribe(notifier(state))

    bus.emit(
        "drift.detected",
        {"revision": "d" * 40, "resources": 1, "addresses": ["Server/cpu-1"]},
        repository="infra",
    )
    assert http_receiver.posts == []
    bus.emit(
        "drift.detected",
        {"revision": "d" * 40, "resources": 2, "addresses": ["Server/cpu-1", "Server/gpu-1"]},
        repository="infra",
        plan_id="p-2",
    )
    [post] = http_receiver.to("/gpu")
    assert post.json()["event"]["resources"][1] == {
        "address": "Server/gpu-1",
        "kind": "Server",
        "labels": {"site": "yul1", "gpu": "l40"},
    }
    assert (
        post.json()["subject"] == "Drift detected: 2 resource(s) out of sync in infra at "
        "dddddddddddd"
    )


# --- throttle -------------------------------------------------------------------------------


def test_throttle_burst_sends_max_messages_then_one_digest(http_receiver: HttpReceiver) -> None:
    clock = FakeClock()
    throttle = "  throttle: {window: 10m, max: 5}\n"
    state = desired(
        channel("hook", "webhook", http_receiver.url("/burst")),
        rule("burst", "[drift.detected]", "[hook]", throttle),
    )
    n = notifier(state, clock=clock)

    for i in range(50):
        n.notify(Event(EventType.DRIFT_DETECTED, message=f"drift number {i}"))
        clock.advance(1)  # all 50 within the 10-minute window
    assert len(http_receiver.to("/burst")) == 5
    assert n.tick() == 0  # the window has not ended yet

    clock.advance(600)
    assert n.tick() == 1
    posts = http_receiver.to("/burst")
    assert len(posts) == 5 + 1
    digest = posts[-1].json()
    assert digest["digest"]["suppressed"] == 45
    assert len(digest["digest"]["events"]) == 45
    assert digest["subject"] == "45 more notification(s) from rule burst"
    assert "45 more notification(s) of rule burst were held back" in digest["text"]
    assert "(drift number 5)" in digest["text"] and "(drift number 49)" in digest["text"]
    assert n.stats.as_dict() == {
        "sent": 6,
        "failed": 0,
        "retried": 0,
        "suppressed": 45,
        "digests": 1,
        "template_errors": 0,
    }
    assert n.flush() == 0  # nothing held any more

    # A new window opens with the next event.
    n.notify(Event(EventType.DRIFT_DETECTED, message="after the window"))
    assert len(http_receiver.to("/burst")) == 7


def test_digest_goes_out_before_the_event_that_ends_the_window(http_receiver: HttpReceiver) -> None:
    clock = FakeClock()
    state = desired(
        channel("hook", "webhook", http_receiver.url("/w")),
        rule("w", "[drift.detected]", "[hook]", "  throttle: {window: 1m, max: 1}\n"),
    )
    n = notifier(state, clock=clock)
    for _ in range(3):
        n.notify(Event(EventType.DRIFT_DETECTED))
    clock.advance(61)
    n.notify(Event(EventType.DRIFT_DETECTED, message="next window"))
    kinds = ["digest" if "digest" in p.json() else "event" for p in http_receiver.to("/w")]
    assert kinds == ["event", "digest", "event"]
    n.notify(Event(EventType.DRIFT_DETECTED))
    assert n.flush() == 1  # the held one, as a digest of one


# --- secrets --------------------------------------------------------------------------------


def test_a_secret_in_an_event_is_redacted_in_every_message(
    http_receiver: HttpReceiver,
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "bmc-Pa55word-from-env-42"
    monkeypatch.setenv("NOTIFY_TEST_BMC_PASSWORD", secret)
    resolve(SecretRef(from_env="NOTIFY_TEST_BMC_PASSWORD"))  # as a provider would, to connect
    monkeypatch.setenv("NOTIFY_TEST_SLACK_URL", http_receiver.url("/slack/hidden-path-token"))
    clock = FakeClock()
    throttle = "  throttle: {window: 10m, max: 1}\n"
    template = '  template: "{{ event.message }} {{ event.results[0].error }}"\n'
    state = desired(
        channel("hook", "webhook", http_receiver.url("/hook")),
        channel("chat", "slack", "{fromEnv: NOTIFY_TEST_SLACK_URL}"),
        smtp_provider(smtp_sink.url),
        EMAIL_CHANNEL,
        rule("default-words", "[apply.failed]", "[hook, chat, ops-mail]", throttle),
        rule("own-words", "[apply.failed]", "[hook]", template),
    )
    n = notifier(state, clock=clock)
    # As the CLI and the server do: third-party loggers (urllib3 logs request paths at debug
    # level) go through the redacting filter too.
    caplog.handler.addFilter(RedactingFilter())
    leaky = apply_failed(
        message=f"login with {secret} failed",
        diagnostics=[
            {"severity": "error", "address": "Server/gpu-1", "message": f"password {secret}"}
        ],
        payload={"note": secret, secret: "as a key"},
    )
    leaky = Event(
        **{
            **leaky.__dict__,
            "results": [
                {
                    "address": "Server/gpu-1",
                    "operation": "bios.set",
                    "status": "failed",
                    "error": f"BMC said {secret}",
                }
            ],
        }
    )

    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            n.notify(leaky)
        n.flush()

    bodies = http_receiver.all_bodies()
    mails = smtp_sink.handler.wait_for(2)
    assert len(bodies) == 3 + 2 * 2  # own-words 3 times; default-words 1 + a digest, twice
    assert len(mails) == 2  # one message and one digest
    assert any("(sensitive)" in b for b in bodies)
    decoded = [f"{m.message['Subject']}\n{m.message.get_content()}" for m in mails]
    raw = [m.raw.decode("utf-8", "replace") for m in mails]
    for text in [*bodies, *decoded, *raw, caplog.text]:
        assert secret not in text
    assert all("hidden-path-token" not in record.getMessage() for record in caplog.records)


# --- failures -------------------------------------------------------------------------------


def test_delivery_failures_are_counted_and_never_raised(
    http_receiver: HttpReceiver,
    dead_port: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = dead_port
    monkeypatch.setenv("NOTIFY_TEST_SLACK_URL", f"http://127.0.0.1:{dead}/hooks/TOKEN123")
    http_receiver.fail("/broken", 500)
    http_receiver.fail("/gone", 404)
    http_receiver.fail("/flaky", 503, times=1)
    state = desired(
        channel("broken", "webhook", http_receiver.url("/broken")),
        channel("gone", "webhook", http_receiver.url("/gone")),
        channel("flaky", "webhook", http_receiver.url("/flaky")),
        channel("dead-chat", "slack", "{fromEnv: NOTIFY_TEST_SLACK_URL}"),
        channel("unset", "slack", "{fromEnv: NOTIFY_TEST_UNSET_URL}"),
        smtp_provider(f"smtp://127.0.0.1:{dead}"),
        EMAIL_CHANNEL,
        rule("all", "[apply.failed]", "[broken, gone, flaky, dead-chat, unset, ops-mail]"),
    )
    monkeypatch.delenv("NOTIFY_TEST_UNSET_URL", raising=False)
    delays: list[float] = []
    n = notifier(state, sleep=delays.append, retries=2)

    with caplog.at_level(logging.INFO):
        assert n.notify(apply_failed()) == 1  # only the flaky one, at its second attempt

    assert len(http_receiver.to("/broken")) == 3  # 1 + 2 retries of a temporary failure
    assert len(http_receiver.to("/gone")) == 1  # a 404 is permanent: not retried
    assert len(http_receiver.to("/flaky")) == 2
    assert n.stats.failed == 5 and n.stats.sent == 1
    assert n.stats.retried == 1 + 2 + 2 + 2  # flaky, broken, dead-chat, email
    assert delays and all(d > 0 for d in delays)
    assert "webhook channel broken" in caplog.text and "HTTP 500" in caplog.text
    assert "slack channel dead-chat: connection failed" in caplog.text
    assert "TOKEN123" not in caplog.text and str(dead) + "/hooks" not in caplog.text
    assert "NOTIFY_TEST_UNSET_URL" in caplog.text  # names where the secret should be
    assert "email channel ops-mail" in caplog.text


def test_background_notifier_delivers_off_the_emitting_thread(http_receiver: HttpReceiver) -> None:
    state = desired(
        channel("hook", "webhook", http_receiver.url("/bg")),
        rule("bg", "[apply.succeeded]", "[hook]"),
    )
    worker = BackgroundNotifier(notifier(state), tick_interval=0.05)
    bus = EventBus()
    bus.subscribe(worker)
    for _ in range(3):
        bus.emit("apply.succeeded", {"planId": "p-1", "counts": {"succeeded": 1}})
    worker.close()
    assert len(http_receiver.to("/bg")) == 3
    assert worker.dropped == 0


# --- templates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "not allowed in the sandbox"),
        ("{{ event.__class__ }}", "not allowed in the sandbox"),
        ("{{ secrets }}", "unknown variable(s) secrets"),
        ("{{ event.revison }}", "undefined variable or field"),
        ("{% for x in event.addresses %}", "line 1"),
    ],
)
def test_bad_templates_fail_at_load_naming_the_rule(template: str, problem: str) -> None:
    state = desired(
        channel("hook", "webhook", "http://127.0.0.1:9/x"),
        rule("risky", "[apply.failed]", "[hook]", f"  template: {template!r}\n"),
    )
    with pytest.raises(NotificationConfigError) as caught:
        notifier(state)
    message = str(caught.value)
    assert "NotificationRule/risky" in message and problem in message


def test_every_problem_is_reported_together() -> None:
    state = desired(
        channel("hook", "webhook", "http://127.0.0.1:9/x"),
        rule("one", "[apply.failed]", "[hook]", "  template: '{{ nope }}'\n"),
        rule("two", "[apply.failed]", "[hook]", "  template: '{{ ().__class__ }}'\n"),
        smtp_provider("http://127.0.0.1:25"),
        EMAIL_CHANNEL,
    )
    with pytest.raises(NotificationConfigError) as caught:
        notifier(state)
    assert len(caught.value.problems) == 3
    assert "Provider/mail: an smtp Provider's url is smtp://" in str(caught.value)


# --- the lab's mail sink --------------------------------------------------------------------


def test_lab_mail_sink_stores_messages_as_files(tmp_path: Path) -> None:
    peer = SmtpPeer(tmp_path / "smtp", port=0).start()
    try:
        state = desired(
            smtp_provider(peer.url), EMAIL_CHANNEL, rule("mail", "[apply.succeeded]", "[ops-mail]")
        )
        notifier(state).notify(Event(EventType.APPLY_SUCCEEDED, plan_id="p-1", apply_id="a-1"))
        attached = SmtpPeer.attach(tmp_path / "smtp")
        assert attached.is_running() and attached.port == peer.port
        [mail] = attached.messages()
        assert mail["Subject"] == "[metalform] Apply a-1 of plan p-1 succeeded"
    finally:
        peer.stop()
    assert not peer.is_running()
    assert len(list((tmp_path / "smtp" / "mail").glob("*.eml"))) == 1


def test_an_unverifiable_certificate_is_refused(
    smtp_tls_sink: SmtpSink, smtp_login: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    user, password = smtp_login
    state = desired(
        SMTP_CREDENTIAL,
        smtp_provider(smtp_tls_sink.url, ", credential: smtp"),
        EMAIL_CHANNEL,
        rule("mail-failures", "[apply.failed]", "[ops-mail]"),
    )
    n = notifier(state, lambda name: ResolvedCredential(name, user, Secret(password)))
    with caplog.at_level(logging.WARNING):
        assert n.notify(apply_failed()) == 0
    assert smtp_tls_sink.mails == [] and n.stats.failed == 1 and n.stats.retried == 0
    assert "TLS failed (CERTIFICATE_VERIFY_FAILED)" in caplog.text
