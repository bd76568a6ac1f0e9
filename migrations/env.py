"""Alembic environment for the hub's schema.

loramgr runs alembic programmatically (``loramgr.hub.db.engine.upgrade``) and hands over its
own connection in ``config.attributes["connection"]``; the plain ``alembic`` command works too
with ``-x url=...``.
"""

from alembic import context
from sqlalchemy import create_engine

from loramgr.hub.db.models import Base, is_modelled

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          include_object=is_modelled)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    with create_engine(url).connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          include_object=is_modelled)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
