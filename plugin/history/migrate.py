"""The schema's migrations, run from code: Alembic with a configuration built here (no
``alembic.ini``), the scripts shipped in ``migrations/`` and the plugin's own version table.

``flask webhooks db upgrade`` and ``db current`` call these; a process whose database is behind
learns it from :func:`check` and says which command to run.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from .schema import VERSION_TABLE

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaBehind(Exception):
    """The database is not at the revision this version of the plugin needs."""


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The revision this version of the plugin needs."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None
    return found


def current(engine: Engine) -> str | None:
    """The database's revision (None: never upgraded). Read from the version table itself:
    Alembic's own reader logs two INFO lines each time, and every process asks once."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        found = connection.execute(text(f'SELECT version_num FROM "{VERSION_TABLE}"')).scalars()
        return next(iter(found), None)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade to ``revision``; returns the revisions before and after."""
    before = current(engine)
    with engine.begin() as connection:
        command.upgrade(_config(connection), revision)
    return before, current(engine)


def check(engine: Engine) -> None:
    """Raise :class:`SchemaBehind` (its message says what to run) unless the database is at
    the head revision."""
    found, needed = current(engine), head()
    if found != needed:
        where = f"at revision {found}" if found else "not set up"
        raise SchemaBehind(
            f"The history database is {where}; this version needs {needed}: run "
            "`flask webhooks db upgrade` (with the app's --app) before starting web processes "
            "and workers.")
