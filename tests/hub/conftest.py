import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from loramgr.hub.registry import Registry
from loramgr.hub.settings import Settings


def fresh_postgres_database(server_url: str) -> str:
    """Create an empty database on the test server and return its URL."""
    name = f"loramgr_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, home):
    """The registry suite runs against a real SQLite file and a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{home / 'registry.db'}"
    return fresh_postgres_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def settings(home, database_url, monkeypatch):
    monkeypatch.setenv("LORAMGR_DATABASE_URL", database_url)
    return Settings.load(home=str(home), database_url=database_url)


@pytest.fixture
def registry(settings):
    registry = Registry(settings)
    yield registry
    registry.close()
