"""Alembic environment.

``Store.migrate()`` hands over an open connection in ``config.attributes``; the
``alembic`` command line (``alembic -c src/bangpae/adapters/store/alembic.ini ...``,
for writing new revisions) connects to ``BANGPAE_DATABASE_URL`` or the ini's URL.
"""

import os

from alembic import context
from sqlalchemy import Connection, create_engine

from bangpae.adapters.store.schema import metadata

config = context.config


def _url() -> str:
    return os.environ.get("BANGPAE_DATABASE_URL") or config.get_main_option("sqlalchemy.url") or ""


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:
    engine = create_engine(_url())
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
