"""schema, status, serve, lab and worker: commands that hand over to another part."""

from __future__ import annotations

import argparse
from pathlib import Path

from metalform.cli.output import EXIT_OK, Output
from metalform.sites.cli import router_from_args
from reconciler.errors import MetalformError


def cmd_schema(args: argparse.Namespace, out: Output) -> int:
    from reconciler.schema import write_schemas

    written = write_schemas(Path(args.out))
    out.line(f"Wrote {len(written)} schemas to {args.out}/.")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    from metalform.server.status_command import run_status

    router = router_from_args(args)
    if router is not None:
        from metalform.sites.workers import render

        for line in render(router.overview()):
            out.line(line)
        out.line()
    return run_status(Path(args.directory), args.database, out.line)


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    from metalform.server.serve import serve

    return serve(Path(args.config) if args.config else None)


def cmd_lab(args: argparse.Namespace, out: Output) -> int:
    from metalform.lab.cli import run_lab

    if args.fleet < 0:
        raise MetalformError("--fleet must not be negative")

    return run_lab(
        args.action,
        Path(args.state_dir),
        out.line,
        redfish_port=args.redfish_port,
        ipmi_base_port=args.ipmi_base_port,
        smtp_port=args.smtp_port,
        maas_port=args.maas_port,
        nova_port=args.nova_port,
        fleet=args.fleet,
        sites=args.sites,
        redis_port=args.redis_port,
    )


def cmd_worker(args: argparse.Namespace, out: Output) -> int:
    from metalform.sites.cli import cmd_worker as run

    return run(args)
