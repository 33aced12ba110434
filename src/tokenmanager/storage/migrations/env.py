"""Alembic environment. Always run through `tokenmanager.storage.migrate`, which hands over an
open connection (`config.attributes["connection"]`), so the async engine is shared and no
alembic.ini is needed.
"""

from __future__ import annotations

from alembic import context

from tokenmanager.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `tokenmanager migrate`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
