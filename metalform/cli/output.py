"""How the command line writes: colour on a terminal, plain lines otherwise, exit codes."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TextIO

from reconciler.secrets import REDACTOR

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


class Output:
    """Writes to the terminal: colour and symbols on a TTY, plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None, err: TextIO | None = None) -> None:
        # Looked up at call time, not import time, so redirections (and tests) see the output.
        self.stream = stream or sys.stdout
        self.err = err or sys.stderr
        self.tty = self.stream.isatty() and os.environ.get("NO_COLOR") is None

    def line(self, text: str = "", style: str | None = None) -> None:
        text = REDACTOR(text)
        if self.tty and style:
            codes = {"green": "32", "red": "31", "yellow": "33", "dim": "2", "bold": "1"}
            text = f"\033[{codes[style]}m{text}\033[0m"
        print(text, file=self.stream, flush=True)

    def error(self, text: str) -> None:
        print(REDACTOR(text), file=self.err, flush=True)


def print_diagnostics(out: Output, diagnostics: Sequence[object]) -> None:
    for d in diagnostics:
        out.error(d.render())  # type: ignore[attr-defined]
