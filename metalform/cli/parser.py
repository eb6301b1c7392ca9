"""The command line's arguments: one parser, a helper per group of options."""

from __future__ import annotations

import argparse
from typing import Any

from metalform.sites.cli import add_broker_args, add_worker_parser
from reconciler import __version__
from reconciler.concurrency import DEFAULT_PARALLELISM, DEFAULT_PER_ENDPOINT
from reconciler.render import RENDERERS


def _add_directory(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-C",
        dest="directory",
        default=".",
        metavar="DIR",
        help="the desired-state repository (default: the current directory)",
    )


def _add_repo_args(p: argparse.ArgumentParser) -> None:
    _add_directory(p)
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
        help=f"actions and reads in flight at once across BMCs and APIs "
        f"(default {DEFAULT_PARALLELISM})",
    )
    p.add_argument(
        "--per-endpoint",
        type=int,
        default=DEFAULT_PER_ENDPOINT,
        metavar="N",
        help=f"requests in flight at once to one BMC or API (default {DEFAULT_PER_ENDPOINT})",
    )


def _add_set_unknown_passwords(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set-unknown-passwords",
        action="store_true",
        help="also set the password of declared BMC accounts whose password Metalform cannot "
        "tell (made by hand, or set where its record is not kept) from their Credential",
    )


def _add_exclude(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="ADDR",
        help="leave this resource out (Kind/name, globs such as Server/gpu-*); repeatable",
    )


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
    _add_validate(sub)
    _add_plan(sub)
    _add_apply(sub)
    add_worker_parser(sub)
    _add_show(sub)
    _add_status(sub)
    _add_serve(sub)
    _add_import(sub)
    _add_schema(sub)
    _add_lab(sub)
    return parser


def _add_validate(sub: Any) -> None:
    p = sub.add_parser("validate", help="check the desired state without contacting anything")
    _add_repo_args(p)


def _add_plan(sub: Any) -> None:
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
    _add_set_unknown_passwords(p)
    p.add_argument(
        "--refresh-only",
        action="store_true",
        help="show drift between Git and the live state, plan no actions",
    )
    _add_parallelism(p)
    _add_notify(p)
    add_broker_args(p)


def _add_apply(sub: Any) -> None:
    p = sub.add_parser("apply", help="execute a saved plan (or plan and apply with --auto-approve)")
    p.add_argument("planfile", nargs="?", metavar="PLANFILE")
    _add_repo_args(p)
    p.add_argument(
        "--auto-approve", action="store_true", help="plan and apply at once, without a saved plan"
    )
    _add_exclude(p)
    _add_set_unknown_passwords(p)
    _add_parallelism(p)
    _add_notify(p)
    add_broker_args(p)


def _add_show(sub: Any) -> None:
    p = sub.add_parser("show", help="render a saved plan")
    p.add_argument("planfile", metavar="PLANFILE")
    p.add_argument("--format", choices=sorted(RENDERERS), default="text")


def _add_status(sub: Any) -> None:
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


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="REST API and webhooks: plan on push, apply on request")
    p.add_argument(
        "--config", metavar="FILE", help="server configuration (YAML); default: every default"
    )


def _add_schema(sub: Any) -> None:
    p = sub.add_parser("schema", help="write the JSON Schemas of every kind")
    p.add_argument(
        "--out", metavar="DIR", default="schemas", help="folder to write into (default: schemas)"
    )


def _add_lab(sub: Any) -> None:
    p = sub.add_parser("lab", help="a local virtual datacenter (emulated BMCs) to try Metalform on")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument(
        "--fleet",
        type=int,
        default=0,
        metavar="N",
        help="also start a farm of N Redfish BMCs, one loopback address each (lab up)",
    )
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
    _add_directory(p)
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
    _add_probe_options(p)


def _add_probe_options(p: argparse.ArgumentParser) -> None:
    """How `import` reaches BMCs: port, scheme, TLS, concurrency, timeouts."""
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
