"""validate, plan, apply and show: the engine driven from the command line."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from metalform.cli.output import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, Output, print_diagnostics
from metalform.notify.payloads import (
    RunNotifications,
    apply_finished_payload,
    apply_started_payload,
    notification_problems,
    plan_failed_payload,
    planned_event,
    result_entry,
)
from metalform.notify.rotations import rotations
from metalform.notify.throttle_state import FileThrottleState, StoreThrottleState
from metalform.notify.throttle_state import default_path as throttle_state_path
from metalform.progress import apply_progress
from metalform.server.config import ENV_DATABASE
from metalform.sites.cli import router_from_args
from metalform.store import Store
from reconciler.apply import ActionResult
from reconciler.drift import bad_address_globs
from reconciler.engine import Engine, PlanRun, Settings
from reconciler.errors import InputError, MetalformError
from reconciler.load import load
from reconciler.model import ActionStatus, Plan
from reconciler.model.events import EventType
from reconciler.render import RENDERERS
from reconciler.secrets import REDACTOR

log = logging.getLogger("metalform")


def _excluded(args: argparse.Namespace) -> list[str]:
    """The `--exclude` globs, refused (exit 1) when one is not an address glob."""
    problems = bad_address_globs(args.exclude)
    if problems:
        raise MetalformError("; ".join(problems))
    return list(args.exclude)


def cmd_validate(args: argparse.Namespace, out: Output) -> int:
    state = load(Path(args.directory), args.rev)
    print_diagnostics(out, state.warnings)
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
    if args.per_endpoint < 1:
        raise MetalformError("--per-endpoint must be at least 1")
    return Engine(
        Settings(parallelism=args.parallelism, per_endpoint=args.per_endpoint),
        route=router_from_args(args),
    )


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
        set_unknown_passwords=args.set_unknown_passwords,
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
    _notify_rotations(notes, plan, result.results.values(), path)
    if failed:
        out.line("Plan again to see what is left; apply is safe to resume.")
        return EXIT_ERROR
    return EXIT_OK


def _notify_rotations(
    notes: RunNotifications, plan: Plan, results: Iterable[ActionResult], path: Path | None
) -> None:
    """credential.rotated for each Credential whose BMCs this apply moved to the new secret."""
    if notes.notifier is None:
        return
    base_dir = path or (Path(plan.source.path) if plan.source else None)
    statuses = {r.id: r.status for r in results}
    for rotation in rotations(plan, statuses, base_dir=base_dir):
        notes.emit(
            EventType.CREDENTIAL_ROTATED,
            rotation.payload(who=_who(), revision=plan.revision),
        )


def _who() -> str | None:
    """The local user running the CLI, for the audit trail of a rotation."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None


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
        for flag, given in (
            ("--exclude", args.exclude),
            ("--set-unknown-passwords", args.set_unknown_passwords),
        ):
            if given:
                raise MetalformError(
                    f"{flag} changes what is planned; apply PLANFILE runs exactly its plan "
                    f"(plan again with {flag}, or apply -C DIR --auto-approve {flag})"
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
        run = _planned(
            engine,
            args,
            notes,
            exclude=_excluded(args),
            set_unknown_passwords=args.set_unknown_passwords,
        )
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
