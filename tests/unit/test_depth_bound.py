"""The cheap depth pre-check never calls a deep document shallow: whenever it says "shallow",
the parser's own events agree (it may say "maybe deep" for a shallow one; then the exact walk
runs)."""

from __future__ import annotations

import io
import random

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent

from reconciler.yamlio import MAX_DEPTH, YamlProblem, load_documents, shallow


def true_depth(text: str) -> int:
    depth = deepest = 0
    for event in YAML(typ="safe").parse(text):
        if isinstance(event, CollectionStartEvent):
            depth += 1
            deepest = max(deepest, depth)
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
    return deepest


def tree(rng: random.Random, depth: int) -> object:
    if depth == 0 or rng.random() < 0.15:
        return rng.choice(["x", 1, "a: b", "[q]", "{z"])
    if rng.random() < 0.5:
        return [tree(rng, depth - 1) for _ in range(rng.randint(1, 3))]
    return {f"k{i}": tree(rng, depth - 1) for i in range(rng.randint(1, 3))}


def dumped(value: object, style: bool | None, indent: tuple[int, int, int]) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = style
    yaml.indent(mapping=indent[0], sequence=indent[1], offset=indent[2])
    out = io.StringIO()
    yaml.dump_all([value, value], out)
    return out.getvalue()


HAND_WRITTEN = [
    "a:\n- b:\n  - c:\n    - d:\n      - e: 1\n",  # indentless sequences
    "- - - - - - x\n",  # compact nested sequences
    "? - - a\n  - b\n: - - c\n",  # complex keys
    "a: [b, {c: [d, {e: [f]}]}]\n---\nx: {y: [z]}\n",
    "s: |\n  [[[[ not nesting\n---x: 1\n",
]


def generated(count: int) -> list[str]:
    rng = random.Random(20261130)
    texts = []
    for _ in range(count):
        value = tree(rng, rng.randint(1, 14))
        style = rng.choice([True, False, None])
        indent = rng.choice([(2, 2, 0), (2, 4, 2), (4, 4, 2), (1, 2, 0)])
        texts.append(dumped(value, style, indent))
    return texts


@pytest.mark.parametrize("text", HAND_WRITTEN + generated(150))
def test_shallow_is_never_said_of_a_deeper_document(text: str) -> None:
    depth = true_depth(text)
    for limit in range(depth):
        assert not shallow(text, limit), (limit, depth, text)


def test_a_split_marker_that_is_not_one_does_not_hide_a_bomb() -> None:
    # `---x` is a plain scalar, not a document marker: the openers on both sides count together.
    half = MAX_DEPTH // 2 + 10
    text = "a: " + "[" * half + "\n---x, " + "[" * half + "]" * (2 * half) + "\n"
    assert not shallow(text)
    with pytest.raises(YamlProblem, match=f"deeper than {MAX_DEPTH}"):
        list(load_documents(text))


def test_an_ordinary_inventory_file_takes_the_fast_path() -> None:
    server = "kind: Server\nmetadata: {name: n, labels: {a: b}}\nspec:\n  bmc: {x: [1, 2]}\n"
    assert shallow("---\n".join([server] * 1000))
