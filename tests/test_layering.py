"""The shape of the code stays as the README's Layout draws it: ``plugin/`` keeps at its root
only the public face and the ground, every layer is a package of its own whose modules are not
named after it, imports point one way between them (no circle, not even through an import
inside a function), no module is too long to read in one sitting, the delivery side never
imports Flask, and the dispatch policy stays pure (no threads, no queues, no clock).

Read from the source with ``ast``, never by importing it, so a circle that Python happens to
survive (an import inside a function, or one only the type checker follows) still fails here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from chatbot_webhooks.delivery import jobs
from chatbot_webhooks.delivery.enqueue import LEGACY_PUMP_JOBS, PUMP_JOB
from rq.utils import import_attribute

from tests.conftest import ROOT

#: Installed package name -> source folder (as mapped in pyproject.toml).
PACKAGES = {
    "chatbot_webhooks": ROOT / "plugin",
    "chatbot_webhooks_zapier": ROOT / "connectors" / "zapier",
}

MAX_LINES = 500

#: What may sit at the root of ``plugin/``: the public face (``__init__``, the extension, the
#: state, the CLI, the platform's contracts in ``host``) and the ground every layer reads.
ROOT_MODULES = {
    "__init__", "extension", "state", "cli", "host",
    "config", "errors", "events", "records", "signing", "urlrules", "published",
}

#: The one-way order of the README's "How it works", by place: a root module of ``plugin/`` is a
#: place of its own, a subpackage is one place for all its modules (inside it, the circle check
#: above is what holds), ``zapier`` stands for the connector. A module may import only its own
#: place and the places before it.
ORDER = [
    # the ground: the root modules every layer reads
    "errors", "config", "events", "records", "signing", "urlrules", "published",
    # the layers, one package each, bottom up: the sender, Redis, the history database, the
    # delivery loop, operations
    "outbound", "store", "history", "delivery", "ops",
    # the app side: the platform's contracts, managing webhooks, the state, the faces
    "host", "control", "state", "api", "portal", "cli", "extension", "chatbot_webhooks",
    "zapier",
]

#: Imports allowed against the order, each only under TYPE_CHECKING. The state holds the
#: portal's keys once the portal is mounted (``WebhooksState.portal``): it names their type,
#: it never loads the portal, and the portal's links module imports nothing above the store.
TYPE_ONLY_UPWARD = {("chatbot_webhooks.state", "chatbot_webhooks.portal.links")}

#: Places that never import Flask (README "How it works", ARCHITECTURE.md): the sender, the
#: store, the history database and the delivery loop (every module in them, whatever it is
#: named), and the ground.
NO_FLASK = {"outbound", "store", "history", "delivery", "errors", "config", "events", "records",
            "signing", "urlrules", "published"}

#: Module names that were folders never made: no module may start with one.
OLD_PREFIXES = ("store_", "pump_", "outbound_")

#: What the dispatch policy may not import: it decides, the engine around it runs threads,
#: queues and reads the clock (times are passed in), so it is tested without any of them.
IMPURE = {"threading", "queue", "time", "datetime", "concurrent", "asyncio", "socket"}


@dataclass(frozen=True)
class Import:
    """One import statement's target among our modules."""

    importer: str
    target: str
    line: int
    #: Only under ``if TYPE_CHECKING:``.
    typing_only: bool
    #: Inside a function (run when called, not when the module loads).
    deferred: bool


