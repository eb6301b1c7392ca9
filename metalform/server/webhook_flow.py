"""What a verified webhook delivery makes the server do.

push to the tracked branch -> plan its head (and apply with autoApply); pull request opened,
updated or reopened -> plan its head and report on it; `/metalform apply` from an allowed
approver -> apply the pull request's latest plan; `/metalform plan` -> plan its head again.
Everything else is acknowledged and ignored. The answer says which, for the forge's delivery
log; the work itself runs on the workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from metalform.server.config import ForgeSettings
from metalform.server.control import ControlPlane
from metalform.server.reporting import PullRequest
from metalform.store import Trigger
from reconciler.errors import MetalformError
from reconciler.model.events import EventType
from reconciler.secrets import REDACTOR
from webhooks import Command, EventKind, GitEvent

log = logging.getLogger("metalform.server.webhooks")


@dataclass(frozen=True)
class Outcome:
    """The HTTP answer to a delivery: status code and JSON body."""

    status: int
    body: dict[str, Any]
    result: str
    """For the delivery record and the metrics: accepted, ignored, duplicate, rejected..."""


def _ignored(reason: str) -> Outcome:
    return Outcome(202, {"status": "ignored", "reason": reason}, "ignored")


def _pull_request(event: GitEvent, head_sha: str | None) -> PullRequest:
    assert event.repository is not None and event.pr_number is not None
    return PullRequest(
        event.forge.value, event.repository, event.pr_number, head_sha, event.repository_id
    )


class WebhookFlow:
    """Turns `GitEvent`s into plans and applies on a `ControlPlane`."""

    def __init__(self, service: ControlPlane) -> None:
        self.service = service

    def handle(self, event: GitEvent, settings: ForgeSettings) -> Outcome:
        """Act on a verified, de-duplicated delivery."""
        if event.kind is EventKind.PING:
            return Outcome(200, {"status": "pong"}, "ping")
        if event.kind is EventKind.IGNORED:
            return _ignored(event.ignored_reason or "not handled")
        if settings.repository is not None and event.repository != settings.repository:
            return _ignored(f"repository {event.repository} is not the tracked one")
        if event.kind is EventKind.PUSH:
            return self._push(event)
        if event.kind is EventKind.PULL_REQUEST:
            return self._pull_request(event, settings)
        if event.kind is EventKind.COMMENT:
            return self._comment(event, settings)
        return _ignored(f"{event.kind.value} events are not handled")

    def _push(self, event: GitEvent) -> Outcome:
        branch = self.service.config.branch
        if event.branch != branch:
            return _ignored(f"push to {event.ref}, not to the tracked branch {branch}")
        if event.deleted or event.head_sha is None:
            return _ignored(f"branch {branch} was deleted")
        record = self.service.plan_new_head(
            event.head_sha, trigger=Trigger.WEBHOOK, who=event.sender
        )
        if record is None:
            return _ignored(f"{event.head_sha} is planned already")
        return Outcome(202, {"status": "accepted", "planId": record.id}, "planned")

    def _pull_request(self, event: GitEvent, settings: ForgeSettings) -> Outcome:
        if not event.wants_pr_plan:
            return _ignored(f"pull request {event.forge_action}: the code did not change")
        branch = self.service.config.branch
        if event.base_branch != branch:
            return _ignored(f"pull request into {event.base_branch}, not {branch}")
        if event.from_fork and not settings.plan_forks:
            pr = _pull_request(event, event.head_sha)
            self.service.workers.submit(
                f"reply on {pr.key}",
                self.service.reporter.reply,
                pr,
                "Metalform does not plan pull requests from forks on this server "
                "(planForks is off).",
                f"fork:{event.head_sha}",
            )
            return _ignored("pull request from a fork (planForks is off)")
        pr = _pull_request(event, event.head_sha)
        record = self.service.request_plan(
            event.head_branch,
            sha=event.head_sha,
            trigger=Trigger.WEBHOOK,
            who=event.sender,
            pull_request=pr,
        )
        return Outcome(202, {"status": "accepted", "planId": record.id}, "planned")

    def _comment(self, event: GitEvent, settings: ForgeSettings) -> Outcome:
        if event.command is None:
            return _ignored("comment without a /metalform command")
        pr = _pull_request(event, event.head_sha)
        author = event.comment_author or ""
        if author not in settings.allowed_approvers:
            reason = f"{author} may not run /metalform {event.command.value}"
            self.service.bus.emit(
                EventType.WEBHOOK_REJECTED,
                {
                    "forge": event.forge.value,
                    "delivery": event.delivery_id,
                    "reason": reason,
                    "pullRequest": pr.key,
                },
                repository=self.service.repository,
            )
            self.service.workers.submit(
                f"reply on {pr.key}",
                self.service.reporter.reply,
                pr,
                f"@{author} is not allowed to run `/metalform {event.command.value}` here; "
                "ask one of the approvers.",
                f"denied:{event.comment_id}",
            )
            return Outcome(202, {"status": "refused", "reason": reason}, "refused")
        job = self._apply if event.command is Command.APPLY else self._replan
        self.service.workers.submit(
            f"{event.command.value} command on {pr.key}", job, pr, author, event.comment_id
        )
        return Outcome(202, {"status": "accepted", "command": event.command.value}, "accepted")

    def _head(self, pr: PullRequest) -> str | None:
        """The PR's head commit: from the event (GitLab sends it) or asked of the forge."""
        if pr.head_sha is not None:
            return pr.head_sha
        client = self.service.reporter.clients.get(pr.forge)
        if client is None:
            return None
        try:
            return client.head_sha(pr.api_repository, pr.number)
        except (MetalformError, ValueError, KeyError) as exc:
            log.warning("could not read the head of %s: %s", pr.key, REDACTOR(str(exc)))
            return None

    def _replan(self, pr: PullRequest, author: str, comment_id: int | None) -> None:
        head = self._head(pr)
        if head is None:
            self.service.reporter.reply(
                pr, "Cannot tell which commit to plan: the forge did not say.", f"plan:{comment_id}"
            )
            return
        pr = PullRequest(pr.forge, pr.repository, pr.number, head, pr.repository_id)
        self.service.request_plan(
            None, sha=head, trigger=Trigger.WEBHOOK, who=author, pull_request=pr
        )

    def _apply(self, pr: PullRequest, author: str, comment_id: int | None) -> None:
        """Apply the PR's latest plan, if it is of the PR's current head."""
        service = self.service
        tag = f"apply:{comment_id}"
        latest = service.store.list_plans(pull_request=pr.key, limit=1).items
        if not latest:
            service.reporter.reply(pr, "There is no plan of this pull request to apply yet.", tag)
            return
        record = latest[0]
        head = self._head(pr)
        if head is not None and record.revision is not None and head != record.revision:
            service.reporter.reply(
                pr,
                f"The latest plan (`{record.id}`) is of "
                f"`{record.revision}`, the pull request is now at "
                f"`{head}`: wait for the new plan.",
                tag,
            )
            return
        pr = PullRequest(pr.forge, pr.repository, pr.number, record.revision, pr.repository_id)
        try:
            applied = service.request_apply(
                record.id, trigger=Trigger.WEBHOOK, who=author, pull_request=pr
            )
        except MetalformError as exc:
            service.reporter.reply(pr, f"Cannot apply plan `{record.id}`: {exc}", tag)
            return
        service.reporter.reply(
            pr, f"Applying plan `{record.id}` (apply `{applied.id}`), asked by @{author}.", tag
        )
