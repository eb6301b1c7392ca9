"""No secret value appears in anything Metalform writes: a scan of every output surface.

Known secrets are put in the environment: a BMC password and the one it is rotated from
(`previous`; one server is still on it, so the apply rotates it), a Slack webhook URL (a credential
in itself) and a vendor token. A deliberately careless provider resolves them as a real BMC
login would, logs its password at DEBUG and quotes the secrets in its errors (a failed action,
an unreachable system). Then every surface is collected and scanned: the CLI's plan (text,
JSON, Markdown, saved file), apply, show, validate of a broken repository (in a fresh process,
where no secret was resolved yet), the server's API answers and event stream, the
notifications the HTTP receiver and the SMTP sink got, and the DEBUG logs of all of it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from metalform import cli
from metalform.lab.redfish import FaultKind, RedfishPeer
from providers.memory import MemoryFleet, MemoryProvider
from reconciler import engine
from reconciler.errors import PermanentError
from reconciler.model import Action, Address, LiveResource, Resource
from reconciler.model.live import unreachable
from reconciler.secrets import REDACTOR, Redactor, ResolvedCredential, Secret
from tests.fixtures.notify import HttpReceiver, SmtpSink
from tests.server.harness import Harness, make_harness, wait_for

BMC_PASSWORD = "bmcPw-4f2c9a71-never-print"
BMC_PREVIOUS = "bmcOld-93b1c07e-never-print"
"""The secret before a rotation (`Credential.spec.previous`): Server/a1 is still on it."""
VENDOR_TOKEN = "vendorTok-8d31e0b5-never-print"
SLACK_PATH = "/services/T0SCAN/B0SCAN/slackScanSecret7e5a"
SECRET_ENV = {
    "SCAN_BMC_PASSWORD": BMC_PASSWORD,
    "SCAN_BMC_PREVIOUS": BMC_PREVIOUS,
    "SCAN_VENDOR_TOKEN": VENDOR_TOKEN,
}

log = logging.getLogger("tests.leaky")

INVENTORY = """\
apiVersion: metalform/v1
kind: Credential
metadata: {name: bmc}
spec:
  username: admin
  password: {fromEnv: SCAN_BMC_PASSWORD}
  previous: {fromEnv: SCAN_BMC_PREVIOUS}
---
apiVersion: metalform/v1
kind: Credential
metadata: {name: vendor}
spec: {type: token, token: {fromEnv: SCAN_VENDOR_TOKEN}}
---
apiVersion: metalform/v1
kind: BiosTemplate
metadata: {name: base}
spec:
  attributes: {ProcVirtualization: Enabled, SysProfile: PerfOptimized}
---
apiVersion: metalform/v1
kind: Server
metadata: {name: a1, labels: {rack: r1}}
spec:
  bmc: {driver: redfish, address: "http://10.0.0.1", systemId: a1, credential: bmc}
  power: On
  bios: {template: base}
---
apiVersion: metalform/v1
kind: Server
metadata: {name: b2, labels: {rack: r1}}
spec:
  bmc: {driver: redfish, address: "http://10.0.0.2", systemId: b2, credential: bmc}
  power: On
  bios: {template: base}
---
apiVersion: metalform/v1
kind: Server
metadata: {name: c3, labels: {rack: r2}}
spec:
  bmc: {driver: redfish, address: "http://10.0.0.3", systemId: c3, credential: vendor}
  power: On
"""

NOTIFY = """\
apiVersion: metalform/v1
kind: NotificationChannel
metadata: {{name: slack}}
spec: {{type: slack, url: {{fromEnv: SCAN_SLACK_URL}}}}
---
apiVersion: metalform/v1
kind: NotificationChannel
metadata: {{name: hook}}
spec: {{type: webhook, url: "{hook}"}}
---
apiVersion: metalform/v1
kind: Provider
metadata: {{name: mail}}
spec: {{type: smtp, url: "{smtp}"}}
---
apiVersion: metalform/v1
kind: NotificationChannel
metadata: {{name: mail}}
spec:
  type: email
  email: {{provider: mail, from: metalform@example.org, to: [ops@example.org]}}
---
apiVersion: metalform/v1
kind: NotificationRule
metadata: {{name: everything}}
spec:
  events: [plan.created, plan.failed, apply.started, apply.succeeded, apply.failed,
           drift.detected, webhook.rejected, credential.rotated]
  channels: [slack, hook, mail]
  template: |
    {{{{ event.type }}}} {{{{ event.message }}}}
    {{% for r in event.results %}}{{{{ r.address }}}} {{{{ r.status }}}} {{{{ r.error }}}}
    {{% endfor %}}{{{{ event.payload }}}} {{{{ event.diagnostics }}}}
