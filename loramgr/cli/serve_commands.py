"""``loramgr serve`` (the team hub) and ``loramgr token`` (its access tokens)."""

from __future__ import annotations

import click

from . import main
from .output import emit_json, json_option, print_table


def _local(settings):
    """The serving side always works on the local registry, whatever LORAMGR_REMOTE says."""
    return settings.with_(remote=None, token=None)


def web_url(host: str, port: int) -> str:
    """The address to open in a browser: a wildcard listen address is reached via loopback here."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}/"


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--public-read/--private-read", default=True, show_default=True,
              help="Whether reading (search, show, pull) needs a token. Writing always does.")
@click.option("--max-upload-mb", default=4096, show_default=True, type=click.IntRange(min=1),
              help="Largest file one push may upload, in MiB (413 above it).")
@click.option("--timeout", "idle_timeout", default=60.0, show_default=True, type=click.FloatRange(min=0.1),
              metavar="SECONDS", help="Cut off a client that sends or reads nothing for this long.")
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="Log every request.")
@click.pass_obj
def serve(settings, host, port, public_read, max_upload_mb, idle_timeout, access_log):
    """Serve this registry to a team over HTTP.

    Others point LORAMGR_REMOTE at http://HOST:PORT and every command works there. Writes need
    a token from `loramgr token create`; with --private-read, reads do too. People browse
    http://HOST:PORT/ (web pages: search, adapters, lineage; a login form with --private-read).
    """
    from loramgr.hub.server import ServerConfig, serve as run_server

    config = ServerConfig(public_read=public_read, max_upload_bytes=max_upload_mb * 1024 * 1024,
                          idle_timeout_s=idle_timeout)
    local = _local(settings)
    click.echo(f"serving {local.home} ({'public' if public_read else 'token-only'} reads) "
               f"at http://{host}:{port}  (Ctrl-C stops)", err=True)
    click.echo(f"web pages: {web_url(host, port)}", err=True)
    run_server(local, host=host, port=port, config=config, access_log=access_log)


@main.group()
def token():
    """Access tokens of the hub `loramgr serve` runs over this registry (stored hashed)."""


def _tokens(settings):
    from loramgr.hub.db.engine import Database
    from loramgr.hub.tokens import TokenStore

    database = Database(_local(settings).database_url)
    database.ensure_current()
    return database, TokenStore(database)


@token.command("create")
@click.option("--namespace", required=True, metavar="NS",
              help="Namespace the token may write to ('*': every one).")
@click.option("--write", is_flag=True, help="Allow pushing, tagging and removing in NS (default: read only).")
@click.option("--description", help="Who or what the token is for.")
@json_option
@click.pass_obj
def token_create(settings, namespace, write, description, as_json):
    """Create a token and print its secret. It is shown only this once."""
    database, tokens = _tokens(settings)
    try:
        created = tokens.create(namespace, write=write, description=description)
    finally:
        database.dispose()
    if as_json:
        emit_json(created)
        return
    access = "read+write" if write else "read"
    click.echo(f"token {created.token.id} ({access}, namespace {namespace}): {created.secret}")
    click.echo("Keep it now: it is not shown again. Clients use it as LORAMGR_TOKEN.", err=True)


@token.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@json_option
@click.pass_obj
def token_revoke(settings, token_id, as_json):
    """Revoke the token ID at once (`loramgr token ls` shows the ids)."""
    database, tokens = _tokens(settings)
    try:
        revoked = tokens.revoke(token_id)
    finally:
        database.dispose()
    emit_json(revoked) if as_json else click.echo(f"revoked token {revoked.id} ({revoked.namespace})")


@token.command("ls")
@json_option
@click.pass_obj
def token_ls(settings, as_json):
    """List tokens (never their secrets)."""
    database, tokens = _tokens(settings)
    try:
        found = tokens.list()
    finally:
        database.dispose()
    if as_json:
        emit_json(found)
    elif found:
        print_table([[t.id, t.namespace, "read+write" if t.can_write else "read",
                      "revoked " + t.revoked_at if t.revoked_at else "active", t.created_at, t.description or ""]
                     for t in found], ["id", "namespace", "access", "state", "created", "description"])
    else:
        click.echo("no tokens: create one with `loramgr token create --namespace NS --write`", err=True)
