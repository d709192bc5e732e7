"""The README stays true: its configuration table is the code's, and CI runs its test command."""

from __future__ import annotations

import re

from chatbot_webhooks.config import DEFAULTS

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_configuration_table_matches_the_defaults() -> None:
    table = README.split("<!-- config-table")[1].split("<!-- /config-table -->")[0]
    rows = re.findall(r"^\| `(WEBHOOKS_\w+)` \| `([^`]*)` \| (.+) \|$", table, re.M)
    documented = {key: (default, doc) for key, default, doc in rows}
    expected = {key: (str(default), doc) for key, (default, doc) in DEFAULTS.items()}
    assert documented == expected, (
        "README configuration table drifted from plugin/config.py DEFAULTS")


def test_ci_runs_the_readme_test_command() -> None:
    assert "\nscripts/test\n" in README
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
    assert "\nscripts/demo\n" in README


def readme_routes() -> list[tuple[str, str]]:
    """(method, path) of every route the README shows: table rows and curl lines."""
    routes: list[tuple[str, str]] = re.findall(
        r"`(GET|POST|PUT|PATCH|DELETE) (/api/[^`?\s]*)", README)
    for line in README.splitlines():
        found = re.search(r"\$BASE(/[^\s\"?]*)", line)
        if found and line.lstrip().startswith("curl"):
            method = re.search(r"-X (\w+)", line)
            routes.append((method[1] if method else "GET", "/api/v1.0" + found[1]))
    return routes


def test_every_route_in_the_readme_exists() -> None:
    from werkzeug.exceptions import MethodNotAllowed, NotFound

    from wsgi import create_app

    routes = readme_routes()
    assert len(routes) >= 20 and ("GET", "/api/v1.0/zapier/me") in routes
    adapter = create_app().url_map.bind("localhost")
    for method, path in routes:
        concrete = re.sub(r"<[^>]+>|\.\.\.", "x1", path)
        try:
            adapter.match(concrete, method=method)
        except (NotFound, MethodNotAllowed) as exc:
            raise AssertionError(f"README shows {method} {path}: {exc.name}") from None


def test_the_layout_names_every_module_of_the_plugin() -> None:
    """Each module of ``plugin/`` has its line under its folder's (``api/`` and ``portal/``
    one entry each)."""
    layout = README.split("\n## Layout\n")[1].split("\n```\n")[1]
    named: set[str] = set()
    folder = ""
    for line in layout.splitlines():
        entry = line.split()[0] if line.strip() else ""
        if line.startswith("  ") and not line.startswith("    "):
            folder = entry if entry.endswith("/") else ""
            if entry.endswith(".py"):
                named.add(entry)
        elif line.startswith("    ") and entry.endswith(".py"):
            named.add(folder + entry)
    plugin = ROOT / "plugin"
    modules = {str(path.relative_to(plugin)) for path in plugin.rglob("*.py")
               if path.parent.name not in ("api", "portal")
               and not (path.name == "__init__.py" and path.parent != plugin)}
    unnamed = sorted(modules - named)
    assert not unnamed, f"README Layout does not name: {unnamed}"
    assert {"store/due.py", "delivery/claims.py", "state.py"} <= named  # the walk found them


def test_the_dependency_order_is_the_one_the_layering_test_holds() -> None:
    from tests.test_layering import ORDER

    listed = README.split("Dependencies point one way.")[1].split("\n\n")[1]
    names = [name.rstrip("/") for name in re.findall(r"`([^`]+)`", listed)]
    names = ["chatbot_webhooks" if n == "chatbot_webhooks/__init__.py" else
             "zapier" if n == "connectors/zapier" else n for n in names]
    assert names == ORDER