"""


def fleet() -> MemoryFleet:
    facts = {"manufacturer": "Acme", "model": "G8"}
    state = {
        "power": "Off",
        "bios.attributes.ProcVirtualization": "Disabled",
        "bios.attributes.SysProfile": "PowerSaver",
    }
    systems = {
        address: {"state": dict(state), "facts": facts}
        for address in ("Server/a1", "Server/b2", "Server/c3")
    }
    systems["Server/a1"]["state"]["bmc.login"] = "previous"  # a rotation to finish
    return MemoryFleet(systems)


class LeakyProvider(MemoryProvider):
    """Logs in with the real secret for each resource, and is careless with it."""

    def _secret(self, resource: Resource) -> str:
        credential = self.context.credential(resource.spec.bmc.credential)
        if credential.previous is not None:
            log.debug("the previous secret is %s", credential.previous.reveal())
        return credential.secret.reveal()

    def read(self, resources: Sequence[Resource]) -> Mapping[Address, LiveResource]:
        live: dict[Address, LiveResource] = {}
        for resource in resources:
            secret = self._secret(resource)
            log.debug("login to %s with %s", resource.address, secret)
            if resource.address == "Server/c3":
                live[resource.address] = unreachable(
                    resource.address, f"session refused for token {secret} at 10.0.0.3"
                )
            else:
                live[resource.address] = self.fleet.snapshot(resource.address)
        return live

    def execute(self, action: Action, resource: Resource) -> LiveResource:
        secret = self._secret(resource)
        if action.address == "Server/b2" and action.operation == "bios.set":
            raise PermanentError(f"{action.address}: BMC rejected admin:{secret} (HTTP 401)")
        return super().execute(action, resource)


def leaky_factory(memory: MemoryFleet) -> Any:
    return lambda context: LeakyProvider(context, memory)


def secrets(slack_url: str) -> list[str]:
    """Every secret of the scan in every encoding (`every_encoding`, below)."""
    logins = [
        ("admin", BMC_PASSWORD),
        ("admin", BMC_PREVIOUS),
        ("", VENDOR_TOKEN),
        ("", slack_url),
        ("", SLACK_PATH),
    ]
    return [form for username, value in logins for form in every_encoding(username, value).values()]


def assert_clean(where: str, text: str, slack_url: str) -> None:
    for value in secrets(slack_url):
        assert value not in text, f"a secret leaked into {where}"


@pytest.fixture
def debug_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """The process's logging as `metalform --debug` sets it up (restored afterwards)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def scan_env(monkeypatch: pytest.MonkeyPatch, http_receiver: HttpReceiver) -> str:
    slack_url = http_receiver.url(SLACK_PATH)
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SCAN_SLACK_URL", slack_url)
    monkeypatch.setenv("NO_COLOR", "1")
    return slack_url


def write_repo(root: Path, receiver: HttpReceiver, smtp: SmtpSink) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "inventory.yaml").write_text(INVENTORY, encoding="utf-8")
    (root / "notify.yaml").write_text(
        NOTIFY.format(hook=receiver.url("/hook"), smtp=smtp.url), encoding="utf-8"
    )


def notifications(receiver: HttpReceiver, smtp: SmtpSink) -> str:
    mails = [
        m.raw.decode("utf-8", "replace") + m.message.get_body(("plain",)).get_content()
        for m in smtp.mails
    ]
    headers = [str(p.headers) for p in receiver.posts]
    return "\n".join(receiver.all_bodies() + mails + headers)


def test_cli_outputs_hold_no_secret(
    tmp_path: Path,
    scan_env: str,
    debug_logs: None,
    monkeypatch: pytest.MonkeyPatch,
    http_receiver: HttpReceiver,
    smtp_sink: SmtpSink,
    capsys: pytest.CaptureFixture[str],
) -> None:
    memory = fleet()
    factory = leaky_factory(memory)
    monkeypatch.setattr(
        engine, "installed_providers", lambda: {"redfish": factory, "ipmi": factory}
    )
    repo = tmp_path / "repo"
    write_repo(repo, http_receiver, smtp_sink)
    planfile = tmp_path / "plan.json"
    outputs: list[tuple[str, str]] = []

    def run(*argv: str) -> int:
        code = cli.main(["--debug", *argv])
        out, err = capsys.readouterr()
        outputs.append((" ".join(argv), out + err))
        return code

    for fmt in ("text", "json", "markdown"):
        assert run("plan", "-C", str(repo), "--format", fmt, "--notify") == 0
    assert run("plan", "-C", str(repo), "-o", str(planfile), "--notify") == 0
    for fmt in ("text", "json", "markdown"):
        assert run("show", str(planfile), "--format", fmt) == 0
    assert run("apply", str(planfile), "--notify") == 1
    assert run("apply", "--auto-approve", "-C", str(repo), "--notify") == 1

    # the careless provider did what the scan is for: its secrets reached Metalform
    plan_text = planfile.read_text(encoding="utf-8")
    assert "(sensitive)" in plan_text
    assert any("BMC rejected admin:(sensitive)" in text for _, text in outputs)
    assert "DEBUG tests.leaky: login to Server/a1 with (sensitive)" in outputs[0][1]
    wait_for(lambda: len(smtp_sink.mails) >= 4, what="the mails")
    sent = notifications(http_receiver, smtp_sink)
    assert "apply.failed" in sent and "(sensitive)" in sent
    assert "credential.rotated" in sent  # Server/a1 was moved to the new secret
    assert http_receiver.to(SLACK_PATH), "the Slack channel was used"

    assert_clean(str(planfile), plan_text, scan_env)
    for argv, text in outputs:
        assert_clean(f"the output of `metalform {argv}`", text, scan_env)
    assert_clean("the notifications", sent, scan_env)


