"""gc beside pushes (issue 12, defect 5): gc never deletes a blob that a committed or committing
version references, at any grace; two gc at once do not fail; verify stays clean."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from loramgr.hub.registry import Registry

from ..hostile import lora_tensors, write_adapter


@pytest.fixture
def settings(registry_settings):
    """A fresh home on SQLite and on PostgreSQL (where the blob lock is an advisory lock)."""
    return registry_settings


@pytest.fixture
def registries(settings):
    """Two registries over one home: two processes, as far as the stores can tell."""
    opened = [Registry(settings), Registry(settings)]
    yield opened
    for registry in opened:
        registry.close()


def age_all_blobs(registry, seconds: float = 7200) -> None:
    past = time.time() - seconds
    for digest in registry.blobs.digests():
        os.utime(registry.blobs.path(digest), (past, past))


def test_gc_between_upload_and_commit_loses_nothing(registries, tmp_path, monkeypatch):
    pusher, collector = registries
    folder = write_adapter(tmp_path / "a")
    put_file = pusher.blobs.put_file
    calls = []

    def put_then_collect(path, **kwargs):
        stored = put_file(path, **kwargs)
        calls.append(path)
        if len(calls) == 2:  # both files stored, the commit not yet made: gc --grace 0 now
            collector.gc(grace_seconds=0)
        return stored

    monkeypatch.setattr(pusher.blobs, "put_file", put_then_collect)
    version = pusher.push(folder, name="acme/a", task="t")
    assert collector.verify().ok, collector.verify().problems
    assert pusher.show("acme/a").digest == version.digest


def test_an_old_unreferenced_blob_reused_by_a_push_is_kept(registries, tmp_path, monkeypatch):
    pusher, collector = registries
    folder = write_adapter(tmp_path / "a")
    pusher.push(folder, name="acme/a", task="t")
    pusher.rm("acme/a@1")
    age_all_blobs(pusher)  # unreferenced for two hours: past the default grace
    put_file = pusher.blobs.put_file
    calls = []

    def put_then_collect(path, **kwargs):
        stored = put_file(path, **kwargs)
        calls.append(path)
        if len(calls) == 2:
            collector.gc()  # the default grace: the blobs are old, so they go
        return stored

    monkeypatch.setattr(pusher.blobs, "put_file", put_then_collect)
    pusher.push(folder, name="acme/a", task="t")
    assert collector.verify().ok, collector.verify().problems


def test_a_commit_landing_during_gc_keeps_its_blobs(registries, tmp_path, monkeypatch):
    pusher, collector = registries
    folder = write_adapter(tmp_path / "a")
    pusher.push(folder, name="acme/a", task="t")
    pusher.rm("acme/a@1")
    age_all_blobs(pusher)
    digests = collector.blobs.digests

    def listed_then_pushed():
        listed = list(digests())
        # gc has read what is referenced and listed the blobs; a push of the same files commits now.
        pusher.push(folder, name="acme/b", task="t")
        return listed

    monkeypatch.setattr(collector.blobs, "digests", listed_then_pushed)
    collector.gc(grace_seconds=0)
    monkeypatch.undo()
    assert collector.verify().ok, collector.verify().problems


def test_two_gc_at_once_both_finish(registries, tmp_path, monkeypatch):
    first, second = registries
    for i in range(3):
        tensors = lora_tensors()
        tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = np.full((2, 4), i, np.float32)
        first.push(write_adapter(tmp_path / f"a{i}", tensors=tensors), name=f"acme/a{i}", task="t")
        first.rm(f"acme/a{i}@1")
    age = first.blobs.age_seconds
    ran = []

    def age_while_another_gc_runs(digest):
        if not ran:
            ran.append(second.gc(grace_seconds=0))  # removes every blob this gc is about to look at
        return age(digest)

    monkeypatch.setattr(first.blobs, "age_seconds", age_while_another_gc_runs)
    report = first.gc(grace_seconds=0)
    assert ran[0].removed_blobs + report.removed_blobs >= 3
    assert list(first.blobs.digests()) == []


def test_pushes_beside_a_gc_loop_verify_clean(settings, tmp_path):
    folders = [write_adapter(tmp_path / f"a{i}", tensors=_distinct(i)) for i in range(12)]
    stop, errors = threading.Event(), []

    @contextmanager
    def reported(errors: list):
        """A registry for a worker thread; any error, opening it included, lands in ``errors``."""
        registry = None
        try:
            registry = Registry(settings)
            yield registry
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            if registry is not None:
                registry.close()

    def collect():
        with reported(errors) as registry:
            while not stop.is_set():
                registry.gc(grace_seconds=0)

    def push(indices):
        with reported(errors) as registry:
            for i in indices:
                registry.push(folders[i], name=f"acme/a{i % 3}", task="t")

    collector = threading.Thread(target=collect)
    pushers = [threading.Thread(target=push, args=(range(k, 12, 2),)) for k in range(2)]
    collector.start()
    for thread in pushers:
        thread.start()
    for thread in pushers:
        thread.join()
    stop.set()
    collector.join()
    assert errors == []
    registry = Registry(settings)
    try:
        assert registry.verify().ok, registry.verify().problems
        assert sum(len(registry.versions(f"acme/a{k}")) for k in range(3)) == 12
    finally:
        registry.close()


def _distinct(i: int) -> dict:
    tensors = lora_tensors()
    tensors["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"] = np.full((4, 2), i, np.float32)
    return tensors
