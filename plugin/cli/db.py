"""``flask webhooks db ...``: the history database's schema and the import of an earlier
version's Redis history.

- ``db upgrade``: run the migrations up to this version's (Alembic, the plugin's own version
  table); run it on every upgrade, before web processes and workers start.
- ``db current``: the database's revision and this version's; exits 1 when they differ.
- ``db import-redis``: once, after upgrading from a version that kept the history in Redis
  (see :mod:`chatbot_webhooks.history.importer`); safe to run twice.

A database that cannot be reached is one line and exit 1, never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from flask.cli import AppGroup

from ..history import importer, migrate
from ..history.database import DB_DOWN, describe
from ..state import get_state
from .commands import webhooks_cli


class DatabaseGroup(AppGroup):
    """Commands that say in one line that the database cannot be reached."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except migrate.SchemaBehind as error:
            raise click.ClickException(str(error)) from None
        except DB_DOWN as error:
            raise click.ClickException(
                f"The history database cannot be reached ({describe(error)}). Check "
                "WEBHOOKS_DATABASE_URL / DATABASE_URL and try again.") from None


db_cli = DatabaseGroup("db", help="The history database: schema upgrades, import from Redis.")
webhooks_cli.add_command(db_cli)


def _where() -> str:
    """The database's URL without its password."""
    return get_state().history.engine.url.render_as_string(hide_password=True)


@db_cli.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Revision to reach.")
def upgrade(revision: str) -> None:
    """Bring the history database's schema up to this version (safe to run again)."""
    engine = get_state().history.engine
    before, after = migrate.upgrade(engine, revision)
    if before == after:
        click.echo(f"history database {_where()} is at revision {after}: nothing to do")
    else:
        click.echo(f"history database {_where()} upgraded from revision {before or 'none'} "
                   f"to {after}")


@db_cli.command("current")
def current() -> None:
    """Show the database's revision and the one this version needs; exit 1 when behind."""
    found, needed = migrate.current(get_state().history.engine), migrate.head()
    click.echo(f"history database {_where()}: revision {found or 'none'}, this version needs "
               f"{needed}")
    if found != needed:
        raise click.ClickException("behind: run `flask webhooks db upgrade`")


@db_cli.command("import-redis")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
def import_redis(as_json: bool) -> None:
    """Move the history an earlier version kept in Redis into the database (safe to run
    twice); pending deliveries stay in Redis, their history so far is written."""
    state = get_state()
    migrate.check(state.history.engine)
    run = importer.RedisImport(state.store, state.history)
    plan = run.plan()
    total = sum(len(keys) for keys in plan.values())
    bar: Any = click.progressbar(length=total, label=f"importing {total} Redis keys",
                                 file=sys.stderr)
    with bar:
        done = run.run(plan, bar.update)
    counts = importer.summary(done)
    if as_json:
        click.echo(json.dumps(counts, sort_keys=True))
        return
    click.echo(f"imported {counts['events']} events, {counts['deliveries']} deliveries and "
               f"{counts['attempts']} attempts; {counts['pending_kept_in_redis']} pending "
               f"deliveries stay in Redis; {counts['redis_keys_deleted']} Redis keys deleted")
