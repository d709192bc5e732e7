"""Alembic's environment for the plugin's migrations: always online, on the connection
:mod:`chatbot_webhooks.history.migrate` hands over, with the plugin's own version table."""

from __future__ import annotations

from alembic import context
from chatbot_webhooks.history.schema import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the migrations through chatbot_webhooks.history.migrate "
                       "(flask webhooks db upgrade)")
context.configure(connection=connection, version_table=VERSION_TABLE,
                  transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
