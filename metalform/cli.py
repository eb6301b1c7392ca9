"""`metalform`: the command line, and the composition root that wires the engine together."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from metalform.notify.payloads import (
    RunNotifications,
    apply_finished_payload,
    apply_started_payload,
    notification_problems,
    plan_failed_payload,
    planned_event,
    result_entry,
)
from metalform.notify.throttle_state import FileThrottleState, StoreThrottleState
from metalform.notify.throttle_state import default_path as throttle_state_path
from metalform.progress import apply_progress
from metalform.server.config import ENV_DATABASE
from metalform.sites.cli import add_broker_args, add_worker_parser, router_from_args
from metalform.store import Store
from reconciler import __version__
from reconciler.concurrency import DEFAULT_PARALLELISM
from reconciler.drift import bad_address_globs
from reconciler.engine import Engine, PlanRun, Settings
from reconciler.errors import InputError, MetalformError
from reconciler.load import load
from reconciler.model import ActionStatus, Plan
from reconciler.model.events import EventType
from reconciler.render import RENDERERS
from reconciler.secrets import REDACTOR, RedactingFilter

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
log = logging.getLogger("metalform")


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


def _add_repo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-C",
        dest="directory",
        default=".",
        metavar="DIR",
        help="the desired-state repository (default: the current directory)",
    )
    p.add_argument(
        "--rev", metavar="REV", help="plan this Git revision instead of the working tree"
    )


def _add_notify(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--notify",
        action="store_true",
        help="send this run's events through the desired state's NotificationRules",
    )
    p.add_argument(
        "--database",
        metavar="URL",
        help="with --notify: keep throttle windows in this state store (sqlite:///PATH or "
        "postgresql://...; default: $METALFORM_DATABASE, else a file under "
        "$XDG_STATE_HOME/metalform)",
    )


def _add_parallelism(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--parallelism",
        type=int,
        default=DEFAULT_PARALLELISM,
        metavar="N",
        help=f"actions and reads in flight at once (default {DEFAULT_PARALLELISM}; "
        "at most 4 requests to one BMC or API)",
    )


def _add_exclude(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="ADDR",
        help="leave this resource out (Kind/name, globs such as Server/gpu-*); repeatable",
    )


def _excluded(args: argparse.Namespace) -> list[str]:
    """The `--exclude` globs, refused (exit 1) when one is not an address glob."""
    problems = bad_address_globs(args.exclude)
    if problems:
        raise MetalformError("; ".join(problems))
    return list(args.exclude)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metalform",
        description="Declarative GitOps for bare metal: plan and apply BMCs, BIOS, power and "
        "boot from YAML in Git.",
    )
    parser.add_argument("--version", action="version", version=f"metalform {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="log debug details and show tracebacks of errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="check the desired state without contacting anything")
    _add_repo_args(p)

    p = sub.add_parser("plan", help="read the live state and show what apply would do")
    _add_repo_args(p)
    p.add_argument("-o", "--out", metavar="PLANFILE", help="save the plan as JSON for apply")
    p.add_argument("--format", choices=sorted(RENDERERS), default="text")
    p.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when there are no changes, 2 when there are, 1 on error",
    )
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="ADDR",
        help="plan only this resource (Kind/name); repeatable",
    )
    _add_exclude(p)
    p.add_argument(
        "--refresh-only",
        action="store_true",
        help="show drift between Git and the live state, plan no actions",
    )
    _add_parallelism(p)
    _add_notify(p)
    add_broker_args(p)

    p = sub.add_parser("apply", help="execute a saved plan (or plan and apply with --auto-approve)")
    p.add_argument("planfile", nargs="?", metavar="PLANFILE")
    _add_repo_args(p)
    p.add_argument(
        "--auto-approve", action="store_true", help="plan and apply at once, without a saved plan"
    )
    _add_exclude(p)
    _add_parallelism(p)
    _add_notify(p)
    add_broker_args(p)
    add_worker_parser(sub)

    p = sub.add_parser("show", help="render a saved plan")
    p.add_argument("planfile", metavar="PLANFILE")
    p.add_argument("--format", choices=sorted(RENDERERS), default="text")

    p = sub.add_parser(
        "status",
        help="last applied revision, per-resource sync and health (from the server's state store)",
    )
    p.add_argument(
        "-C",
        dest="directory",
        default=".",
        metavar="DIR",
        help="where metalform.db is (default: the current directory)",
    )
    p.add_argument(
        "--database",
        metavar="URL",
        help="the state store (sqlite:///PATH or postgresql://...; default: "
        "$METALFORM_DATABASE, else DIR/metalform.db)",
    )
    add_broker_args(p)

    p = sub.add_parser("serve", help="REST API and webhooks: plan on push, apply on request")
    p.add_argument(
        "--config", metavar="FILE", help="server configuration (YAML); default: every default"
    )

    _add_import(sub)

    p = sub.add_parser("schema", help="write the JSON Schemas of every kind")
    p.add_argument(
        "--out", metavar="DIR", default="schemas", help="folder to write into (default: schemas)"
    )

    p = sub.add_parser("lab", help="a local virtual datacenter (emulated BMCs) to try Metalform on")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument(
        "--state-dir",
        default=".metalform-lab",
        metavar="DIR",
        help="where the lab keeps its processes' state (default: .metalform-lab)",
    )
    p.add_argument(
        "--redfish-port",
        type=int,
        default=18000,
        metavar="PORT",
        help="loopback port of the Redfish BMC (default 18000, as inventory-example/)",
    )
    p.add_argument(
        "--ipmi-base-port",
        type=int,
        default=16230,
        metavar="PORT",
        help="UDP port of the first IPMI BMC; the next ones follow (default 16230)",
    )
    p.add_argument(
        "--smtp-port",
        type=int,
        default=2525,
        metavar="PORT",
        help="loopback port of the SMTP sink (default 2525)",
    )
    p.add_argument(
        "--maas-port",
        type=int,
        default=5240,
        metavar="PORT",
        help="loopback port of the MAAS simulator (default 5240)",
    )
    p.add_argument(
        "--nova-port",
        type=int,
        default=8774,
        metavar="PORT",
        help="loopback port of the OpenStack compute API (default 8774)",
    )
    p.add_argument(
        "--sites",
        type=int,
        default=0,
        metavar="N",
        help="also a redis-server and N sites, each with its own BMC and `metalform worker`",
    )
    p.add_argument(
        "--redis-port",
        type=int,
        default=16379,
        metavar="PORT",
        help="loopback port of the sites' redis-server (default 16379)",
    )
    return parser


def _add_import(sub: Any) -> None:
    p = sub.add_parser(
        "import",
        help="adopt an existing fleet: write what BMCs or a Provider (MAAS, Nova, Docker) hold",
        description="Probe every address of RANGE (a CIDR 10.1.0.0/24, a span "
        "10.1.0.10-10.1.0.90 or @FILE, one address a line) and write a Server per system that "
        "answers, with its BMC connection, power and BIOS (one BiosTemplate per model with the "
        "values its servers share, the differences in each Server). Documents already in the "
        "repository win: they are never overwritten. Ends with a report of what answered and "
        "why every other address did not. With maas, openstack or docker, read the Provider "
        "PROVIDER of the repository instead: MAAS machines as Servers with provisioning, Nova "
        "aggregates as Aggregates, containers as Services that adopt them (a secret-looking "
        "env value becomes a Credential to fill in, never written).",
    )
    p.add_argument(
        "source",
        choices=["redfish", "ipmi", "maas", "openstack", "docker"],
        help="BMCs by address (redfish, ipmi) or what a Provider holds (maas, openstack, docker)",
    )
    p.add_argument(
        "range",
        metavar="RANGE|PROVIDER",
        help="redfish/ipmi: CIDR, FIRST-LAST or @FILE; maas/openstack/docker: a Provider name",
    )
    p.add_argument(
        "--credential",
        metavar="NAME",
        help="a Credential of the repository: the BMCs' (required for redfish and ipmi; for "
        "maas, the one the Servers it writes log in to their BMC with)",
    )
    p.add_argument(
        "-C",
        dest="directory",
        default=".",
        metavar="DIR",
        help="the desired-state repository (default: the current directory)",
    )
    p.add_argument("--out", metavar="DIR", help="where to write (default: DIR of -C)")
    p.add_argument(
        "--name",
        default="{hostname}",
        metavar="PATTERN",
        help="Server names from {hostname}, {serial}, {model}, {address} (default {hostname}; "
        "a BMC without a host name gives its system id)",
    )
    p.add_argument(
        "--label", action="append", default=[], metavar="K=V", help="add a label; repeatable"
    )
    p.add_argument(
        "--split",
        choices=["kind", "site"],
        default="kind",
        help="one file per kind (default) or per site label",
    )
    p.add_argument("--port", type=int, metavar="PORT", help="BMC port (443 for https, 623 ipmi)")
    p.add_argument("--scheme", choices=["https", "http"], default="https", help="Redfish scheme")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="accept self-signed BMC certificates (and write verifyTls: false)",
    )
    p.add_argument(
        "--ipmi-fallback", action="store_true", help="try IPMI where Redfish does not answer"
    )
    p.add_argument(
        "--parallelism",
        type=int,
        default=64,
        metavar="N",
        help="addresses probed at once (default 64)",
    )
    p.add_argument(
        "--per-endpoint",
        type=int,
        default=4,
        metavar="N",
        help="requests in flight to one BMC (default 4)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="per request, connecting included (default 3 for BMCs: dead addresses cost this "
        "once; 10 for a Provider without a timeout of its own)",
    )
    p.add_argument(
        "--force", action="store_true", help="accept a RANGE of more than 65,536 addresses"
    )


def _print_diagnostics(out: Output, diagnostics: Sequence[object]) -> None:
    for d in diagnostics:
        out.error(d.render())  # type: ignore[attr-defined]


def cmd_validate(args: argparse.Namespace, out: Output) -> int:
    state = load(Path(args.directory), args.rev)
    _print_diagnostics(out, state.warnings)
    problems = notification_problems(state)
    if problems:
        raise InputError(problems)
    kinds: dict[str, int] = {}
    for resource in state.resources.values():
        kinds[resource.kind] = kinds.get(resource.kind, 0) + 1
    counts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    out.line(f"Valid: {len(state.resources)} resources ({counts}) at {state.revision}.", "green")
    return EXIT_OK


def _engine(args: argparse.Namespace) -> Engine:
    if args.parallelism < 1:
        raise MetalformError("--parallelism must be at least 1")
    return Engine(Settings(parallelism=args.parallelism), route=router_from_args(args))


def _notifications(args: argparse.Namespace, path: Path, rev: str | None) -> RunNotifications:
    """The run's notifications (off without --notify); the rules come from the desired state
    being planned, read before planning so that a failing plan can still be reported."""
    if not getattr(args, "notify", False):
        return RunNotifications(None)
    desired = load(path, rev)
    repository = path.resolve().name
    # throttle windows hold across runs: kept in the state store or a state file
    scope = str(path.resolve())
    url = getattr(args, "database", None) or os.environ.get(ENV_DATABASE)
    if not url:
        state = FileThrottleState(throttle_state_path(), scope=scope)
        return RunNotifications.from_desired(desired, path, repository=repository, state=state)
    store = Store.open(url)
    try:
        return RunNotifications.from_desired(
            desired,
            path,
            repository=repository,
            state=StoreThrottleState(store, scope),
            on_close=store.close,
        )
    except BaseException:
        store.close()
        raise


def _planned(
    engine: Engine, args: argparse.Namespace, notes: RunNotifications, **options: Any
) -> PlanRun:
    """Plan, telling the notifications how it went (plan.failed also when planning fails)."""
    try:
        run = engine.plan(Path(args.directory), args.rev, **options)
    except MetalformError as exc:
        notes.emit(
            EventType.PLAN_FAILED, plan_failed_payload(str(exc), getattr(exc, "diagnostics", []))
        )
        raise
    event = planned_event(run.plan)
    if event is not None:
        notes.emit(*event)
    return run


def cmd_plan(args: argparse.Namespace, out: Output) -> int:
    engine = _engine(args)
    notes = _notifications(args, Path(args.directory), args.rev)
    try:
        return _plan(engine, args, out, notes)
    finally:
        notes.close()


def _plan(engine: Engine, args: argparse.Namespace, out: Output, notes: RunNotifications) -> int:

    def on_gather(resources: int, drivers: int) -> None:
        if args.format == "text":
            out.line(f"Reading {resources} resources through {drivers} provider(s)...", "dim")

    run = _planned(
        engine,
        args,
        notes,
        targets=args.target,
        exclude=_excluded(args),
        refresh_only=args.refresh_only,
        on_gather=on_gather,
    )
    plan = run.plan
    if args.format == "text":
        out.line(f"Read {len(run.gathered.live)} resources in {run.gathered.seconds:.1f}s.", "dim")
        out.line()
    sys.stdout.write(RENDERERS[args.format](plan))
    if args.out:
        Path(args.out).write_text(REDACTOR(plan.to_json()) + "\n", encoding="utf-8")
        if args.format == "text":
            out.line(f"\nSaved the plan to {args.out}. Apply it with: metalform apply {args.out}")
    if plan.has_errors:
        return EXIT_ERROR
    if args.detailed_exitcode and plan.has_changes:
        return EXIT_CHANGES
    return EXIT_OK


def _run_apply(
    engine: Engine,
    plan: Plan,
    out: Output,
    path: Path | None,
    notes: RunNotifications | None = None,
) -> int:
    if not plan.actions:
        out.line("No changes. Nothing to apply.", "green")
        return EXIT_OK
    notes = notes or RunNotifications(None)
    runnable = len(plan.runnable)
    out.line(f"Applying {runnable} action(s) of the plan of {plan.revision}...")
    started = time.monotonic()
    notes.emit(EventType.APPLY_STARTED, apply_started_payload(plan))
    try:
        with apply_progress(out, out.stream, plan) as progress:
            result = engine.apply(plan, path=path, listener=progress)
    except MetalformError as exc:
        notes.emit(
            EventType.APPLY_FAILED,
            apply_finished_payload([], {}, revision=plan.revision, error=str(exc)),
        )
        raise
    counts = {s: result.count(s) for s in ActionStatus}
    seconds = time.monotonic() - started
    line = (
        f"Apply finished in {seconds:.1f}s: {counts[ActionStatus.SUCCEEDED]} succeeded, "
        f"{counts[ActionStatus.FAILED]} failed, {counts[ActionStatus.SKIPPED]} skipped, "
        f"{counts[ActionStatus.DEFERRED]} deferred, {counts[ActionStatus.REFUSED]} refused."
    )
    failed = (
        counts[ActionStatus.FAILED] + counts[ActionStatus.SKIPPED] + counts[ActionStatus.REFUSED]
    )
    out.line(line, "red" if failed else "green")
    results = [
        result_entry(r.address, r.operation, r.status, r.error)
        for r in sorted(result.results.values(), key=lambda r: r.id)
    ]
    notes.emit(
        EventType.APPLY_FAILED if failed else EventType.APPLY_SUCCEEDED,
        apply_finished_payload(
            results,
            {s.value: n for s, n in counts.items() if n},
            revision=plan.revision,
            error=f"{failed} action(s) failed, skipped or refused" if failed else None,
        ),
    )
    if failed:
        out.line("Plan again to see what is left; apply is safe to resume.")
        return EXIT_ERROR
    return EXIT_OK


def read_plan_file(path: str) -> Plan:
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MetalformError(f"cannot read plan {path}: {exc.strerror}") from None
    try:
        return Plan.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MetalformError(f"{path} is not a Metalform plan ({where}: {first['msg']})") from None


def cmd_apply(args: argparse.Namespace, out: Output) -> int:
    engine = _engine(args)
    if args.planfile:
        if args.auto_approve:
            raise MetalformError("give either PLANFILE or --auto-approve, not both")
        if args.exclude:
            raise MetalformError(
                "--exclude changes what is planned; apply PLANFILE runs exactly its plan "
                "(plan again with --exclude, or apply -C DIR --auto-approve --exclude)"
            )
        plan = read_plan_file(args.planfile)
        path = Path(args.directory) if args.directory != "." else None
        notes = _saved_plan_notifications(args, plan, path)
        try:
            return _run_apply(engine, plan, out, path, notes)
        finally:
            notes.close()
    if not args.auto_approve:
        raise MetalformError(
            "apply needs a PLANFILE (from `metalform plan -o`) or "
            "--auto-approve to plan and apply at once"
        )
    notes = _notifications(args, Path(args.directory), args.rev)
    try:
        run = _planned(engine, args, notes, exclude=_excluded(args))
        sys.stdout.write(RENDERERS["text"](run.plan))
        if run.plan.has_errors:
            return EXIT_ERROR
        return _run_apply(engine, run.plan, out, None, notes)
    finally:
        notes.close()


def _saved_plan_notifications(
    args: argparse.Namespace, plan: Plan, path: Path | None
) -> RunNotifications:
    """The rules of the revision a saved plan was made from; when that cannot be read the
    apply goes on without notifications (its staleness check says what moved)."""
    if not args.notify:
        return RunNotifications(None)
    source = path or (Path(plan.source.path) if plan.source else Path("."))
    rev = plan.source.rev if plan.source else None
    try:
        return _notifications(args, source, rev)
    except MetalformError as exc:
        log.warning("notifications are off for this apply: %s", REDACTOR(str(exc)))
        return RunNotifications(None)


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    plan = read_plan_file(args.planfile)
    sys.stdout.write(RENDERERS[args.format](plan))
    return EXIT_OK


def _labels(items: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MetalformError(f"--label {item!r} is not K=V")
        labels[key] = value
    return labels


def cmd_import(args: argparse.Namespace, out: Output) -> int:
    labels = _labels(args.label)
    if args.parallelism < 1 or args.per_endpoint < 1 or (args.timeout or 1) <= 0:
        raise MetalformError("--parallelism, --per-endpoint and --timeout must be positive")
    if args.source in ("maas", "openstack", "docker"):
        return _import_provider(args, labels, out)
    from metalform.importer.bmc import Probe
    from metalform.importer.run import ImportOptions, report, run_import

    if args.credential is None:
        raise MetalformError(f"import {args.source} needs --credential NAME (the BMCs' login)")
    probe = Probe(
        credential=args.credential,
        scheme=args.scheme,
        port=args.port,
        insecure=args.insecure,
        ipmi_fallback=args.ipmi_fallback,
    )
    options = ImportOptions(
        source=args.source,
        range=args.range,
        credential=args.credential,
        directory=Path(args.directory),
        out=Path(args.out) if args.out else None,
        name=args.name,
        labels=labels,
        split=args.split,
        parallelism=args.parallelism,
        per_endpoint=args.per_endpoint,
        timeout=args.timeout or 3.0,
        force=args.force,
        probe=probe,
    )
    report(run_import(options), out.line)
    return EXIT_OK


def _import_provider(args: argparse.Namespace, labels: dict[str, str], out: Output) -> int:
    from metalform.importer.sources import SourceOptions, report_source, run_source_import

    options = SourceOptions(
        source=args.source,
        provider=args.range,
        directory=Path(args.directory),
        out=Path(args.out) if args.out else None,
        credential=args.credential,
        labels=labels,
        split=args.split,
        parallelism=args.parallelism,
        per_endpoint=args.per_endpoint,
        timeout=args.timeout or 10.0,
    )
    report_source(run_source_import(options), out.line)
    return EXIT_OK


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

    return run_lab(
        args.action,
        Path(args.state_dir),
        out.line,
        redfish_port=args.redfish_port,
        ipmi_base_port=args.ipmi_base_port,
        smtp_port=args.smtp_port,
        maas_port=args.maas_port,
        nova_port=args.nova_port,
        sites=args.sites,
        redis_port=args.redis_port,
    )


def cmd_worker(args: argparse.Namespace, out: Output) -> int:
    from metalform.sites.cli import cmd_worker as run

    return run(args)


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
        _print_diagnostics(out, exc.diagnostics)
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


if __name__ == "__main__":
    sys.exit(main())
