"""Write imported documents with ruamel.yaml; a document that already exists always wins.

Files are appended to, never rewritten: what is in them stays byte for byte, and a new file
starts with the `yaml-language-server: $schema=` line editors use to check it.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from reconciler.errors import MetalformError
from reconciler.model.base import address_of

SCHEMA = "schemas/metalform.schema.json"
FILE_OF_KIND = {"Server": "servers.yaml", "BiosTemplate": "bios-templates.yaml"}


class OutputError(MetalformError):
    """--out cannot be written."""


def check_writable(out: Path) -> None:
    """Fail before probing anything when --out cannot take files (nothing is left behind)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".metalform-import-"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write to --out {out}: {exc.strerror or exc}") from None


def addresses_in(out: Path) -> set[str]:
    """`Kind/name` of every document already in the YAML files of `out` (outside the
    repository, a previous import's files are not loaded with it)."""
    found: set[str] = set()
    if not out.is_dir():
        return found
    yaml = YAML(typ="safe")
    for path in sorted([*out.rglob("*.yaml"), *out.rglob("*.yml")]):
        try:
            docs = list(yaml.load_all(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, YAMLError):
            continue  # the repository's loader reports broken files; import only avoids dupes
        for doc in docs:
            if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
                found.add(address_of(str(doc.get("kind")), str(doc["metadata"].get("name"))))
    return found


def file_for(document: Mapping[str, Any], split: str) -> str:
    if split == "site":
        site = (document["metadata"].get("labels") or {}).get("site")
        return f"site-{site}.yaml" if site else "site-unknown.yaml"
    kind = str(document["kind"])
    return FILE_OF_KIND.get(kind, f"{kind.lower()}s.yaml")


def _dump(documents: Sequence[Mapping[str, Any]]) -> str:
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 100
    yaml.explicit_start = True
    stream = io.StringIO()
    yaml.dump_all([dict(d) for d in documents], stream)
    return stream.getvalue()


def write_new(
    documents: Sequence[Mapping[str, Any]],
    existing: set[str],
    out: Path,
    repository: Path,
    split: str,
) -> tuple[list[str], list[str], dict[Path, int]]:
    """Write the documents not in `existing`: (new addresses, skipped ones, files written)."""
    new: list[str] = []
    skipped: list[str] = []
    fresh: list[Mapping[str, Any]] = []
    for document in documents:
        address = address_of(str(document["kind"]), str(document["metadata"]["name"]))
        if address in existing:
            skipped.append(address)
        else:
            new.append(address)
            fresh.append(document)
    return new, skipped, write(fresh, out, repository, split)


def write(
    documents: Iterable[Mapping[str, Any]], out: Path, repository: Path, split: str
) -> dict[Path, int]:
    """Append `documents` to their files under `out`; {file: documents written}."""
    by_file: dict[str, list[Mapping[str, Any]]] = {}
    for document in documents:
        by_file.setdefault(file_for(document, split), []).append(document)
    written: dict[Path, int] = {}
    for name, docs in sorted(by_file.items()):
        path = out / name
        text = _dump(docs)
        if path.exists() and path.stat().st_size:
            existing = path.read_text(encoding="utf-8")
            prefix = "" if existing.endswith("\n") else "\n"
            text = prefix + text
        else:
            schema = os.path.relpath(repository.resolve() / SCHEMA, out.resolve())
            text = f"# yaml-language-server: $schema={schema}\n{text}"
        try:
            with path.open("a", encoding="utf-8") as stream:
                stream.write(text)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        written[path] = len(docs)
    return written


def report_written(
    skipped: Sequence[str],
    new: Iterable[str],
    written: Mapping[Path, int],
    say: Callable[[str], None],
) -> None:
    """The end of every import's report: what Git already had, and what was written where."""
    if skipped:
        say(f"Skipped {len(skipped)} already in the repository (it wins):")
        for address in skipped:
            say(f"  {address}")
    if not written:
        say("Nothing new to write.")
        return
    kinds = Counter(a.split("/", 1)[0] for a in new)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    files = ", ".join(f"{path} ({n})" for path, n in sorted(written.items()))
    say(f"Wrote {counts}: {files}")