def module_files() -> dict[str, Path]:
    """Every module of our two packages by its dotted installed name."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if "node_modules" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


MODULES = module_files()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(tree: ast.AST, typing_only: bool = False, deferred: bool = False
          ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """Every import statement anywhere in the tree (functions, classes, branches, try blocks
    included), with whether it is type-only and whether it runs only when a function does."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, typing_only, deferred
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from _walk(ast.Module(body=[child], type_ignores=[]), True, deferred)
            for child in node.orelse:
                yield from _walk(ast.Module(body=[child], type_ignores=[]), typing_only,
                                 deferred)
        else:
            inner = deferred or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef
                                           | ast.Lambda)
            yield from _walk(node, typing_only, inner)


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    package = importer if _is_package(importer) else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports_of(module: str) -> list[Import]:
    """Everything ``module`` imports, by absolute name (ours and others')."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found: list[Import] = []
    for node, typing_only, deferred in _walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _resolve(module, node)
            for alias in node.names:  # ``from pkg import mod`` imports the module mod
                name = f"{base}.{alias.name}"
                targets.append(name if name in MODULES else base)
        found.extend(Import(module, target, node.lineno, typing_only, deferred)
                     for target in targets)
    return found


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def import_graph() -> dict[str, dict[str, Import]]:
    """importer -> {imported module of ours: the first import that makes the edge, the first
    run-time one if there is one}.

    Type-only imports count: the types a module names are dependencies too, and a circle of
    them is a circle a reader has to untangle. Importing ``a.b.c`` at run time first runs the
    packages ``a`` and ``a.b`` (their ``__init__``), so those are edges as well, except the
    importer's own enclosing packages: they are already loading when it runs. A type-only
    import loads nothing, so it makes only its own edge.
    """
    graph: dict[str, dict[str, Import]] = {module: {} for module in MODULES}
    for module in MODULES:
        own = set(_ancestors(module))
        for found in imports_of(module):
            targets = [found.target] if found.typing_only else [
                *(p for p in _ancestors(found.target) if p not in own), found.target]
            for target in targets:
                if target in MODULES and target != module:
                    known = graph[module].get(target)
                    if known is None or (known.typing_only and not found.typing_only):
                        graph[module][target] = found  # a run-time import wins over a type
    return graph


def cycles(graph: dict[str, dict[str, Import]]) -> list[tuple[list[str], list[str]]]:
    """Each group of modules that import each other round (strongly connected, Tarjan's
    algorithm), with the shortest circle through its first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [(group, _shortest_circle(graph, group)) for group in groups]


