"""Load the desired state: files of a working tree or a Git revision -> validated resources.

Every problem is collected as a Diagnostic with `file:line:column`, address and field path, and
all of a run are reported together (`InputError`). Loading is pure given the files: reading a
working tree or a Git revision only produces `SourceFile`s.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, overload

from pydantic import BaseModel, ValidationError

from reconciler.errors import InputError, MetalformError
from reconciler.model import API_VERSION, Diagnostic, Location, Resource, Severity, address_of
from reconciler.model.base import Metadata, SpecM, find, typed
from reconciler.model.kinds import KIND_SPECS
from reconciler.references import check_references
from reconciler.yamlio import Pos, YamlProblem, load_documents

MAX_FILE_BYTES = 1024 * 1024
"""A desired-state file larger than this is refused (1 MiB is thousands of resources)."""
YAML_SUFFIXES = (".yaml", ".yml")
ENVELOPE_KEYS = ("apiVersion", "kind", "metadata", "spec")
SECRET_FIELDS = {"Credential": ("password", "token", "previous")}
SECRET_KEYS = frozenset({"password", "token", "previous", "secret"})
"""Keys that hold a secret wherever they appear: a literal one elsewhere is named as such."""


@dataclass(frozen=True)
class SourceFile:
    path: str
    """Path relative to the repository root, with forward slashes."""
    data: bytes


@dataclass
class DesiredState:
    """The validated desired state of one revision."""

    revision: str
    resources: dict[str, Resource] = field(default_factory=dict)
    warnings: list[Diagnostic] = field(default_factory=list)
    locators: dict[str, _Locator] = field(default_factory=dict, repr=False)

    def locate(self, address: str, path: Sequence[str | int]) -> Location | None:
        """Where a field of a resource is written (`spec.bios.attributes.X` as a list)."""
        locator = self.locators.get(address)
        return locator.at(path) if locator else None

    @overload
    def of_kind(self, kind: str) -> list[Resource]: ...
    @overload
    def of_kind(self, kind: str, spec: type[SpecM]) -> list[Resource[SpecM]]: ...
    def of_kind(self, kind: str, spec: type[BaseModel] = BaseModel) -> list[Resource[Any]]:
        """The resources of `kind`, typed by `spec` (its spec model; TypeError if it is not)."""
        return [typed(r, spec) for r in self.resources.values() if r.kind == kind]

    @overload
    def get(self, kind: str, name: str) -> Resource | None: ...
    @overload
    def get(self, kind: str, name: str, spec: type[SpecM]) -> Resource[SpecM] | None: ...
    def get(
        self, kind: str, name: str, spec: type[BaseModel] = BaseModel
    ) -> Resource[BaseModel] | None:
        """The resource `kind/name` if declared, typed by `spec` (TypeError if it is not)."""
        return find(self.resources, address_of(kind, name), spec)


class RepositoryError(MetalformError):
    """The repository or revision cannot be read at all."""


# --- sources -------------------------------------------------------------------------------


def _is_hidden(part: str) -> bool:
    return part.startswith(".")


def worktree_files(root: Path) -> list[SourceFile]:
    """Every `*.yaml`/`*.yml` file under `root`, hidden folders skipped, in path order."""
    root = root.resolve()
    if not root.is_dir():
        raise RepositoryError(f"{root} is not a directory")
    found: list[SourceFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            if _is_hidden(name) or not name.endswith(YAML_SUFFIXES):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            # A symlink out of the repository would make the plan depend on files Git does
            # not hold; refuse it rather than follow it.
            if not path.resolve().is_relative_to(root):
                found.append(SourceFile(rel, b"\0symlink-outside"))
                continue
            if path.stat().st_size > MAX_FILE_BYTES:
                found.append(SourceFile(rel, b"\0oversized"))
                continue
            found.append(SourceFile(rel, path.read_bytes()))
    return found


def worktree_revision(files: Sequence[SourceFile]) -> str:
    """`worktree:HASH`, a digest of the files' paths and contents."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.path.encode() + b"\0" + hashlib.sha256(f.data).digest())
    return "worktree:" + digest.hexdigest()[:16]


