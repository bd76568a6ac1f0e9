"""``loramgr db``: the metadata store's schema."""

from __future__ import annotations

import click

from . import main
from .output import emit_json, json_option


@main.group()
def db():
    """The metadata store's schema (alembic migrations)."""


@db.command()
@json_option
@click.pass_obj
def upgrade(settings, as_json):
    """Apply pending schema migrations to the registry database."""
    from loramgr.hub.db.engine import Database

    database = Database(settings.database_url)
    try:
        before, after = database.upgrade()
    finally:
        database.dispose()
    if as_json:
        emit_json({"database": settings.database_url, "from": before, "to": after})
    else:
        click.echo(f"{settings.database_url}: schema {before or 'empty'} -> {after}")
