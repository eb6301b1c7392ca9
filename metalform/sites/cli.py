"""The command-line side of sites: `--broker` on plan and apply, and `metalform worker`.

Celery is imported only when a broker is given, so a Metalform without the `sites` extra
plans and applies in one process as before.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from metalform.sites.config import (
    DEFAULT_LABEL,
    ENV_BACKEND,
    ENV_BROKER,
    SitesConfig,
    from_values,
)
from reconciler.errors import MetalformError
from reconciler.model.credentials import SecretRef

if TYPE_CHECKING:
    from metalform.sites.dispatch import SiteRouter


def add_broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        metavar="URL",
        help=f"send the reads and actions of resources labelled with a site to that site's "
        f"workers through this broker (redis://HOST:PORT/DB, rediss:// for TLS, or RabbitMQ: "
        f"amqp://USER@HOST:PORT/VHOST with --broker-backend; default: ${ENV_BROKER})",
    )
    p.add_argument(
        "--broker-password-env", metavar="VAR", help="the broker password, from this variable"
    )
    p.add_argument(
        "--broker-password-file", metavar="PATH", help="the broker password, from this file"
    )
    p.add_argument(
        "--broker-backend",
        metavar="URL",
        help=f"the Redis that holds replies and worker heartbeats (default: the broker when "
        f"it is Redis; needed with RabbitMQ; default: ${ENV_BACKEND})",
    )
    p.add_argument(
        "--broker-backend-password-env",
        metavar="VAR",
        help="the backend's password, from this variable",
    )
    p.add_argument(
        "--broker-backend-password-file",
        metavar="PATH",
        help="the backend's password, from this file",
    )
    p.add_argument("--broker-ca", metavar="FILE", help="verify the broker's TLS certificate")
    p.add_argument(
        "--site-label",
        default=DEFAULT_LABEL,
        metavar="KEY",
        help=f"the label that names a resource's site (default {DEFAULT_LABEL!r})",
    )


def _secret(env: str | None, path: str | None) -> SecretRef | None:
    if env:
        return SecretRef(from_env=env)
    if path:
        return SecretRef(from_file=path)
    return None


def config_from_args(args: argparse.Namespace) -> SitesConfig | None:
    return from_values(
        args.broker,
        password=_secret(args.broker_password_env, args.broker_password_file),
        base_dir=Path.cwd(),
        label=args.site_label,
        ca_file=args.broker_ca,
        backend=args.broker_backend,
        backend_password=_secret(
            args.broker_backend_password_env, args.broker_backend_password_file
        ),
    )


def router_from_args(args: argparse.Namespace) -> SiteRouter | None:
    config = config_from_args(args)
    if config is None:
        return None
    try:
        from metalform.sites.dispatch import SiteRouter
    except ImportError:
        raise MetalformError(
            "a broker was given but Celery is not installed: pip install 'metalform[sites]'"
        ) from None
    return SiteRouter(config)


def add_worker_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "worker", help="serve one site's reads and actions from inside its management network"
    )
    p.add_argument("--site", required=True, metavar="NAME", help="the site this worker serves")
    add_broker_args(p)
    p.add_argument(
        "-C",
        dest="directory",
        default=".",
        metavar="DIR",
        help="where relative fromFile secrets are read (default: the current directory)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=8,
        metavar="N",
        help="tasks run at once (threads; default 8)",
    )
    p.add_argument(
        "--visibility-timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="a task whose worker died is delivered again after this (default 3600)",
    )


def cmd_worker(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if config is None:
        raise MetalformError(f"give --broker URL (or set {ENV_BROKER})")
    if args.concurrency < 1:
        raise MetalformError("--concurrency must be at least 1")
    from metalform.sites.worker import run_worker

    return run_worker(
        config,
        args.site,
        concurrency=args.concurrency,
        base_dir=Path(args.directory).resolve(),
        visibility_timeout=args.visibility_timeout,
        loglevel="DEBUG" if args.debug else os.environ.get("METALFORM_WORKER_LOGLEVEL", "INFO"),
    )
