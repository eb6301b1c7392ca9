"""`metalform import`: adopt BMCs by address range or what a Provider holds."""

from __future__ import annotations

import argparse
from pathlib import Path

from metalform.cli.output import EXIT_OK, Output
from reconciler.errors import MetalformError


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
    from metalform.importer.collected import SourceOptions
    from metalform.importer.sources import report_source, run_source_import

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
