"""The remote client against a real ``loramgr serve`` with hostile or stale inputs (issue 12)."""

from __future__ import annotations

import os

import pytest

from loramgr.hub.errors import InvalidAdapter, Unauthorized

from ..hostile import write_adapter
from .conftest import remote


@pytest.fixture
def server(live_server):
    return live_server()


def test_push_with_a_revoked_token_says_so(server, tokens, tmp_path):
    secret = tokens.create("acme")
    tokens.revoke_secret(secret)
    hub = remote(server.url, tmp_path / "client", secret)
    try:
        with pytest.raises(Unauthorized) as info:
            hub.push(write_adapter(tmp_path / "a"), name="acme/a", task="t")
    finally:
        hub.close()
    # Before: "answered HEAD /api/blobs/... with HTTP 401" (a HEAD answer has no body).
    assert "revoked" in str(info.value) and "HTTP 401" not in str(info.value)


@pytest.mark.parametrize("target", ["/etc/passwd", "/proc/self/environ"])
def test_remote_push_refuses_symlinks_before_uploading(server, tokens, tmp_path, target):
    secret = tokens.create("acme")
    folder = write_adapter(tmp_path / "a")
    os.symlink(target, folder / "README.md")
    hub = remote(server.url, tmp_path / "client", secret)
    try:
        with pytest.raises(InvalidAdapter, match="symbolic link"):
            hub.push(folder, name="acme/leak", task="t")
        assert hub.ls() == []
    finally:
        hub.close()


def test_a_remote_push_whose_blobs_the_hubs_gc_removed_uploads_them_again(server, tokens, tmp_path, server_home,
                                                                          monkeypatch):
    from loramgr.hub.registry import Registry
    from loramgr.hub.settings import Settings

    secret = tokens.create("acme")
    hub = remote(server.url, tmp_path / "client", secret)
    collector = Registry(Settings.load(environ={}, home=str(server_home)))
    upload = hub._upload
    uploads = []

    def upload_then_collect(path, progress):
        digest = upload(path, progress)
        uploads.append(path)
        if len(uploads) == 2:  # both files on the hub, not yet committed: the hub's gc --grace 0 now
            assert collector.gc(grace_seconds=0).removed_blobs == 2
        return digest

    monkeypatch.setattr(hub, "_upload", upload_then_collect)
    try:
        version = hub.push(write_adapter(tmp_path / "a"), name="acme/a", task="t")
        assert version.ref == "acme/a@1" and len(uploads) == 4  # the two files went up again
        assert collector.verify().ok
    finally:
        hub.close()
        collector.close()
