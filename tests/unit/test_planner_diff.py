"""The planners' one diff: only declared paths are compared, in declaration order."""

from __future__ import annotations

import ast
from pathlib import Path

from reconciler.model import DiffEntry
from reconciler.planners.diff import creation, diff_declared, removal

PLANNERS = Path(__file__).parents[2] / "reconciler" / "planners"


def test_a_path_git_does_not_declare_is_not_compared() -> None:
    diff = diff_declared({"power": "On"}, {"power": "Off", "boot.source": "Pxe"})
    assert diff.entries == [DiffEntry(path="power", before="Off", after="On")]
    assert diff.changed == {"power": "On"}


def test_equal_values_give_an_empty_diff() -> None:
    diff = diff_declared({"power": "On", "image": "a:1"}, {"power": "On", "image": "a:1"})
    assert not diff
    assert diff.entries == []


def test_a_mapping_declared_whole_drops_the_keys_git_dropped() -> None:
    current = {"env.A": "1", "env.OLD": "x", "labels.k": "v", "image": "a:1"}
    diff = diff_declared({"env.A": "1", "image": "a:1"}, current, whole=["env."])
    assert diff.entries == [DiffEntry(path="env.OLD", before="x", after=None)]
    # The dropped key is part of what was compared, so a read-back can expect it gone.
    assert diff.compared == {"env.A": "1", "image": "a:1", "env.OLD": None}


def test_a_staged_value_differing_from_git_is_a_difference() -> None:
    path = "bios.attributes.X"
    staged = diff_declared({path: "On"}, {path: "On"}, staged={path: "Off"})
    assert staged.entries == [DiffEntry(path=path, before="On", after="On", pending="Off")]


def test_a_staged_value_equal_to_git_still_waits_for_its_reboot() -> None:
    path = "bios.attributes.X"
    diff = diff_declared({path: "On"}, {path: "Off"}, staged={path: "On"})
    assert diff.entries == [DiffEntry(path=path, before="Off", after="On", pending="On")]


def test_entries_follow_declaration_order_or_path_order() -> None:
    want = {"b": 1, "a": 1}
    assert [e.path for e in diff_declared(want, {}).entries] == ["b", "a"]
    assert [e.path for e in diff_declared(want, {}, by_path=True).entries] == ["a", "b"]


def test_creation_and_removal_list_every_path() -> None:
    assert creation({"image": "a:1", "state": None}) == [
        DiffEntry(path="image", after="a:1"),
        DiffEntry(path="state", after=None),
    ]
    assert removal({"state": "Running", "image": "a:1"}) == [
        DiffEntry(path="image", before="a:1"),
        DiffEntry(path="state", before="Running"),
    ]


def _planner_imports(module: Path) -> set[str]:
    """The planner modules a planner module imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            prefix = "reconciler.planners."
            if node.module.startswith(prefix):
                found.add(node.module.removeprefix(prefix))
    return found


def test_planner_modules_import_each_other_without_a_cycle() -> None:
    graph = {p.stem: _planner_imports(p) for p in PLANNERS.glob("*.py") if p.stem != "__init__"}
    assert {"base", "diff", "server", "provisioning"} <= graph.keys()

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for name in graph.get(start, ()):
            if name == target or (name not in seen and reaches(name, target, seen | {name})):
                return True
        return False

    cycles = sorted(name for name in graph if reaches(name, name, set()))
    assert cycles == []