def revision_files(root: Path, rev: str) -> tuple[str, list[SourceFile]]:
    """The YAML files of Git revision `rev` below `root`, without touching the working tree."""
    import git  # gitpython; imported here so a plain worktree plan does not need it loaded

    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise RepositoryError(f"{root} is not inside a Git repository (needed for --rev)") from None
    try:
        commit = repo.commit(rev)
    except (git.BadName, ValueError, git.GitCommandError):
        raise RepositoryError(f"unknown revision {rev!r} in {repo.working_dir}") from None
    prefix = Path(root).resolve().relative_to(Path(str(repo.working_tree_dir)).resolve())
    tree = commit.tree
    if str(prefix) != ".":
        try:
            tree = tree / prefix.as_posix()
        except KeyError:
            raise RepositoryError(f"{prefix} does not exist at revision {rev}") from None
    found: list[SourceFile] = []
    for item in tree.traverse():
        if item.type != "blob":  # type: ignore[union-attr]
            continue
        rel = PurePosixPath(item.path).relative_to(tree.path) if tree.path else None  # type: ignore[union-attr]
        rel_path = rel.as_posix() if rel is not None else str(item.path)  # type: ignore[union-attr]
        parts = rel_path.split("/")
        if any(_is_hidden(p) for p in parts) or not rel_path.endswith(YAML_SUFFIXES):
            continue
        if item.size > MAX_FILE_BYTES:  # type: ignore[union-attr]
            found.append(SourceFile(rel_path, b"\0oversized"))
            continue
        found.append(SourceFile(rel_path, item.data_stream.read()))  # type: ignore[union-attr]
    found.sort(key=lambda f: f.path)
    return commit.hexsha, found


# --- parsing -------------------------------------------------------------------------------


class _Locator:
    """Maps a field path inside one YAML document to its 1-based position."""

    def __init__(self, file: str, pos: Pos) -> None:
        self.file = file
        self.pos = pos

    def at(self, path: Sequence[str | int]) -> Location:
        line, column = self.pos.at(path)
        return Location(file=self.file, line=line + 1, column=column + 1)


def _field_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class _Document:
    resource: Resource
    locator: _Locator


