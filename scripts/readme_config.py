"""Rewrite the README's configuration table from plugin/config.py (tests/test_readme.py checks
that it is current): ``.venv/bin/python scripts/readme_config.py``."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chatbot_webhooks.config import DEFAULTS  # noqa: E402

START = "<!-- config-table: generated from plugin/config.py, tests/test_readme.py checks it -->"
END = "<!-- /config-table -->"


def table() -> str:
    rows = [f"| `{key}` | `{default}` | {doc} |" for key, (default, doc) in DEFAULTS.items()]
    return "\n".join(["| key | default | meaning |", "|---|---|---|", *rows])


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, rest = text.split(START)
    _, tail = rest.split(END)
    readme.write_text(f"{head}{START}\n{table()}\n{END}{tail}")


if __name__ == "__main__":
    main()
