"""YAML documents with positions, fast enough for fleets of ten thousand servers.

ruamel.yaml composes the node tree (with its C parser when ruamel.yaml.clib is installed; the
pure-Python round-trip loader is about 15 times slower). We build plain values from the nodes
ourselves, in one pass that also records where every key and item is written, detects duplicate
keys, resolves `<<` merge keys and bounds alias expansion (billion-laughs documents).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.tag import Tag

MAX_NODES = 100_000
"""A document expanding to more values than this is refused: YAML alias bombs."""
MAX_DEPTH = 100
"""Collections nested deeper than this are refused. The resource format needs fewer than ten
levels; the limit is checked on the parser's event stream (which is iterative) before the node
tree is composed, because ruamel's C composer recurses without a limit and a document nested
some 30,000 levels deep (60 KB) crashes the process."""

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_MERGE = _TAG + "merge"


_MAYBE_TYPED = frozenset("0123456789-+.~tTfFnN<=")
_STR_TAG = Tag(suffix=_STR)
_SEQ_TAG = Tag(suffix=_TAG + "seq")
_MAP_TAG = Tag(suffix=_TAG + "map")
_SHARED_TAGS = {
    t: Tag(suffix=t) for t in (_STR, _INT, _FLOAT, _BOOL, _NULL, _MERGE, _TAG + "timestamp")
}


class _Yaml12Resolver(VersionedResolver):
    """The YAML 1.2 resolver without its per-scalar version lookup.

    The stock resolver asks for the document's YAML version on every scalar through a chain
    of failing attribute lookups: two thirds of the load time of a large inventory.
    """

    _cached: Any = None

    @property
    def processing_version(self) -> Any:
        return (1, 2)

    @property
    def versioned_resolver(self) -> Any:
        if self._cached is None:
            self._cached = VersionedResolver.versioned_resolver.fget(self)  # type: ignore[attr-defined]
        return self._cached

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        # Most plain scalars are words: only these first characters can start a YAML 1.2
        # null, bool, int, float, timestamp or merge key; everything else is a string.
        if kind is ScalarNode:
            if not implicit[0] or (value and value[0] not in _MAYBE_TYPED):
                return _STR_TAG
            tag = super().resolve(kind, value, implicit)
            return _SHARED_TAGS.get(str(tag), tag)
        return _SEQ_TAG if kind is SequenceNode else _MAP_TAG


class YamlProblem(Exception):
    """A document that is not acceptable YAML for Metalform, with its 0-based position."""

    def __init__(
        self, message: str, line: int | None, column: int | None, *, syntax: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.syntax = syntax
        """A parser's syntax error (the pure parser may accept what the C parser refused)."""


@dataclass
class Pos:
    """Where a value is written (0-based) and, for collections, where each child's key is."""

    line: int
    column: int
    children: dict[Any, Pos] = field(default_factory=dict)

    def at(self, path: Sequence[str | int]) -> tuple[int, int]:
        """Position of the deepest existing element of `path` (the key for mapping entries)."""
        node = self
        line, column = node.line, node.column
        for part in path:
            child = node.children.get(part)
            if child is None:
                break
            line, column = child.line, child.column
            node = child
        return line, column


def _tag(node: Node) -> str:
    ctag = node.ctag
    if ctag.handle is None and isinstance(ctag.suffix, str):
        return ctag.suffix  # resolved implicitly: the full tag, no handle to expand
    return str(node.tag)


def _int(text: str) -> int:
    text = text.replace("_", "")
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body.startswith(("0x", "0X")):
        return sign * int(body[2:], 16)
    if body.startswith(("0o", "0O")):
        return sign * int(body[2:], 8)
    if body.startswith(("0b", "0B")):
        return sign * int(body[2:], 2)
    return sign * int(body)


def _float(text: str) -> float:
    lowered = text.replace("_", "").lower()
    if lowered in (".inf", "+.inf"):
        return math.inf
    if lowered == "-.inf":
        return -math.inf
    if lowered == ".nan":
        return math.nan
    return float(lowered)


_DATE_SHAPED = re.compile(r"\d{4}-\d\d?-\d\d?(?:[Tt ]|$)")
"""What YAML reads as a timestamp when untagged: a year, a month and a day."""


class _TooLarge(Exception):
    """The document expands (through aliases) to more than MAX_NODES values."""


