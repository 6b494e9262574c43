"""Alembic's environment: migrations run on the connection `upgrade_database` hands over."""

from alembic import context

from service.keys import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
