"""Alembic environment of the edgecl registry: runs on the connection the service hands
over (``config.attributes["connection"]``); see ``edgecl/cloud/_schema.py``."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