class _Builder:
    """Builds plain values and positions in one pass over the node tree.

    Aliases share nodes, so a document can expand exponentially (a billion-laughs bomb): the
    pass counts every value it produces and stops at MAX_NODES, so the work stays bounded.
    """

    def __init__(self) -> None:
        self.count = 0
        self.active: set[int] = set()
        self.constructor = SafeConstructor()

    def scalar(self, node: ScalarNode) -> Any:
        tag = _tag(node)
        text = node.value
        mark = node.start_mark
        if "\0" in text:
            # A path or template name holding NUL cannot be opened, only traced back.
            raise YamlProblem(
                "a NUL character (\\0) is not allowed in a value", mark.line, mark.column
            )
        if tag == _STR:
            return text
        # Errors never quote the value: it may be a literal secret (`password: !!int ...`).
        try:
            if tag == _INT:
                return _int(text)
            if tag == _FLOAT:
                value = _float(text)
                if not math.isfinite(value):
                    raise YamlProblem(
                        "numbers must be finite (.nan and .inf are not allowed)",
                        mark.line,
                        mark.column,
                    )
                return value
            if tag == _BOOL:
                return text.lower() == "true"
            if tag == _NULL:
                return None
            if tag == _TAG + "timestamp" and _DATE_SHAPED.match(text):
                return self._timestamp(node)
            value = self.constructor.construct_object(node, deep=True)
        except (ValueError, YAMLError):
            raise YamlProblem(
                f"this value cannot be read as {tag.removeprefix(_TAG)}", mark.line, mark.column
            ) from None
        if hasattr(value, "isoformat"):
            return value.isoformat()
        return value if isinstance(value, str | int | float | bool) else str(value)

    def _timestamp(self, node: ScalarNode) -> str:
        """A plain date or time as ISO text; an impossible one (2026-13-01) stays as written.

        Only the field's model knows whether it wants a date there, and it names the field
        in its error; the reader knows neither the field nor the meaning.
        """
        try:
            value = self.constructor.construct_object(node, deep=True)
        except (ValueError, YAMLError):
            return str(node.value)
        return str(value.isoformat())

    def build(self, node: Node, depth: int = 1) -> tuple[Any, Pos]:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooLarge
        mark = node.start_mark
        pos = Pos(mark.line, mark.column)
        if isinstance(node, ScalarNode):
            return self.scalar(node), pos
        if depth > MAX_DEPTH:
            # The text is at most MAX_DEPTH deep (checked before composing), but aliases
            # nest a subtree wherever they are used: bound the values built too.
            raise YamlProblem(
                f"{_too_deep()} once its aliases are expanded", mark.line, mark.column
            )
        key = id(node)
        if key in self.active:
            raise YamlProblem("recursive YAML alias", mark.line, mark.column)
        self.active.add(key)
        try:
            return self._collection(node, pos, depth)
        finally:
            self.active.discard(key)

    def _collection(self, node: Node, pos: Pos, depth: int) -> tuple[Any, Pos]:
        if isinstance(node, SequenceNode):
            items = []
            for index, child in enumerate(node.value):
                value, child_pos = self.build(child, depth + 1)
                items.append(value)
                pos.children[index] = child_pos
            return items, pos
        assert isinstance(node, MappingNode)
        result: dict[str, Any] = {}
        merged: list[MappingNode] = []
        for key_node, value_node in node.value:
            if _tag(key_node) == _MERGE:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        raise YamlProblem(
                            "a merge key (<<) takes a mapping or a list of them",
                            key_node.start_mark.line,
                            key_node.start_mark.column,
                        )
                    merged.append(source)
                continue
            if not isinstance(key_node, ScalarNode):
                raise YamlProblem(
                    "mapping keys must be plain scalars",
                    key_node.start_mark.line,
                    key_node.start_mark.column,
                )
            key = key_node.value
            if key in result:
                # Name the key, never the values: a duplicated key may hold a literal secret.
                raise YamlProblem(
                    f"duplicate key {key!r}", key_node.start_mark.line, key_node.start_mark.column
                )
            value, child_pos = self.build(value_node, depth + 1)
            result[key] = value
            kmark = key_node.start_mark
            child_pos.line, child_pos.column = kmark.line, kmark.column
            pos.children[key] = child_pos
        for source in merged:  # explicit keys win over merged ones
            value, source_pos = self.build(source, depth)
            for key, item in value.items():
                if key not in result:
                    result[key] = item
                    pos.children[key] = source_pos.children[key]
        return result, pos