def _documents(source: SourceFile, diags: list[Diagnostic]) -> Iterator[tuple[Any, _Locator]]:
    file = source.path
    if source.data == b"\0oversized":
        diags.append(_error(f"file is larger than {MAX_FILE_BYTES // 1024} KiB", file))
        return
    if source.data == b"\0symlink-outside":
        diags.append(_error("symbolic link to a file outside the repository", file))
        return
    try:
        text = source.data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = source.data[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        diags.append(
            Diagnostic(
                severity=Severity.ERROR,
                message=f"file is not valid UTF-8 (byte 0x{source.data[exc.start]:02x})",
                location=Location(file=file, line=line, column=col),
            )
        )
        return
    try:
        for doc, pos in load_documents(text):
            yield doc, _Locator(file, pos)
    except YamlProblem as exc:
        location = (
            Location(file=file, line=exc.line + 1, column=(exc.column or 0) + 1)
            if exc.line is not None
            else Location(file=file)
        )
        diags.append(_error(exc.message, location=location))


def _error(
    message: str,
    file: str | None = None,
    location: Location | None = None,
    *,
    address: str | None = None,
    field: str | None = None,
) -> Diagnostic:
    if location is None and file is not None:
        location = Location(file=file)
    return Diagnostic(
        severity=Severity.ERROR, message=message, location=location, address=address, field=field
    )


def _resource(doc: Any, loc: _Locator, diags: list[Diagnostic]) -> Resource | None:
    if not isinstance(doc, dict):
        diags.append(
            _error(
                "a document must be a mapping with apiVersion, kind, metadata, spec",
                location=loc.at([]),
            )
        )
        return None
    ok = True
    for key in doc:
        if key not in ENVELOPE_KEYS:
            diags.append(_error(f"unknown field {key!r}", location=loc.at([key]), field=str(key)))
            ok = False
    for key in ENVELOPE_KEYS:
        if key not in doc:
            diags.append(_error(f"missing field {key!r}", location=loc.at([]), field=key))
            ok = False
    if not ok:
        return None
    if doc["apiVersion"] != API_VERSION:
        diags.append(
            _error(
                f"apiVersion must be {API_VERSION!r}",
                location=loc.at(["apiVersion"]),
                field="apiVersion",
            )
        )
        return None
    kind = doc["kind"]
    spec_model = KIND_SPECS.get(kind) if isinstance(kind, str) else None
    if spec_model is None:
        known = ", ".join(sorted(KIND_SPECS))
        diags.append(
            _error(
                f"unknown kind {kind!r} (known: {known})", location=loc.at(["kind"]), field="kind"
            )
        )
        return None
    try:
        metadata = Metadata.model_validate(doc["metadata"])
    except ValidationError as exc:
        for err in exc.errors():
            path = ["metadata", *err["loc"]]
            diags.append(_error(_message(err), location=loc.at(path), field=_field_path(path)))
        return None
    address = address_of(kind, metadata.name)
    spec_raw = doc["spec"]
    if spec_raw is None:
        spec_raw = {}
    for secret_field in SECRET_FIELDS.get(kind, ()):
        value = spec_raw.get(secret_field) if isinstance(spec_raw, dict) else None
        if value is not None and not isinstance(value, dict):
            path = ["spec", secret_field]
            diags.append(
                _error(
                    "literal secret in Git: use {fromEnv: VAR} or {fromFile: PATH}",
                    location=loc.at(path),
                    address=address,
                    field=_field_path(path),
                )
            )
            return None
    try:
        spec = spec_model.model_validate(spec_raw)
    except ValidationError as exc:
        for err in _merge_unions(exc.errors()):
            path = ["spec", *err["loc"]]
            diags.append(
                _error(
                    _message(err), location=loc.at(path), address=address, field=_field_path(path)
                )
            )
        return None
    return Resource(kind=kind, metadata=metadata, spec=spec, location=loc.at([]))


_UNION_TAGS = {"str": "a string", "int": "an integer", "bool": "a boolean", "float": "a number"}


def _merge_unions(errors: list[Any]) -> list[Any]:
    """One error per field for `str | int | bool` unions, not one per member."""
    merged: list[Any] = []
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        if loc and loc[-1] in _UNION_TAGS:
            key = loc[:-1]
            if key in seen:
                seen[key]["_members"].append(_UNION_TAGS[str(loc[-1])])
                continue
            entry = {
                "loc": key,
                "type": "union",
                "msg": "",
                "_members": [_UNION_TAGS[str(loc[-1])]],
            }
            seen[key] = entry
            merged.append(entry)
        else:
            merged.append(err)
    for entry in seen.values():
        members = entry.pop("_members")
        entry["msg"] = "must be " + (
            ", ".join(members[:-1]) + " or " + members[-1] if len(members) > 1 else members[0]
        )
    return merged


def _message(err: Any) -> str:
    """A pydantic error as one line, without the offending input (it may be a secret)."""
    kind = err["type"]
    if kind == "extra_forbidden":
        if err["loc"] and err["loc"][-1] in SECRET_KEYS:
            return "literal secret in Git: name a Credential (credential: NAME) instead"
        return "unknown field"
    if kind == "missing":
        return "field required"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


# --- the whole state -----------------------------------------------------------------------


def load_files(files: Iterable[SourceFile], revision: str) -> DesiredState:
    """Validate every document of `files`; raise InputError listing every problem."""
    diags: list[Diagnostic] = []
    docs: dict[str, _Document] = {}
    for source in files:
        for raw, locator in _documents(source, diags):
            resource = _resource(raw, locator, diags)
            if resource is None:
                continue
            first = docs.get(resource.address)
            if first is not None:
                diags.append(
                    _error(
                        f"duplicate {resource.kind} name {resource.name!r} "
                        f"(first defined at {first.resource.location})",
                        location=locator.at(["metadata", "name"]),
                        address=resource.address,
                        field="metadata.name",
                    )
                )
                continue
            docs[resource.address] = _Document(resource, locator)
    resources = {address: d.resource for address, d in docs.items()}
    for problem in check_references(resources):
        doc = docs[problem.address]
        diags.append(
            _error(
                problem.message,
                location=doc.locator.at(problem.path),
                address=problem.address,
                field=_field_path(problem.path),
            )
        )
    diags.sort(
        key=lambda d: (
            (d.location.file, d.location.line, d.location.column) if d.location else ("", 0, 0)
        )
    )
    errors = [d for d in diags if d.severity is Severity.ERROR]
    if errors:
        raise InputError(diags)
    return DesiredState(
        revision=revision,
        resources=resources,
        warnings=diags,
        locators={address: d.locator for address, d in docs.items()},
    )


def load(root: Path, rev: str | None = None) -> DesiredState:
    """Load the working tree at `root`, or Git revision `rev` of the repository holding it."""
    if rev is None:
        files = worktree_files(root)
        revision = worktree_revision(files)
    else:
        revision, files = revision_files(root, rev)
    return load_files(files, revision)


def resources_from_documents(documents: dict[str, dict[str, Any]]) -> dict[str, Resource]:
    """Rebuild resources from the documents a plan carries (already validated when planned)."""
    out: dict[str, Resource] = {}
    for address, doc in documents.items():
        model = KIND_SPECS.get(doc.get("kind", ""))
        if model is None:
            raise MetalformError(f"the plan holds {address} of unknown kind {doc.get('kind')!r}")
        try:
            resource = Resource(
                kind=doc["kind"],
                metadata=Metadata.model_validate(doc["metadata"]),
                spec=model.model_validate(doc.get("spec") or {}),
                source=doc.get("source", "git"),
            )
        except (KeyError, ValidationError) as exc:
            raise MetalformError(f"the plan's copy of {address} is invalid: {exc}") from None
        out[address] = resource
    return out
