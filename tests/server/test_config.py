"""The server configuration: defaults, the SPEC's example, errors with positions, overrides."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from metalform.cli import main
from metalform.server.config import Role, load_config, parse_config
from metalform.server.durations import format_duration, parse_duration
from metalform.server.serve import Server
from reconciler.concurrency import DEFAULT_PARALLELISM
from reconciler.errors import InputError, MetalformError

EXAMPLE = """\
listen: 127.0.0.1:8080
database: sqlite:///metalform.db          # or postgresql://user@host/db
repository: {url: /srv/infra.git, branch: main, path: .}
autoApply: false
driftInterval: 10m
tokens:
  - {name: ci, role: operator, token: {fromEnv: METALFORM_TOKEN_CI}}
  - {name: dashboard, role: viewer, sha256: "DIGEST"}
github: {webhookSecret: {fromEnv: GITHUB_WEBHOOK_SECRET}, apiUrl: "https://api.github.com",
         token: {fromEnv: GITHUB_TOKEN}, allowedApprovers: [alice]}
gitlab: {webhookToken: {fromEnv: GITLAB_WEBHOOK_TOKEN}, apiUrl: "https://gitlab.example/api/v4",
         token: {fromEnv: GITLAB_TOKEN}, allowedApprovers: [alice]}