def test_validate_of_a_broken_repository_holds_no_secret(
    tmp_path: Path, scan_env: str, http_receiver: HttpReceiver, smtp_sink: SmtpSink
) -> None:
    """In a fresh process nothing was resolved yet: the redactor cannot help, the messages
    themselves must not quote the value (a literal secret in Git, a broken neighbour)."""
    repo = tmp_path / "broken"
    write_repo(repo, http_receiver, smtp_sink)
    (repo / "literal.yaml").write_text(
        "apiVersion: metalform/v1\nkind: Credential\nmetadata: {name: pasted}\n"
        f'spec: {{username: admin, password: "{BMC_PASSWORD}"}}\n',
        encoding="utf-8",
    )
    (repo / "broken.yaml").write_text(
        "apiVersion: metalform/v1\nkind: Server\nmetadata: {name: d4}\n"
        f"spec: {{bmc: {{driver: redfish, address: x, credential: {VENDOR_TOKEN}}}, "
        "power: Maybe\n",
        encoding="utf-8",
    )
    (repo / "notify-broken.yaml").write_text(
        "apiVersion: metalform/v1\nkind: NotificationRule\nmetadata: {name: bad}\n"
        "spec: {events: [apply.failed], channels: [slack], template: '{{ nope }}'}\n",
        encoding="utf-8",
    )
    env = {**os.environ, "NO_COLOR": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "metalform.cli", "--debug", "validate", "-C", str(repo)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "literal.yaml" in result.stderr
    assert "Traceback" not in result.stderr
    assert_clean("the output of `metalform validate`", result.stdout + result.stderr, scan_env)


def test_server_outputs_hold_no_secret(
    tmp_path: Path,
    scan_env: str,
    debug_logs: None,
    monkeypatch: pytest.MonkeyPatch,
    http_receiver: HttpReceiver,
    smtp_sink: SmtpSink,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli._configure_logging(debug=True)
    memory = fleet()
    for harness in make_harness(tmp_path, monkeypatch, forge=None, live=memory):
        _scan_server(harness, memory, scan_env, http_receiver, smtp_sink, capsys)


def _scan_server(
    h: Harness,
    memory: MemoryFleet,
    slack_url: str,
    receiver: HttpReceiver,
    smtp: SmtpSink,
    capsys: pytest.CaptureFixture[str],
) -> None:
    factory = leaky_factory(memory)
    h.service.engine.factories = {"redfish": factory, "ipmi": factory}
    shutil.rmtree(h.remote.work / "infra")
    write_repo(h.remote.work / "infra", receiver, smtp)
    h.remote.commit("leaky fleet")
    h.remote.push("main")

    answers: list[tuple[str, str]] = []

    def get(path: str) -> Any:
        result = h.get(path)
        answers.append((path, result.text))
        return result

    drift = h.service.check_drift()
    h.idle()
    plan = h.plan()
    answers.append(("plan", str(plan)))
    assert plan["status"] == "succeeded"
    for fmt in ("markdown", "text"):
        get(f"/api/v1/plans/{plan['id']}?format={fmt}")
    get(f"/api/v1/plans/{drift.id}")
    applied = h.apply(plan["id"])
    answers.append(("apply", str(applied)))
    assert applied["status"] == "failed"
    stream = get(f"/api/v1/applies/{applied['id']}/events").text
    assert "apply.failed" in stream
    for path in (
        "/api/v1/status",
        "/api/v1/resources",
        "/api/v1/resources/Server/b2",
        "/api/v1/resources/Server/c3",
        "/api/v1/history",
    ):
        get(path)
    rejected = h.github("push", {"ref": "refs/heads/main"}, secret="wrong")
    answers.append(("webhook", rejected.text))
    h.service.notifications.close()
    logs = capsys.readouterr().err

    everything = "\n".join(text for _, text in answers)
    assert "BMC rejected admin:(sensitive)" in everything
    assert "DEBUG" in logs
    wait_for(lambda: smtp.mails, what="the mails")
    sent = notifications(receiver, smtp)
    assert "drift.detected" in sent and "apply.failed" in sent
    assert "credential.rotated" in sent
    assert [r.bmcs for r in h.store.list_rotations().items] == [("Server/a1",)]
    assert receiver.to(SLACK_PATH), "the Slack channel was used"
    for path, text in answers:
        assert_clean(f"the API answer of {path}", text, slack_url)
    assert_clean("the server's logs", logs, slack_url)
    assert_clean("the notifications", sent, slack_url)
    assert_clean(
        "the event log", str([e.payload for e in h.store.list_events(0, limit=500)]), slack_url
    )
    # At rest too: a restarted server has resolved nothing yet, so its redactor would not
    # know what to scrub from what it reads back.
    database = Path(h.config.database.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert_clean("the state store", stored.decode("utf-8", "replace"), slack_url)


# --- encodings of a secret --------------------------------------------------------------------

ECHO_INVENTORY = """\
apiVersion: metalform/v1
kind: Credential
metadata: {{name: bmc}}
spec: {{username: {username}, password: {{fromEnv: ECHO_BMC_PASSWORD}}}}
---
apiVersion: metalform/v1
kind: Server
metadata: {{name: echo}}
spec:
  bmc: {{driver: redfish, address: "{url}", systemId: rf-faulty, credential: bmc}}
  power: On
"""


def every_encoding(username: str, secret: str) -> dict[str, str]:
    """Each form in which `secret` (and `username:secret`, given a username) may come back,
    by name: what the redactor must know."""
    pair = f"{username}:{secret}".encode()
    forms = {
        "raw": secret,
        "quote": quote(secret, safe=""),
        "quote_plus": quote_plus(secret),
        "json": json.dumps(secret)[1:-1],
    }
    encoded = [("pair", pair)] if username else []
    for name, raw in [*encoded, ("secret", secret.encode())]:
        for flavour, encode in (("std", base64.b64encode), ("urlsafe", base64.urlsafe_b64encode)):
            text = encode(raw).decode()
            forms[f"base64 {flavour} of the {name}"] = text
            forms[f"base64 {flavour} of the {name}, unpadded"] = text.rstrip("=")
    return forms


def test_the_redactor_knows_every_encoding_of_a_login() -> None:
    # every flavour differs from the others for this pair: '+', '/', '=' and '"' all occur
    username, secret = "ops", 'x?~>"\\ pw-9a1e-never-print?>'
    forms = every_encoding(username, secret)
    assert len(set(forms.values())) == len(forms), forms
    ResolvedCredential(name="login", username=username, secret=Secret(secret))
    for name, form in forms.items():
        text = f"BMC says: [{form}]"
        assert REDACTOR(text) == "BMC says: [(sensitive)]", name


@pytest.mark.peer
def test_a_bmc_echoing_the_authorization_header_leaks_no_encoding(
    tmp_path: Path,
    redfish_peer: RedfishPeer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The lab BMC answers 500 quoting `Authorization: Basic base64(user:password)`: the plan
    (text, JSON, Markdown: the last is what a pull request comment shows) keeps none of it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "echo.yaml").write_text(
        ECHO_INVENTORY.format(username=redfish_peer.username, url=redfish_peer.url),
        encoding="utf-8",
    )
    monkeypatch.setenv("ECHO_BMC_PASSWORD", redfish_peer.password)
    monkeypatch.setenv("NO_COLOR", "1")
    forms = every_encoding(redfish_peer.username, redfish_peer.password)
    with redfish_peer.fault("rf-faulty", FaultKind.ECHO):
        for fmt in ("text", "json", "markdown"):
            code = cli.main(["plan", "-C", str(repo), "--format", fmt])
            out, err = capsys.readouterr()
            assert code in (0, 2), out + err
            # the echo came back and was scrubbed: the test saw what it is for
            assert "Authorization: Basic (sensitive)" in out + err, out + err
            for name, form in forms.items():
                assert form not in out + err, f"the {name} leaked into the {fmt} plan"


def test_short_secrets_do_not_redact_ordinary_words() -> None:
    redactor = Redactor()
    redactor.add("zz")
    short_form = base64.b64encode(b"zz").decode().rstrip("=")  # "eno"
    text = f"a phenomenal {short_form} day"
    assert redactor(text) == text  # the encodings of a short secret are not redacted ...
    assert redactor("zz top") == "(sensitive) top"  # ... the secret itself always is
    long = "a-long-secret-value"
    redactor.add(long)
    assert redactor(base64.b64encode(long.encode()).decode()) == "(sensitive)"