def _too_deep() -> str:
    return f"YAML nested deeper than {MAX_DEPTH} levels"


_DOCUMENT_MARKER = re.compile(r"(?m)^(?:---|\.\.\.)(?=[ \t\r\n]|\Z)")
"""A document marker; inside a flow collection the parser refuses one (an error, not a split)."""


def shallow(text: str, limit: int = MAX_DEPTH) -> bool:
    """True when `text` provably nests no deeper than `limit` (C-speed string scans only).

    Flow collections nest by `[` and `{`, and one flow collection never spans a document
    marker: counting the openers of each document over-counts (quotes, closed ones) but never
    under-counts. Block collections nest by indentation or by indicators (`- `, `? `) at the
    start of a line: every level takes at least one such character, twice that covers
    indentless sequences. False means "maybe deep": walk the events to know.
    """
    flow = max(chunk.count("[") + chunk.count("{") for chunk in _DOCUMENT_MARKER.split(text))
    room = (limit - 2 - flow) // 2  # block prefix characters that keep the sum within limit
    if room < 0:
        return False
    return re.search(rf"(?m)^[ \t?:-]{{{room + 1}}}", text) is None


def check_depth(text: str, *, pure: bool = False) -> None:
    """Refuse `text` when its collections nest deeper than MAX_DEPTH, at the first one past it.

    Walks the parser's events, which needs no recursion, so it is safe on any input; raises
    YamlProblem (or the parser's MarkedYAMLError for invalid YAML). Most files are proven
    shallow by `shallow` first, which costs a small fraction of the walk.
    """
    if shallow(text):
        return
    depth = 0
    for event in YAML(typ="safe", pure=pure).parse(text):
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise YamlProblem(_too_deep(), mark.line, mark.column)
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


def load_documents(text: str) -> Iterator[tuple[Any, Pos]]:
    """Plain values and positions of every non-empty document of `text`."""
    try:
        documents = _compose(text, pure=False)
    except YamlProblem as problem:
        if not problem.syntax:
            raise
        # libyaml (the C parser) rejects some valid YAML 1.2 that ruamel's own parser accepts,
        # such as `{url: https://host}` in flow style: try that before reporting an error.
        documents = _compose(text, pure=True)
    yield from documents


def _compose(text: str, *, pure: bool) -> list[tuple[Any, Pos]]:
    yaml = YAML(typ="safe", pure=pure)
    yaml.Resolver = _Yaml12Resolver
    documents: list[tuple[Any, Pos]] = []
    try:
        check_depth(text, pure=pure)
        for node in yaml.compose_all(text):
            if node is None:
                continue
            try:
                value, pos = _Builder().build(node)
            except _TooLarge:
                raise YamlProblem(
                    f"document expands to more than {MAX_NODES} values "
                    "(YAML aliases nested too deep)",
                    node.start_mark.line,
                    node.start_mark.column,
                ) from None
            if value is None:
                continue
            documents.append((value, pos))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or str(exc).splitlines()[0]
        raise YamlProblem(
            f"invalid YAML: {problem}",
            mark.line if mark else None,
            mark.column if mark else None,
            syntax=True,
        ) from None
    except ReaderError as exc:
        raise _reader_problem(text, exc) from None
    except YAMLError as exc:
        raise YamlProblem(f"invalid YAML: {str(exc).splitlines()[0]}", None, None) from None
    return documents


def _reader_problem(text: str, exc: ReaderError) -> YamlProblem:
    """A character YAML does not allow (NUL, other control characters), where it first is.

    The reader's own position is in bytes for the C parser and in characters for the pure one:
    the first occurrence of the character is the one it stopped at either way.
    """
    character = exc.character if isinstance(exc.character, int) else None
    index = text.find(chr(character)) if character is not None else -1
    what = f" #x{character:04x}" if character is not None else ""
    message = f"invalid YAML: control character{what} is not allowed"
    if index < 0:
        return YamlProblem(message, None, None)
    line_start = text.rfind("\n", 0, index) + 1
    return YamlProblem(message, text.count("\n", 0, index), index - line_start)
