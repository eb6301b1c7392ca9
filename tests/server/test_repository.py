"""The tracked repository: fetch, resolve, and errors that never show a credential."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metalform.server.repository import RepositoryUnavailable, Tracker, repository_key
from tests.server.harness import GitRemote


def test_fetch_resolve_and_new_commits(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path)
    tracker = Tracker(remote.url, "main", "infra", tmp_path / "data")
    assert tracker.fetch() == remote.main
    assert tracker.resolve(None) == remote.main
    assert tracker.resolve(remote.main[:10]) == remote.main
    assert tracker.branch_of("main") == "main"
    assert tracker.branch_of(remote.main) is None
    sha = remote.commit("next")
    remote.push("main")
    assert tracker.resolve("main") == remote.main  # as last fetched
    assert tracker.fetch() == sha
    assert tracker.has_commit(sha)
    assert not tracker.has_commit("0" * 40)
    assert tracker.source_path == tmp_path / "data" / "repository" / "infra"
    with pytest.raises(RepositoryUnavailable, match="unknown revision 'nope'"):
        tracker.resolve("nope")


def test_unreachable_remote_hides_credentials(tmp_path: Path) -> None:
    url = "https://deploy:glpat-very-secret-token@127.0.0.1:1/infra.git"
    tracker = Tracker(url, "main", ".", tmp_path)
    with pytest.raises(RepositoryUnavailable) as caught:
        tracker.fetch()
    assert "glpat-very-secret-token" not in str(caught.value)
    assert "https://***@127.0.0.1:1/infra.git" in str(caught.value)
    # git's own reason, not the closing quote of GitPython's stderr wrapper
    assert re.search(r"failed: fatal: unable to access '[^']*': \S", str(caught.value)), str(
        caught.value
    )
    assert tracker.reachable()[0] is False
    assert "glpat" not in repository_key(url, "main", ".")


def test_a_failed_clone_says_why(tmp_path: Path) -> None:
    tracker = Tracker(str(tmp_path / "no-such-repository"), "main", ".", tmp_path / "data")
    with pytest.raises(RepositoryUnavailable) as caught:
        tracker.fetch()
    message = str(caught.value)
    missing = str(tmp_path / "no-such-repository")
    assert message.endswith(f"failed: fatal: repository '{missing}' does not exist"), message
    assert "Cloning into" not in message


def test_missing_branch(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path)
    tracker = Tracker(remote.url, "release", ".", tmp_path / "data")
    with pytest.raises(RepositoryUnavailable, match="branch release does not exist"):
        tracker.fetch()