def _shortest_circle(graph: dict[str, dict[str, Import]], group: list[str]) -> list[str]:
    start, members = group[0], set(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(graph[node]):
            if nxt == start:
                return paths[node] + [start]
            if nxt in members and nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                todo.append(nxt)
    raise AssertionError(f"no circle found in {group}")  # pragma: no cover


def describe(graph: dict[str, dict[str, Import]], group: list[str], circle: list[str]) -> str:
    lines = [f"{len(group)} modules in one tangle: {', '.join(group)}", "one circle: "
             + " -> ".join(circle)]
    for importer, target in zip(circle, circle[1:], strict=False):
        how = graph[importer][target]
        where = ("under TYPE_CHECKING" if how.typing_only else
                 "inside a function" if how.deferred else "at module level")
        via = "" if how.target == target else f" (runs package {target} to import {how.target})"
        lines.append(f"  {importer}:{how.line} imports {target} {where}{via}")
    return "\n".join(lines)


def test_imports_among_our_modules_form_no_circle() -> None:
    graph = import_graph()
    assert len(graph) > 40 and "chatbot_webhooks.store.due" in graph  # the walk found the code
    found = cycles(graph)
    assert not found, "import circles:\n" + "\n\n".join(describe(graph, *c) for c in found)


def _place(module: str) -> str:
    """A module's place in :data:`ORDER`: its subpackage of ``plugin/``, or its own name at
    the root."""
    if module.startswith("chatbot_webhooks_zapier"):
        return "zapier"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_dependencies_point_one_way_in_the_readme_order() -> None:
    graph = import_graph()
    unplaced = sorted({_place(m) for m in graph} - set(ORDER))
    assert not unplaced, f"place these modules in ORDER (and the README): {unplaced}"
    rank = {name: n for n, name in enumerate(ORDER)}
    upward = [f"{importer}:{how.line} imports {target} ({_place(target)} comes later)"
              for importer, targets in sorted(graph.items())
              for target, how in targets.items()
              if rank[_place(target)] > rank[_place(importer)]
              and not ((importer, target) in TYPE_ONLY_UPWARD and how.typing_only)]
    assert not upward, "imports against the order:\n" + "\n".join(upward)


def test_the_cycle_finder_finds_a_circle_through_a_function_level_import() -> None:
    """The check above can fail: a circle closed only by an import inside a function is one."""
    lazy = Import("b", "a", 7, typing_only=False, deferred=True)
    graph = {"a": {"b": Import("a", "b", 1, False, False)}, "b": {"a": lazy}, "c": {}}
    assert cycles(graph) == [(["a", "b"], ["a", "b", "a"])]
    assert "inside a function" in describe(graph, ["a", "b"], ["a", "b", "a"])


def test_no_plugin_module_is_over_500_lines() -> None:
    long = {str(path.relative_to(ROOT)): n for path in sorted((ROOT / "plugin").rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_the_root_of_the_plugin_holds_only_the_public_face_and_the_ground() -> None:
    at_root = {path.stem for path in (ROOT / "plugin").glob("*.py")}
    assert "state" in at_root  # the glob found the code
    extra = sorted(at_root - ROOT_MODULES)
    assert not extra, f"move these into the package of their layer: {extra}"
    assert len(at_root) <= 12


def test_no_module_is_named_after_its_folder_or_an_old_prefix() -> None:
    plugin = ROOT / "plugin"
    offenders = []
    for path in sorted(plugin.rglob("*.py")):
        folder = path.parent.name if path.parent != plugin else ""
        if path.stem != "__init__" and (
                (folder and path.stem.startswith(folder)) or path.stem.startswith(OLD_PREFIXES)):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"drop the folder's name (store/due.py, not store/store_due.py): " \
                          f"{offenders}"


def _external(module: str) -> set[str]:
    """The top-level names of everything ``module`` imports (``flask`` for ``flask.cli``)."""
    tree = ast.parse(MODULES[module].read_text())
    names: set[str] = set()
    for node, _typing_only, _deferred in _walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif not node.level and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_the_delivery_side_never_imports_flask() -> None:
    checked = sorted(m for m in MODULES if m.startswith("chatbot_webhooks.")
                     and _place(m) in NO_FLASK)
    places = {_place(m) for m in checked}
    assert places == NO_FLASK, f"places named in NO_FLASK without a module: {NO_FLASK - places}"
    direct = [m for m in checked if _external(m) & {"flask", "werkzeug"}]
    assert not direct, f"these must not import Flask: {direct}"
    # nor through a module of ours they import (the package's own __init__ aside: Python runs
    # it first whatever is imported, so it says nothing about what these modules need)
    graph = import_graph()
    for name in checked:
        seen, todo = set(), [name]
        while todo:
            for target in graph[todo.pop()]:
                if target not in seen and target != "chatbot_webhooks":
                    seen.add(target)
                    todo.append(target)
        via = sorted(t for t in seen if _external(t) & {"flask", "werkzeug"})
        assert not via, f"{name} imports Flask through {via}"


def test_the_dispatch_policy_is_pure() -> None:
    module = "chatbot_webhooks.delivery.dispatch_policy"
    assert not _external(module) & IMPURE, _external(module) & IMPURE
    ours = {found.target for found in imports_of(module) if found.target in MODULES}
    assert ours <= {"chatbot_webhooks.delivery.work"}, ours


def test_the_pump_job_is_enqueued_by_the_path_of_the_job_function() -> None:
    """Enqueued by its path, so the delivery loop starts its successor without importing the
    jobs module that imports it; the path is the contract with running workers."""
    assert PUMP_JOB == "chatbot_webhooks.delivery.jobs.pump"
    assert import_attribute(PUMP_JOB) is jobs.pump
    # the path of 0.1 no longer imports: workers map it (tests/test_delivery.py runs one)
    assert LEGACY_PUMP_JOBS == {"chatbot_webhooks.jobs.pump"}
