"""`metalform`: the command line, and the composition root that wires the engine together."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from metalform.cli.admin import cmd_lab, cmd_schema, cmd_serve, cmd_status, cmd_worker
from metalform.cli.importing import cmd_import
from metalform.cli.output import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, Output, print_diagnostics
from metalform.cli.parser import build_parser
from metalform.cli.run import cmd_apply, cmd_plan, cmd_show, cmd_validate, read_plan_file
from reconciler.errors import InputError, MetalformError
from reconciler.secrets import RedactingFilter

__all__ = [
    "EXIT_CHANGES",
    "EXIT_ERROR",
    "EXIT_OK",
    "Output",
    "build_parser",
    "main",
    "read_plan_file",
]

COMMANDS = {
    "validate": cmd_validate,
    "plan": cmd_plan,
    "apply": cmd_apply,
    "show": cmd_show,
    "import": cmd_import,
    "schema": cmd_schema,
    "status": cmd_status,
    "serve": cmd_serve,
    "lab": cmd_lab,
    "worker": cmd_worker,
}


def _configure_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    if not debug:
        # Client libraries log every retry and redirect at INFO/WARNING; our errors say enough.
        for noisy in ("sushy", "pyghmi", "urllib3", "git"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.debug)
    out = Output()
    try:
        return COMMANDS[args.command](args, out)
    except InputError as exc:
        print_diagnostics(out, exc.diagnostics)
        out.error(f"error: {exc}; nothing was changed.")
        return EXIT_ERROR
    except MetalformError as exc:
        if args.debug:
            raise
        out.error(f"error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
