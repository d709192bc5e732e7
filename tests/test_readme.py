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
