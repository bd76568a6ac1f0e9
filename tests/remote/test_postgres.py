"""The team hub backed by PostgreSQL: tokens on either database, and many client processes
pushing to one server at once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from loramgr.hub.db.engine import Database
from loramgr.hub.tokens import TokenStore

from .conftest import Tokens, remote
from .helpers import REPO, LiveServer

CLIENTS, PUSHES = 8, 3

PUSHER = textwrap.dedent("""
    import shutil, sys, tempfile
    from pathlib import Path
    from loramgr.hub.client import RemoteRegistry
    from loramgr.hub.settings import Settings

    url, token, adapter, worker, home = sys.argv[1:6]
    hub = RemoteRegistry(Settings.load(environ={}, home=home, remote=url, token=token))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "adapter"
        shutil.copytree(adapter, folder)
        for index in range(int(sys.argv[6])):
            # A new model card each time: some blobs shared by every pusher, some new.
            (folder / "README.md").write_text(f"worker {worker} push {index}\\n")
            print(hub.push(folder, name="acme/busy", task="t").number, flush=True)
""")


def test_tokens_on_sqlite_and_postgresql(registry_settings):
    database = Database(registry_settings.database_url)
    database.ensure_current()
    try:
        store = TokenStore(database)
        created = store.create("acme", write=True, description="ci")
        assert store.find(created.secret) == created.token and store.find("lmt_other") is None
        assert store.revoke(created.token.id).active is False
        assert [t.active for t in store.list()] == [False]
        assert created.token.created_at.endswith("+00:00")
    finally:
        database.dispose()


@pytest.mark.postgres
def test_concurrent_client_processes_get_unique_gapless_numbers(postgres_database, llama_lora, tmp_path):
    server = LiveServer(tmp_path / "server-home", database_url=postgres_database).start()
    try:
        token = Tokens(postgres_database).create("acme")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        workers = [subprocess.Popen([sys.executable, "-c", PUSHER, server.url, token, str(llama_lora), str(worker),
                                     str(tmp_path / f"client-{worker}"), str(PUSHES)],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for worker in range(CLIENTS)]
        reported = []
        for process in workers:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            reported += [int(line) for line in out.split()]

        hub = remote(server.url, tmp_path / "checker", Tokens(postgres_database).create("*"))
        numbers = sorted(v.number for v in hub.versions("acme/busy"))
        assert numbers == sorted(reported) == list(range(1, CLIENTS * PUSHES + 1))
        assert hub.show("acme/busy").number == CLIENTS * PUSHES
        report = hub.verify()
        assert report.ok and report.checked_files == CLIENTS * PUSHES * 3 and report.unreferenced_blobs == 0
    finally:
        server.stop()
