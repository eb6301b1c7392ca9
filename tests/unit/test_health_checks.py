"""Health checks after a resource's actions gate its dependants (memory provider, a real TCP
listener on loopback)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from providers.memory import MemoryFleet, memory_factory
from reconciler.apply import ActionResult, ApplyResult, wave_passed
from reconciler.checks import http_check, ssh_check
from reconciler.engine import Engine
from reconciler.model import ActionStatus, Plan
from reconciler.model.checks import HttpCheck, SshCheck

SERVER = """---
apiVersion: metalform/v1
kind: Server
metadata: {{name: {name}}}
spec:
  bmc: {{driver: redfish, address: "http://127.0.0.1:{bmc}", systemId: {name}, credential: bmc}}
  power: On
{checks}"""
CREDENTIAL = """apiVersion: metalform/v1
kind: Credential
metadata: {name: bmc}
spec: {username: admin, password: {fromEnv: BMC_PASSWORD}}
"""


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on loopback that accepts connections (a host that came back)."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def repo(tmp_path: Path, checks: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BMC_PASSWORD", "s3cret-for-tests")
    root = tmp_path / "repo"
    root.mkdir()
    servers = [
        SERVER.format(name="a1", bmc=1, checks=checks),
        SERVER.format(name="b2", bmc=2, checks=""),
        SERVER.format(name="c3", bmc=3, checks=""),
    ]
    (root / "fleet.yaml").write_text(CREDENTIAL + "".join(servers))
    return root


def fleet() -> MemoryFleet:
    return MemoryFleet({f"Server/{n}": {"state": {"power": "Off"}} for n in ("a1", "b2", "c3")})


def after_a1(plan: Plan) -> Plan:
    """b2's power-on waits for a1's, as a host waits for the one it depends on."""
    first = next(a.id for a in plan.actions if a.address == "Server/a1")
    actions = [
        a.model_copy(update={"depends_on": (first,)}) if a.address == "Server/b2" else a
        for a in plan.actions
    ]
    return plan.model_copy(update={"actions": actions})


def run(root: Path, f: MemoryFleet) -> dict[str, tuple[ActionStatus, str | None]]:
    factory = memory_factory(f)
    engine = Engine(factories={"redfish": factory})
    plan = after_a1(engine.plan(root).plan)
    result = engine.apply(plan)
    assert wave_passed(result, ["Server/c3"]) == (True, [])
    return {r.address: (r.status, r.error) for r in result.results.values()}


def test_failing_check_fails_the_resource_and_skips_its_dependants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    checks = f"  checks:\n    - tcp: 127.0.0.1:{port}\n      timeout: 1s\n"
    f = fleet()
    got = run(repo(tmp_path, checks, monkeypatch), f)
    status, error = got["Server/a1"]
    assert status is ActionStatus.FAILED
    assert error is not None and error.startswith(f"health check failed: tcp 127.0.0.1:{port}")
    assert "(for 1s)" in error
    assert got["Server/b2"][0] is ActionStatus.SKIPPED
    assert got["Server/c3"][0] is ActionStatus.SUCCEEDED
    assert ("Server/b2", "power.on") not in f.calls
    assert f.systems["Server/a1"]["state"]["power"] == "On", "the action itself ran"


def test_passing_check_lets_dependants_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listener: int
) -> None:
    checks = f"  checks:\n    - tcp: 127.0.0.1:{listener}\n      timeout: 2s\n"
    got = run(repo(tmp_path, checks, monkeypatch), fleet())
    assert {a: s for a, (s, _) in got.items()} == {
        "Server/a1": ActionStatus.SUCCEEDED,
        "Server/b2": ActionStatus.SUCCEEDED,
        "Server/c3": ActionStatus.SUCCEEDED,
    }


def test_wave_passed_names_what_failed() -> None:
    result = ApplyResult(
        {
            1: ActionResult(1, "Server/a1", "power.on", ActionStatus.FAILED, error="boom"),
            2: ActionResult(2, "Server/b2", "power.on", ActionStatus.SUCCEEDED),
        }
    )
    assert wave_passed(result, ["Server/b2"]) == (True, [])
    assert wave_passed(result, ["Server/a1", "Server/b2"]) == (
        False,
        ["Server/a1: power.on failed: boom"],
    )


class _Status(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_http_check_compares_the_status() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert http_check(HttpCheck(http=f"{base}/ok", timeout="2s"), 2.0) is None
        why = http_check(HttpCheck(http=f"{base}/down", timeout="2s"), 2.0)
        assert why == "status 503, expected 200"
        assert http_check(HttpCheck(http=f"{base}/down", status=503, timeout="2s"), 2.0) is None
    finally:
        server.shutdown()
        server.server_close()


def test_ssh_check_wants_a_banner(listener: int) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sshd:
        port = sshd.getsockname()[1]

        def greet() -> None:
            conn, _ = sshd.accept()
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            conn.close()

        thread = threading.Thread(target=greet, daemon=True)
        thread.start()
        assert ssh_check(SshCheck(ssh=f"127.0.0.1:{port}", timeout="2s"), 2.0) is None
        thread.join()
    # the listener accepts and closes without a word: not an SSH server
    why = ssh_check(SshCheck(ssh=f"127.0.0.1:{listener}", timeout="2s"), 2.0)
    assert why == "the server at that address does not speak SSH"
