"""Pulls into the snapshot cache hard-link the blobs (read-only), fall back to copies where links
cannot be made, and leave user folders as copies; rm and gc remove snapshots nobody references."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from loramgr.hub.registry import Registry
from loramgr.hub.settings import Settings

from .. import factories


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_pull_into_the_cache_links_the_blobs_read_only(registry, llama_lora):
    version = registry.push(llama_lora, name="acme/a", task="t")
    folder = registry.pull("acme/a")
    for file in version.files:
        pulled, blob = folder / file.name, registry.blobs.path(file.digest)
        assert pulled.stat().st_ino == blob.stat().st_ino and pulled.stat().st_nlink == 2
        assert mode(pulled) == 0o444  # the link is the blob: never to be written through
    assert registry.pull("acme/a") == folder and registry.verify().ok


def test_a_pull_into_a_user_folder_copies(registry, llama_lora, tmp_path):
    version = registry.push(llama_lora, name="acme/a", task="t")
    out = registry.pull("acme/a", output=tmp_path / "mine")
    for file in version.files:
        assert (out / file.name).stat().st_ino != registry.blobs.path(file.digest).stat().st_ino
        assert (out / file.name).stat().st_nlink == 1
    (out / "adapter_config.json").write_text("{}")  # the user's to edit; the store is untouched
    assert registry.verify().ok


@pytest.mark.parametrize("failure", [errno.EXDEV, errno.EPERM, errno.EMLINK])
def test_where_links_cannot_be_made_the_cache_gets_read_only_copies(registry, llama_lora, monkeypatch, failure):
    version = registry.push(llama_lora, name="acme/a", task="t")

    def refuse(source, destination):
        raise OSError(failure, os.strerror(failure))

    monkeypatch.setattr(os, "link", refuse)  # e.g. the home and the store on two devices
    folder = registry.pull("acme/a")
    for file in version.files:
        assert (folder / file.name).stat().st_nlink == 1 and mode(folder / file.name) == 0o444
        assert (folder / file.name).read_bytes() == registry.blobs.path(file.digest).read_bytes()


def test_rm_removes_the_versions_snapshot_and_only_it(registry, llama_lora):
    registry.push(llama_lora, name="acme/a", task="t")
    registry.push(llama_lora, name="acme/a", task="t")
    first, second = registry.pull("acme/a@1"), registry.pull("acme/a@2")
    registry.rm("acme/a@1")
    assert not first.exists() and second.is_dir()
    registry.rm("acme/a@2")
    assert not (registry.settings.home / "snapshots" / "acme").exists()  # empty parents go too


def test_gc_removes_snapshots_of_versions_removed_elsewhere(registry, llama_lora, llama_dir, tmp_path):
    keep = registry.push(llama_lora, name="acme/keep", task="t")
    gone = registry.push(factories.make_lora(llama_dir, tmp_path / "other", r=8), name="acme/gone", task="t")
    kept_folder, gone_folder = registry.pull(keep.ref), registry.pull(gone.ref)
    # Another machine on the same metadata store removes the version: this home keeps its snapshot.
    elsewhere = Registry(Settings.load(environ={}, home=str(tmp_path / "elsewhere"),
                                       database_url=registry.settings.database_url,
                                       store=str(registry.settings.store)))
    elsewhere.rm(gone.ref)
    elsewhere.close()
    assert gone_folder.is_dir()

    assert registry.gc().removed_snapshots == 0  # too recent: a pull may be writing it
    marker = len(gone.digest) + 1  # the snapshot's own file: the rest are links to blobs
    only_gone = sum(f.size for f in gone.files if f.digest not in {k.digest for k in keep.files}) + marker
    dry = registry.gc(grace_seconds=0, dry_run=True)
    assert (dry.removed_snapshots, dry.freed_bytes) == (1, only_gone) and gone_folder.is_dir()
    report = registry.gc(grace_seconds=0)
    # Each byte counted once: the snapshot's links free nothing, the blobs they shared do.
    assert (report.removed_snapshots, report.freed_bytes) == (1, only_gone)
    assert not gone_folder.exists() and kept_folder.is_dir() and registry.verify().ok
