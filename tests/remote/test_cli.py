"""``loramgr token`` and ``loramgr serve`` through click's CliRunner."""

from __future__ import annotations

import json

from click.testing import CliRunner

from loramgr.cli import main
from loramgr.hub.db.engine import Database
from loramgr.hub.tokens import TokenStore, hash_secret


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_token_create_prints_the_secret_once_and_stores_only_its_hash(home):
    created = run("token", "create", "--namespace", "acme", "--write", "--description", "ci pushes")
    assert created.exit_code == 0, created.output
    secret = created.stdout.split()[-1]
    assert created.stdout.startswith("token 1 (read+write, namespace acme): lmt_")
    assert "not shown again" in created.stderr

    listed = run("token", "ls")
    assert secret not in listed.output and hash_secret(secret) not in listed.output
    assert listed.stdout.splitlines()[2].split()[:4] == ["1", "acme", "read+write", "active"]

    database = Database(f"sqlite:///{home / 'registry.db'}")
    try:
        raw = database.read_engine.raw_connection()
        rows = raw.execute("SELECT token_hash, namespace, can_write FROM tokens").fetchall()
        raw.close()
        assert rows == [(hash_secret(secret), "acme", 1)]
        assert TokenStore(database).find(secret).namespace == "acme"
    finally:
        database.dispose()


def test_token_json_revoke_and_errors(home):
    reader = json.loads(run("token", "create", "--namespace", "*", "--json").stdout)
    assert reader["secret"].startswith("lmt_") and reader["can_write"] is False and reader["active"] is True
    revoked = json.loads(run("token", "revoke", str(reader["id"]), "--json").stdout)
    assert revoked["active"] is False and revoked["revoked_at"]
    assert "secret" not in json.loads(run("token", "ls", "--json").stdout)[0]
    assert "revoked" in run("token", "ls").stdout

    missing = run("token", "revoke", "99")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == "Error: no token with id 99: `loramgr token ls` lists them"
    bad = run("token", "create", "--namespace", "../x")
    assert bad.exit_code == 1 and bad.stderr.startswith("Error: invalid namespace")
    assert run("token", "create").exit_code == 2  # --namespace is required


def test_token_commands_act_on_the_local_registry_even_with_a_remote_set(home, monkeypatch):
    monkeypatch.setenv("LORAMGR_REMOTE", "http://127.0.0.1:9")  # nothing listens there
    assert run("token", "create", "--namespace", "acme").exit_code == 0
    assert (home / "registry.db").exists()


def test_serve_usage_errors_exit_2(home):
    assert run("serve", "--max-upload-mb", "0").exit_code == 2
    assert run("serve", "--port", "70000").exit_code == 2
    usage = run("serve", "--help").stdout
    for option in ("--host", "--port", "--public-read / --private-read", "--max-upload-mb", "--timeout"):
        assert option in usage
