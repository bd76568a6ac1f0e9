"""The alembic revisions own the schema: they must agree with the ORM models, on both databases."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from loramgr.hub.db.engine import Database, head_revision
from loramgr.hub.db.models import Base, is_modelled
from loramgr.hub.errors import DatabaseBehind
from loramgr.hub.registry import Registry


def test_upgrade_head_matches_the_models(database_url):
    database = Database(database_url)
    database.upgrade()
    with database.write_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": is_modelled})
        diff = compare_metadata(context, Base.metadata)
    database.dispose()
    assert diff == []


def test_a_fresh_database_is_upgraded_on_first_use(settings):
    registry = Registry(settings)
    assert registry.db.current_revision() == head_revision()
    registry.close()


def test_a_database_behind_is_refused_with_the_command_to_run(settings):
    Registry(settings).close()
    engine = create_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    engine.dispose()
    with pytest.raises(DatabaseBehind, match="loramgr db upgrade"):
        Registry(settings)
