"""The comment Metalform keeps on each pull request, edited in place on every new plan."""

from __future__ import annotations

from metalform.store.core import StoreCore
from metalform.store.tables import PullRequestCommentRow


class CommentStore(StoreCore):
    """Pull request comments by forge, repository and number."""

    def get_pr_comment(self, forge: str, repo: str, number: int) -> str | None:
        """The id of the comment Metalform posted on this pull request, if any."""
        with self._read() as session:
            row = session.get(PullRequestCommentRow, (forge, repo, number))
            return None if row is None else row.comment_id

    def set_pr_comment(self, forge: str, repo: str, number: int, comment_id: str) -> None:
        """Remember the comment Metalform posted, to edit it in place on the next plan."""
        changed = {"comment_id": comment_id, "updated_at": self._now()}
        stmt = self._insert(
            PullRequestCommentRow, {"forge": forge, "repo": repo, "number": number, **changed}
        ).on_conflict_do_update(index_elements=["forge", "repo", "number"], set_=changed)
        with self._write() as session:
            session.execute(stmt)
