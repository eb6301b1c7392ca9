"""Rendering a Server's cloud-init user data from its Jinja2 template, at plan time.

The template (`spec.provisioning.userData.template`) is a path relative to the repository root.
It is rendered in Jinja2's immutable sandbox with StrictUndefined, so a typo is an error rather
than an empty string, and sees only `server` (name, hostname, labels, annotations, spec as
written in Git) and `vars`. Credentials are not in scope: user data travels to MAAS and the
machine in clear, and the plan shows it. The result must be cloud-config YAML.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2

from reconciler.model import Resource
from reconciler.model.hardware import ServerSpec
from reconciler.sandbox import MAX_SIZE, BoundedSandbox, TemplateLimit
from reconciler.secrets import REDACTOR
from reconciler.yamlio import YamlProblem, load_documents

CLOUD_CONFIG_HEADER = "#cloud-config"
MAX_TEMPLATE_BYTES = 256 * 1024
MAX_USER_DATA = MAX_SIZE
"""Longest rendered user data, in characters."""

FileReader = Callable[[str], str]
"""Reads a repository file by its relative POSIX path; raises UserDataError when it cannot."""


class UserDataError(Exception):
    """The template cannot be read or rendered, or its result is not cloud-config YAML."""


@dataclass(frozen=True)
class RenderedUserData:
    template: str
    text: str
    digest: str
    """`sha256:<hex>` of the text, what the live machine's user data is compared by."""


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def safe_relative(path: str) -> PurePosixPath:
    """A repository-relative path, refusing absolute paths and `..` (the plan is of Git)."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts or ".." in pure.parts:
        raise UserDataError(
            f"template path {path!r} must be relative to the repository root and stay inside it"
        )
    return pure


def repository_files(root: Path, rev: str | None = None) -> FileReader:
    """A FileReader over the working tree at `root`, or over Git revision `rev` of it."""
    base = root.resolve()
    if rev is None:

        def read_worktree(path: str) -> str:
            target = (base / safe_relative(path)).resolve()
            if not target.is_relative_to(base):
                raise UserDataError(f"template {path} points outside the repository")
            try:
                if target.stat().st_size > MAX_TEMPLATE_BYTES:
                    raise UserDataError(
                        f"template {path} is larger than {MAX_TEMPLATE_BYTES // 1024} KiB"
                    )
                return target.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise UserDataError(f"template {path} does not exist") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise UserDataError(
                    f"cannot read template {path}: {exc.__class__.__name__}"
                ) from None

        return read_worktree

    import git  # gitpython, only needed to plan a revision

    repo = git.Repo(base, search_parent_directories=True)
    prefix = PurePosixPath(
        base.relative_to(Path(repo.working_tree_dir or base).resolve()).as_posix()
    )
    tree = repo.commit(rev).tree

    def read_revision(path: str) -> str:
        inner = (prefix / safe_relative(path)).as_posix()
        try:
            blob = tree / inner
        except KeyError:
            raise UserDataError(f"template {path} does not exist in {rev}") from None
        data: bytes = blob.data_stream.read()
        if len(data) > MAX_TEMPLATE_BYTES:
            raise UserDataError(f"template {path} is larger than {MAX_TEMPLATE_BYTES // 1024} KiB")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise UserDataError(f"template {path} is not UTF-8 text") from None

    return read_revision


def _environment() -> BoundedSandbox:
    return BoundedSandbox(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


def template_context(server: Resource[ServerSpec]) -> dict[str, Any]:
    """What a template sees: the Server as written in Git, and the template's `vars`."""
    document = server.document()
    spec = document["spec"]
    provisioning = server.spec.provisioning
    user_data = provisioning.user_data if provisioning is not None else None
    return {
        "server": {
            "name": server.name,
            "hostname": server.spec.hostname or server.name,
            "labels": dict(server.metadata.labels),
            "annotations": dict(server.metadata.annotations),
            "spec": spec,
        },
        "vars": dict(user_data.vars) if user_data is not None else {},
    }


def render_user_data(server: Resource[ServerSpec], read: FileReader) -> RenderedUserData:
    """Render the Server's userData template; UserDataError says what is wrong and where."""
    provisioning = server.spec.provisioning
    if provisioning is None or provisioning.user_data is None:
        raise UserDataError("the Server declares no userData")
    path = provisioning.user_data.template
    source = read(str(safe_relative(path)))
    env = _environment()
    try:
        template = env.from_string(source)
        text = env.render(template, template_context(server), MAX_USER_DATA)
    except TemplateLimit as exc:
        where = f"{path}:{exc.line}" if exc.line else path
        raise UserDataError(f"template {where}: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise UserDataError(f"template {path}:{exc.lineno}: syntax error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise UserDataError(f"template {path}: {exc.message}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise UserDataError(f"template {path}: not allowed in the sandbox: {exc}") from None
    except jinja2.TemplateError as exc:
        raise UserDataError(f"template {path}: {exc.__class__.__name__}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise UserDataError(f"template {path}: {exc.__class__.__name__}: {exc}") from None
    check_cloud_config(path, text)
    if REDACTOR(text) != text:
        # Values of resolved Credentials must never reach MAAS, the plan or a PR comment.
        raise UserDataError(
            f"template {path} renders a secret value; user data is shown in "
            "the plan and stored in MAAS in clear, so it may hold no secret"
        )
    return RenderedUserData(template=path, text=text, digest=digest_of(text))


def check_cloud_config(path: str, text: str) -> None:
    """The rendered text must be `#cloud-config` YAML holding a mapping."""
    first = text.lstrip("\ufeff").split("\n", 1)[0].rstrip()
    if first != CLOUD_CONFIG_HEADER:
        raise UserDataError(
            f"template {path} must render cloud-config: the first line must be "
            f"{CLOUD_CONFIG_HEADER!r}, not {first[:40]!r}"
        )
    try:
        documents = list(load_documents(text))
    except YamlProblem as exc:
        where = f":{exc.line + 1}" if exc.line is not None else ""
        raise UserDataError(
            f"template {path} renders invalid YAML (rendered line{where}): "
            f"{exc.message.removeprefix('invalid YAML: ')}"
        ) from None
    if len(documents) > 1:
        raise UserDataError(f"template {path} must render one YAML document, not {len(documents)}")
    data = documents[0][0] if documents else None
    if data is not None and not isinstance(data, dict):
        raise UserDataError(
            f"template {path} must render a YAML mapping, not {type(data).__name__}"
        )