""".replace("DIGEST", hashlib.sha256(b"dash-token").hexdigest())

ENV = {
    "METALFORM_TOKEN_CI": "ci-token-value",
    "GITHUB_WEBHOOK_SECRET": "github-webhook-secret",
    "GITHUB_TOKEN": "github-api-token",
    "GITLAB_WEBHOOK_TOKEN": "gitlab-webhook-token",
    "GITLAB_TOKEN": "gitlab-api-token",
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, environ={})
    assert config.listen == "127.0.0.1:8080"
    assert config.database == f"sqlite:///{tmp_path / 'metalform.db'}"
    assert (config.repository_url, config.branch, config.path) == (".", "main", ".")
    assert config.auto_apply is False
    assert config.drift_interval == 600
    assert config.tokens == ()
    assert config.github is None and config.gitlab is None


def test_parallelism_and_per_endpoint_reach_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(None, environ={}).parallelism == DEFAULT_PARALLELISM
    config = load_config(write(tmp_path, "parallelism: 512\nperEndpoint: 2\n"), environ={})
    assert (config.parallelism, config.per_endpoint) == (512, 2)
    server = Server(config)
    try:
        settings = server.app.service.engine.settings
        assert (settings.parallelism, settings.per_endpoint) == (512, 2)
    finally:
        server.store.close()
    with pytest.raises(InputError):
        load_config(write(tmp_path, "perEndpoint: 0\n"), environ={})


def test_the_spec_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # as SPEC section 4 shows it, except that URLs inside {flow mappings} are quoted: the YAML
    # parser reads `https:` there as a key
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    config = load_config(write(tmp_path, EXAMPLE), environ={})
    assert config.repository_url == "/srv/infra.git"
    ci, dashboard = config.tokens
    assert (ci.name, ci.role) == ("ci", Role.OPERATOR)
    assert ci.digest == hashlib.sha256(b"ci-token-value").digest()
    assert dashboard.digest == hashlib.sha256(b"dash-token").digest()
    # the token value itself is kept nowhere
    assert "ci-token-value" not in repr(config)
    assert config.github is not None and config.github.secret == b"github-webhook-secret"
    assert config.github.allowed_approvers == {"alice"}
    assert config.gitlab is not None and config.gitlab.api_url == "https://gitlab.example/api/v4"


def test_environment_overrides(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, "listen: 127.0.0.1:9000\n"),
        environ={
            "METALFORM_LISTEN": "127.0.0.1:9100",
            "METALFORM_DATABASE": "postgresql://u@db/metalform",
        },
    )
    assert config.listen_port == 9100
    assert config.database == "postgresql://u@db/metalform"
    with pytest.raises(MetalformError, match="METALFORM_LISTEN"):
        load_config(None, environ={"METALFORM_LISTEN": "nowhere"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("listen: localhost\n", "server.yaml:1:1: error: listen: must be HOST:PORT"),
        (
            "autoApply: maybe\n",
            "server.yaml:1:1: error: autoApply: Input should be a valid boolean",
        ),
        (
            "repository:\n  url: x\n  brnach: main\n",
            "server.yaml:3:3: error: repository.brnach: unknown field",
        ),
        (
            "driftInterval: soon\n",
            "server.yaml:1:1: error: driftInterval: 'soon' is not a duration",
        ),
        (
            "tokens:\n  - {name: a, role: admin, sha256: x}\n",
            "server.yaml:2:15: error: tokens.0.role: "
            "Input should be 'viewer', 'planner' or 'operator'",
        ),
        (
            'tokens:\n  - {name: a, token: {fromEnv: A}, sha256: "00"}\n',
            "server.yaml:2:5: error: tokens.0: give exactly one of token",
        ),
        (
            "github:\n  webhookSecret: literal\n",
            "server.yaml:2:3: error: github.webhookSecret: Input should be a valid dictionary",
        ),
        ("database: mysql://x\n", "server.yaml:1:1: error: database: must be sqlite:///PATH"),
        ("listen: [unclosed\n", "server.yaml:2:1: error: invalid YAML"),
        ("a: 1\na: 2\n", "server.yaml:2:1: error: duplicate key 'a'"),
        ("- 1\n", "server.yaml:1:1: error: the configuration must be a mapping"),
    ],
)
def test_errors_name_file_line_column_and_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        load_config(write(tmp_path, text), environ={})
    rendered = [d.render() for d in caught.value.diagnostics]
    assert any(
        line.endswith(expected.split("server.yaml", 1)[1]) or expected in line
        for line in [r.replace(str(tmp_path) + "/", "") for r in rendered]
    ), rendered


def test_all_errors_are_reported_together() -> None:
    with pytest.raises(InputError) as caught:
        parse_config("listen: x\nworkers: 0\nbogus: 1\n", "c.yaml")
    fields = [d.field for d in caught.value.diagnostics]
    assert fields == ["listen", "workers", "bogus"]


def test_secret_values_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_config(
            write(tmp_path, "tokens:\n  - {name: a, token: sup3r-secret-value}\n"), environ={}
        )
    assert "sup3r-secret-value" not in str([d.render() for d in caught.value.diagnostics])


def test_missing_secret_fails_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    with pytest.raises(MetalformError, match="token a is not set"):
        load_config(
            write(tmp_path, "tokens:\n  - {name: a, token: {fromEnv: NOPE_TOKEN}}\n"), environ={}
        )


def test_serve_with_an_invalid_config_exits_1_with_positions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "listen: 127.0.0.1:0\nrepository: {url: x, brnch: main}\n")
    assert main(["serve", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:2:22: error: repository.brnch: unknown field" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("1h30m", 5400), ("0", 0), ("250ms", 0.25), (45, 45)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_durations() -> None:
    for text in ("", "10x", "m10", "-1s", "1h junk"):
        with pytest.raises(ValueError):
            parse_duration(text)
    assert format_duration(600) == "10m"
    assert format_duration(90) == "90s"


def test_a_rabbitmq_broker_with_its_reply_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `broker:` block as docs/server.md shows it: each password from its own reference."""
    monkeypatch.setenv("METALFORM_TASK_KEY", "config-test-task-key")
    monkeypatch.setenv("RABBIT_PASSWORD", "rabbit-secret-for-config")
    monkeypatch.setenv("REDIS_PASSWORD", "redis-secret-for-config")
    text = """broker:
  url: amqp://metalform@rabbit.example:5672//
  password: {fromEnv: RABBIT_PASSWORD}
  backend: redis://redis.example:6379/0
  backendPassword: {fromEnv: REDIS_PASSWORD}
  siteLabel: dc
  readDeadline: 2m
"""
    sites = load_config(write(tmp_path, text), environ={}).sites
    assert sites is not None
    assert sites.url() == "amqp://metalform:rabbit-secret-for-config@rabbit.example:5672//"
    assert sites.backend_url() == "redis://:redis-secret-for-config@redis.example:6379/0"
    assert (sites.label, sites.read_deadline) == ("dc", 120.0)
    assert "secret" not in repr(sites)
    without = text.replace("  backend: redis://redis.example:6379/0\n", "")
    with pytest.raises(MetalformError, match="needs a Redis for replies"):
        load_config(write(tmp_path, without), environ={})
