"""Reporting back to the forge: one plan comment per pull request, edited in place, and the
`metalform/plan` commit status. A forge that fails never fails the plan: it is logged."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from metalform.store import ApplyRecord, Store
from reconciler.model import Plan
from reconciler.render import MARKDOWN_MARKER, render_markdown
from reconciler.secrets import REDACTOR
from webhooks import CommitState, ForgeClient, ForgeError

log = logging.getLogger("metalform.server.reporting")

REPLY_MARKER = "<!-- metalform:reply"
APPLY_MARKER = "<!-- metalform:apply -->"


@dataclass(frozen=True)
class PullRequest:
    """A pull (merge) request the server plans: where it lives and the commit under review."""

    forge: str
    repository: str
    """`owner/repo` (GitHub) or `group/project` (GitLab)."""
    number: int
    head_sha: str | None = None
    repository_id: int | None = None
    """GitLab addresses projects by id; the path works too."""

    @property
    def key(self) -> str:
        """The store's `pull_request` key, e.g. `github:org/infra#12`."""
        return f"{self.forge}:{self.repository}#{self.number}"

    @property
    def api_repository(self) -> str | int:
        if self.forge == "gitlab" and self.repository_id is not None:
            return self.repository_id
        return self.repository


class ForgeReporter:
    """Posts what the server did on pull requests, through one client per forge."""

    def __init__(
        self, clients: Mapping[str, ForgeClient], store: Store, public_url: str | None = None
    ) -> None:
        self.clients = dict(clients)
        self.store = store
        self.public_url = public_url

    def _client(self, pr: PullRequest) -> ForgeClient | None:
        client = self.clients.get(pr.forge)
        if client is None:
            log.info("no %s API token configured: not reporting on %s", pr.forge, pr.key)
        return client

    def _link(self, plan_id: str) -> str | None:
        return (
            f"{self.public_url}/api/v1/plans/{plan_id}?format=markdown" if self.public_url else None
        )

    def status(
        self, pr: PullRequest, state: CommitState, description: str, plan_id: str | None = None
    ) -> None:
        """Set `metalform/plan` on the PR's head commit."""
        client = self._client(pr)
        if client is None or pr.head_sha is None:
            return
        try:
            client.set_status(
                pr.api_repository,
                pr.head_sha,
                state,
                description,
                target_url=self._link(plan_id) if plan_id else None,
            )
        except (ForgeError, ValueError) as exc:
            log.warning("could not set the commit status of %s: %s", pr.key, REDACTOR(str(exc)))

    def plan_comment(self, pr: PullRequest, body: str) -> None:
        """Create the PR's plan comment, or edit the one posted before (the store knows it)."""
        client = self._client(pr)
        if client is None:
            return
        known = self.store.get_pr_comment(pr.forge, pr.repository, pr.number)
        try:
            ref = client.upsert_comment(
                pr.api_repository,
                pr.number,
                body,
                comment_id=int(known) if known else None,
                marker=MARKDOWN_MARKER,
            )
        except (ForgeError, ValueError) as exc:
            log.warning("could not post the plan on %s: %s", pr.key, REDACTOR(str(exc)))
            return
        if known != str(ref.id):
            self.store.set_pr_comment(pr.forge, pr.repository, pr.number, str(ref.id))

    def reply(self, pr: PullRequest, text: str, tag: str) -> None:
        """A new comment answering a command (`tag` makes it distinct from earlier replies)."""
        client = self._client(pr)
        if client is None:
            return
        marker = f"{REPLY_MARKER}:{tag} -->"
        try:
            client.upsert_comment(pr.api_repository, pr.number, REDACTOR(text), marker=marker)
        except (ForgeError, ValueError) as exc:
            log.warning("could not reply on %s: %s", pr.key, REDACTOR(str(exc)))

    # --- what the comments say ---------------------------------------------------------

    def planned(self, pr: PullRequest, plan_id: str, plan: Plan) -> None:
        body = render_markdown(plan)
        footer = f"\n<sub>Metalform plan `{plan_id}`"
        if plan.has_errors:
            footer += " · fix the errors and push again"
            state, description = CommitState.FAILURE, "The plan has errors"
        elif plan.runnable:
            footer += " · comment `/metalform apply` to apply it"
            state = CommitState.SUCCESS
            description = f"{len(plan.runnable)} action(s) to run"
        else:
            state, description = CommitState.SUCCESS, "No changes"
        self.plan_comment(pr, body + footer + "</sub>\n")
        self.status(pr, state, description, plan_id)

    def plan_failed(
        self, pr: PullRequest, plan_id: str, error: str, *, invalid_input: bool
    ) -> None:
        sha = pr.head_sha or "?"
        body = (
            f"{MARKDOWN_MARKER}\n### Metalform plan for `{sha}` failed\n\n"
            f"```\n{REDACTOR(error)}\n```\n\n<sub>Metalform plan `{plan_id}`</sub>\n"
        )
        self.plan_comment(pr, body)
        if invalid_input:
            self.status(pr, CommitState.FAILURE, "The desired state is invalid", plan_id)
        else:
            self.status(pr, CommitState.ERROR, "The plan could not run", plan_id)

    def applied(self, pr: PullRequest, record: ApplyRecord) -> None:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(record.counts.items()))
        if record.error is None:
            text = (
                f"Applied plan `{record.plan_id}` at `{record.revision}`: "
                f"{counts or 'nothing to do'}."
            )
        else:
            text = f"Apply of plan `{record.plan_id}` failed: {record.error}" + (
                f" ({counts})" if counts else ""
            )
        self.reply(pr, f"{text}\n\n<sub>Metalform apply `{record.id}`</sub>", f"apply:{record.id}")
