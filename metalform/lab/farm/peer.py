"""The farm as a lab peer: `metalform lab up --fleet N` starts it, `lab down` stops it."""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from metalform.lab.farm.repo import write_fleet_repo
from metalform.lab.farm.runner import BMCS_FILE, PASSWORD_FILE
from metalform.lab.process import ModulePeer, secret_file, spawn_module

USERNAME = "root"


class FarmPeer(ModulePeer):
    """N farm BMCs in a process of their own; their URLs in STATE_DIR/bmcs.json."""

    module = "metalform.lab.farm"
    noun = "BMC farm"
    pid_file = "farm.pid"
    log_file = "farm.log"

    def __init__(
        self, state_dir: Path | str, *, host: str = "127.0.0.1", port: int = 0, count: int = 0
    ) -> None:
        super().__init__(state_dir, host=host, port=port)
        self.count = count

    @property
    def password(self) -> str:
        return (self.state_dir / PASSWORD_FILE).read_text(encoding="utf-8").strip()

    @property
    def urls(self) -> list[str]:
        ready: dict[str, Any] = json.loads((self.state_dir / BMCS_FILE).read_text())
        return list(ready["bmcs"])

    @property
    def repo(self) -> Path:
        """A desired state of one Server per farm BMC (written at start)."""
        return self.state_dir / "repo"

    def _prepare(self) -> None:
        secret_file(self.state_dir / PASSWORD_FILE, None, lambda: secrets.token_urlsafe(12))
        (self.state_dir / BMCS_FILE).unlink(missing_ok=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        return spawn_module(
            self.module,
            [f"--count={self.count}", "--state-dir", str(self.state_dir)],
            self.state_dir / self.log_file,
        )

    def _probe(self) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/rss", timeout=2) as answer:
            answer.read()
        # The Credential reads the password file next to the repository.
        write_fleet_repo(self.repo, self.urls, USERNAME, f"{{fromFile: ../{PASSWORD_FILE}}}")

    def start(self, timeout: float = 120.0) -> FarmPeer:
        """Start the farm (10,000 BMCs take a few seconds to listen)."""
        super().start(timeout)
        return self
