"""PostgreSQL for tests (a pytest plugin, loaded by conftest.py).

Fixtures:

- ``postgres_url`` (session): a server URL. ``LORAMGR_TEST_POSTGRES_URL`` when set (``.ci/run``
  sets it); else a throw-away cluster started here with ``.ci/postgres.sh`` when PostgreSQL's
  ``initdb`` can be found, stopped at the end of the session; else the test is skipped.
- ``postgres_database``: a fresh, empty database on that server for one test, dropped afterwards,
  so no test sees another's rows.
- ``database_url``: parametrized ``sqlite`` / ``postgres``; the metadata store URL for one test,
  also exported as ``LORAMGR_DATABASE_URL`` so CLI commands run in the test use it.
- ``registry_settings``: ``Settings`` for the test's ``home`` and ``database_url``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from loramgr.hub.settings import Settings

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "postgres.sh"
URL_VARIABLE = "LORAMGR_TEST_POSTGRES_URL"


def _initdb_available() -> bool:
    if os.environ.get("PG_BIN"):
        return os.access(os.path.join(os.environ["PG_BIN"], "initdb"), os.X_OK)
    return bool(shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def _driver_url(url: str) -> str:
    """The URL psycopg itself takes: SQLAlchemy's ``+psycopg`` dialect suffix removed."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database on the same server."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def admin_execute(url: str, *statements: str) -> None:
    """Run statements outside a transaction (CREATE / DROP DATABASE need that)."""
    import psycopg

    with psycopg.connect(_driver_url(url), autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


@pytest.fixture(scope="session")
def postgres_url():
    """URL of a PostgreSQL server the tests may create databases on; skips without one."""
    url = os.environ.get(URL_VARIABLE)
    if url:
        yield url
        return
    if not _initdb_available():
        pytest.skip(f"no PostgreSQL server: set {URL_VARIABLE} or install PostgreSQL (initdb)")
    started = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        pytest.fail(f".ci/postgres.sh start failed:\n{started.stderr}")
    exported = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines()
                    if line.startswith("export "))
    try:
        yield exported[URL_VARIABLE]
    finally:
        subprocess.run([str(SCRIPT), "stop", exported["LORAMGR_PG_DIR"]], capture_output=True, timeout=120)


@pytest.fixture
def postgres_database(postgres_url):
    """URL of a new, empty database for this test; dropped (connections and all) afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin_execute(postgres_url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(postgres_url, name)
    finally:
        admin_execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, home, monkeypatch):
    """The metadata store URL of this test, once on SQLite (under ``home``), once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'registry.db'}"
    else:
        url = request.getfixturevalue("postgres_database")
    monkeypatch.setenv("LORAMGR_DATABASE_URL", url)
    return url


def settings_for(home: Path, database_url: str | None = None, **changes) -> Settings:
    """Settings of a local registry in ``home`` (``database_url`` defaults to SQLite there)."""
    return Settings.load(environ={}, home=str(home), database_url=database_url, **changes)


@pytest.fixture
def registry_settings(home, database_url) -> Settings:
    """Settings for this test's ``home`` and ``database_url``."""
    return settings_for(home, database_url)
