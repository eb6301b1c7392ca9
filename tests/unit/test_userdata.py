"""User data rendering (sandboxed Jinja2 -> cloud-config) and the provisioning planner's use."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.model import LiveResource, Severity
from reconciler.planners.base import PlanContext
from reconciler.planners.provisioning import plan_provisioning
from reconciler.secrets import REDACTOR, SENSITIVE
from reconciler.userdata import (
    UserDataError,
    digest_of,
    render_user_data,
    repository_files,
)
from tests.fixtures.maas import maas_server

GOOD = """\
#cloud-config
hostname: {{ server.hostname }}
packages: {{ vars.packages | tojson }}
write_files:
  - path: /etc/site
    content: "{{ server.labels.site | default('none') }}"
"""


def repo_with(tmp_path: Path, text: str, name: str = "node.yaml.j2") -> Path:
    (tmp_path / "cloud-init").mkdir(exist_ok=True)
    (tmp_path / "cloud-init" / name).write_text(text)
    return tmp_path


def render(tmp_path: Path, text: str, **vars: object) -> str:
    server = maas_server("n1", template="cloud-init/node.yaml.j2", vars=dict(vars))
    return render_user_data(server, repository_files(repo_with(tmp_path, text))).text


def test_renders_server_and_vars(tmp_path: Path) -> None:
    server = maas_server(
        "n1", template="cloud-init/node.yaml.j2", vars={"packages": ["dcgm", "nvidia-driver-550"]}
    )
    rendered = render_user_data(server, repository_files(repo_with(tmp_path, GOOD)))
    assert rendered.text.startswith("#cloud-config\nhostname: n1\n")
    assert 'packages: ["dcgm", "nvidia-driver-550"]' in rendered.text
    assert rendered.digest == digest_of(rendered.text)
    assert rendered.template == "cloud-init/node.yaml.j2"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("#cloud-config\nx: {{ vars.nope }}\n", "'dict object' has no attribute 'nope'"),
        ("#cloud-config\nx: {{ server.__class__.__mro__ }}\n", "not allowed in the sandbox"),
        ("#cloud-config\n{{ vars.packages.append('x') }}\n", "not allowed in the sandbox"),
        ("#cloud-config\nx: [unclosed\n", "renders invalid YAML"),
        ("packages: []\n", "the first line must be '#cloud-config'"),
        ("#cloud-config\n- a\n- b\n", "must render a YAML mapping"),
        ("#cloud-config\n{% if %}\n", "syntax error"),
    ],
)
def test_template_problems_name_the_template(tmp_path: Path, template: str, problem: str) -> None:
    with pytest.raises(UserDataError) as caught:
        render(tmp_path, template, packages=["a"])
    assert problem in str(caught.value)
    assert "cloud-init/node.yaml.j2" in str(caught.value)


def test_paths_stay_inside_the_repository(tmp_path: Path) -> None:
    read = repository_files(tmp_path)
    for path in ("../outside.j2", "/etc/passwd"):
        with pytest.raises(UserDataError, match="relative to the repository root"):
            read(path)
    with pytest.raises(UserDataError, match="does not exist"):
        read("cloud-init/missing.j2")


def test_a_secret_value_in_user_data_is_refused(tmp_path: Path) -> None:
    REDACTOR.add("userdata-test-secret-value")
    with pytest.raises(UserDataError, match="renders a secret value") as caught:
        render(
            tmp_path, "#cloud-config\npassword: {{ vars.pw }}\n", pw="userdata-test-secret-value"
        )
    assert "userdata-test-secret-value" not in str(caught.value)
    assert SENSITIVE not in str(caught.value)


def test_reads_a_git_revision_not_the_worktree(tmp_path: Path) -> None:
    import git

    repo = git.Repo.init(tmp_path)
    repo_with(tmp_path, GOOD)
    repo.index.add(["cloud-init/node.yaml.j2"])
    repo.index.commit(
        "template",
        author=git.Actor("t", "t@example.invalid"),
        committer=git.Actor("t", "t@example.invalid"),
    )
    (tmp_path / "cloud-init" / "node.yaml.j2").write_text("changed in the worktree\n")
    assert repository_files(tmp_path, "HEAD")("cloud-init/node.yaml.j2") == GOOD
    with pytest.raises(UserDataError, match="does not exist in HEAD"):
        repository_files(tmp_path, "HEAD")("cloud-init/other.j2")


def context(tmp_path: Path | None) -> PlanContext:
    return PlanContext(
        resources={},
        locate=lambda address, path: None,
        operations={},
        now=datetime(2026, 1, 1, tzinfo=UTC),
        files=repository_files(tmp_path) if tmp_path else None,
    )


def test_planner_puts_rendered_user_data_in_the_deploy(tmp_path: Path) -> None:
    repo_with(tmp_path, GOOD)
    server = maas_server(
        "n1", template="cloud-init/node.yaml.j2", vars={"packages": ["dcgm"]}, distro_series="noble"
    )
    live = LiveResource(
        address=server.address, state={"provisioning.state": "Ready", "provisioning.tags": []}
    )
    planned = plan_provisioning(server, live, context(tmp_path))
    assert planned.diagnostics == []
    (deploy,) = planned.drafts
    assert deploy.operation == "provisioning.deploy" and deploy.provider == "maas"
    assert deploy.params["userData"].startswith("#cloud-config\nhostname: n1")
    assert deploy.params["userDataHash"] == digest_of(deploy.params["userData"])
    assert deploy.expect.current["provisioning.userDataHash"] == deploy.params["userDataHash"]


def test_planner_reports_template_errors_as_diagnostics(tmp_path: Path) -> None:
    repo_with(tmp_path, "#cloud-config\nx: {{ vars.missing }}\n")
    server = maas_server("n1", template="cloud-init/node.yaml.j2")
    live = LiveResource(address=server.address, state={"provisioning.state": "Ready"})
    planned = plan_provisioning(server, live, context(tmp_path))
    assert planned.drafts == []
    (diag,) = planned.diagnostics
    assert diag.severity is Severity.ERROR
    assert diag.address == "Server/n1"
    assert diag.field == "spec.provisioning.userData.template"
    assert "cloud-init/node.yaml.j2" in diag.message and "missing" in diag.message


def test_planner_without_repository_files_says_so() -> None:
    server = maas_server("n1", template="cloud-init/node.yaml.j2")
    live = LiveResource(address=server.address, state={"provisioning.state": "Ready"})
    (diag,) = plan_provisioning(server, live, context(None)).diagnostics
    assert "without the repository's files" in diag.message


def test_deploying_machine_is_waited_for_never_deployed_again(tmp_path: Path) -> None:
    server = maas_server("n1")
    live = LiveResource(address=server.address, state={"provisioning.state": "Deploying"})
    planned = plan_provisioning(server, live, context(tmp_path))
    assert [(d.operation, d.params, d.reason) for d in planned.drafts] == [
        ("provisioning.wait", {"until": "Deployed"}, "the machine is Deploying in MAAS")
    ]
    assert planned.diagnostics == []


def test_a_transition_away_from_the_target_is_left_alone_until_it_ends(tmp_path: Path) -> None:
    server = maas_server("n1")
    live = LiveResource(address=server.address, state={"provisioning.state": "Releasing"})
    planned = plan_provisioning(server, live, context(tmp_path))
    assert planned.drafts == []
    assert "Releasing" in planned.diagnostics[0].message
