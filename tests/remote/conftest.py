"""Fixtures for the team hub: a server home with tokens, an in-process app, a real server."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from loramgr.hub.client import RemoteRegistry
from loramgr.hub.db.engine import Database
from loramgr.hub.server import ServerConfig, create_app
from loramgr.hub.settings import Settings
from loramgr.hub.tokens import TokenStore

from .helpers import LiveServer, write_synthetic_adapter


@pytest.fixture
def server_home(tmp_path):
    """The home of the hub's own registry (a server's files live here and nowhere else)."""
    return tmp_path / "server-home"


class Tokens:
    """Creates and revokes tokens in a hub's database, as `loramgr token` does."""

    def __init__(self, database_url: str):
        self.database_url = database_url

    def _store(self):
        database = Database(self.database_url)
        database.ensure_current()
        return database, TokenStore(database)

    def create(self, namespace: str, *, write: bool = True) -> str:
        database, store = self._store()
        try:
            return store.create(namespace, write=write).secret
        finally:
            database.dispose()

    def revoke_secret(self, secret: str) -> None:
        database, store = self._store()
        try:
            store.revoke(store.find(secret).id)
        finally:
            database.dispose()


@pytest.fixture
def tokens(server_home):
    return Tokens(f"sqlite:///{server_home / 'registry.db'}")


def app_client(server_home, config: ServerConfig | None = None) -> TestClient:
    settings = Settings.load(environ={}, home=str(server_home))
    return TestClient(create_app(settings, config or ServerConfig()), raise_server_exceptions=False)


@pytest.fixture
def make_client(server_home):
    """``make_client(config)``: an in-process client of the hub app over ``server_home``."""
    opened = []

    def make(config: ServerConfig | None = None) -> TestClient:
        client = app_client(server_home, config)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def live_server(server_home):
    """``live_server(*args, **options)``: a started ``loramgr serve`` over ``server_home``;
    every one started is stopped at the end of the test."""
    started = []

    def start(*args, **options) -> LiveServer:
        server = LiveServer(server_home, args=args, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def remote(url: str, home, token: str | None = None, **options) -> RemoteRegistry:
    """A client with its own home, quick to give up (the tests cut things on purpose)."""
    settings = Settings.load(environ={}, home=str(home), remote=url, token=token)
    return RemoteRegistry(settings, **{"retries": 3, "backoff": 0.1, "timeout": 20.0, **options})


@pytest.fixture(scope="session")
def big_adapter(tmp_path_factory):
    """A 2 MB synthetic PEFT LoRA folder: big enough to cut a transfer in the middle."""
    return write_synthetic_adapter(tmp_path_factory.mktemp("big") / "adapter", megabytes=2)
