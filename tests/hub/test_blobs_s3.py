"""The S3 blob store (loramgr.hub.blobs_s3), alone and under the registry.

There is no real S3 or MinIO here: these tests run against moto's S3 emulator (``moto_server``,
from the ``dev`` extra) started as a subprocess on 127.0.0.1 on a free port, and talk to it
over HTTP with boto3 exactly as they would to an S3-compatible server. The registry part runs
the behaviour the local store passes: push -> pull byte-identical, dedupe, verify, gc.
"""

import filecmp
import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid

import pytest
from click.testing import CliRunner

pytest.importorskip("boto3")
pytest.importorskip("moto.server", reason="moto[server] (the dev extra) runs the S3 emulator")

from loramgr.cli import main  # noqa: E402
from loramgr.hub.blobs_s3 import S3BlobStore, S3Leftover  # noqa: E402
from loramgr.hub.errors import IntegrityError, InvalidArgument, RemoteError  # noqa: E402
from loramgr.hub.registry import Registry, open_blob_store  # noqa: E402
from loramgr.hub.settings import Settings  # noqa: E402

MiB = 1024 * 1024
PART = 5 * MiB  # the smallest part S3 (and moto) accept, so multipart paths run on small data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 emulator on 127.0.0.1, polled until it answers, stopped after the module."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    yield url
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def aws_env(s3_endpoint, monkeypatch):
    """Dummy credentials and the emulator's endpoint, and nothing from the real environment."""
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("LORAMGR_S3_ENDPOINT_URL", s3_endpoint)
    return s3_endpoint


@pytest.fixture
def location(aws_env, monkeypatch):
    """A fresh bucket per test; the store lives under a prefix in it."""
    bucket = f"loramgr-{uuid.uuid4().hex[:12]}"
    S3BlobStore(bucket, endpoint_url=aws_env).client.create_bucket(Bucket=bucket)
    location = f"s3://{bucket}/team/blobs"
    monkeypatch.setenv("LORAMGR_STORE", location)
    return location


@pytest.fixture
def store(location):
    return S3BlobStore.from_location(location, part_size=PART)


def keys(store, under=""):
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=under)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def uploads(store):
    return store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])


def pieces(data: bytes, size: int = MiB):
    return (data[i:i + size] for i in range(0, len(data), size))


# ---------------------------------------------------------------- the store alone


@pytest.mark.parametrize("length", [0, 1000, 3 * PART + 123], ids=["empty", "one-put", "multipart"])
def test_put_read_and_layout(store, tmp_path, length):
    data = os.urandom(length)
    digest = hashlib.sha256(data).hexdigest()
    assert store.put_chunks(pieces(data)) == (digest, length)
    # Content-addressed keys, and nothing else left behind (no temp object, no open upload).
    assert keys(store) == [f"team/blobs/sha256/{digest[:2]}/{digest}"] and uploads(store) == []
    assert store.has(digest) and store.size(digest) == length and list(store.digests()) == [digest]
    assert b"".join(store.read_chunks(digest)) == data
    assert b"".join(store.read_chunks(digest, 10, 20)) == data[10:20]
    assert b"".join(store.read_chunks(digest, length + 5)) == b""
    with store.open(digest) as handle:
        assert handle.read() == data
    store.copy_to(digest, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == data
    assert store.verify(digest) is None and 0 <= store.age_seconds(digest) < 60
    assert store.path(digest) is None


def test_identical_content_is_stored_once(store, tmp_path):
    data = os.urandom(2 * PART + 7)
    (tmp_path / "f").write_bytes(data)
    first = store.put_chunks(pieces(data))
    assert store.put_file(tmp_path / "f") == first
    assert len(keys(store)) == 1 and uploads(store) == []


@pytest.mark.parametrize("length", [1000, 2 * PART + 1], ids=["one-put", "multipart"])
def test_a_wrong_expected_digest_stores_nothing(store, length):
    with pytest.raises(IntegrityError, match="does not match"):
        store.put_chunks(pieces(os.urandom(length)), expected_digest="0" * 64)
    assert keys(store) == [] and uploads(store) == []


def test_a_stream_that_fails_midway_leaves_nothing_visible(store):
    def failing():
        yield os.urandom(PART + 1)  # the first part is uploaded
        yield os.urandom(10)
        raise OSError("disk went away")

    with pytest.raises(OSError):
        store.put_chunks(failing())
    assert keys(store) == [] and uploads(store) == []


KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    from loramgr.hub.blobs_s3 import S3BlobStore

    def slow():
        yield os.urandom(6 * 1024 * 1024)  # more than a part: the multipart upload has begun
        print("uploading", flush=True)
        time.sleep(60)
        yield b"never"

    S3BlobStore.from_location(sys.argv[1], part_size=5 * 1024 * 1024).put_chunks(slow())
""")


def test_a_writer_killed_midway_leaves_only_an_upload_that_gc_removes(store, location):
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, location], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "uploading"
    os.kill(writer.pid, signal.SIGKILL)
    assert writer.wait(timeout=30) == -signal.SIGKILL
    assert list(store.digests()) == [] and len(uploads(store)) == 1

    assert store.dead_temp_files() == []  # younger than the grace period: it could be a live writer
    patient = S3BlobStore.from_location(location, temp_grace_seconds=0)
    [leftover] = patient.dead_temp_files()
    assert leftover.upload_id and patient.temp_size(leftover) == 6 * MiB
    patient.remove_temp(leftover)
    patient.remove_temp(leftover)  # gone already is fine
    assert uploads(store) == [] and patient.dead_temp_files() == []


def test_a_temp_object_left_behind_is_a_dead_temp_file(store, location):
    # A writer that died between completing its upload and copying it into place.
    store.client.put_object(Bucket=store.bucket, Key="team/blobs/tmp/123-456-abcd", Body=b"x" * 10)
    assert store.dead_temp_files() == []
    patient = S3BlobStore.from_location(location, temp_grace_seconds=0)
    assert patient.dead_temp_files() == [S3Leftover("team/blobs/tmp/123-456-abcd", 10)]
    assert list(patient.digests()) == []  # temp objects are never blobs


def test_verify_rehashes_from_the_bucket(store, tmp_path):
    digest, _ = store.put_chunks([b"hello"])
    store.client.put_object(Bucket=store.bucket, Key=store.key(digest), Body=b"rot")
    assert store.verify(digest) == "corrupt"
    with pytest.raises(IntegrityError, match="corrupt"):
        store.copy_to(digest, tmp_path / "out")
    store.delete(digest)
    assert store.verify(digest) == "missing" and not store.has(digest)
    for read in (lambda: store.open(digest), lambda: store.size(digest), lambda: list(store.read_chunks(digest)),
                 lambda: store.copy_to(digest, tmp_path / "out")):
        with pytest.raises(IntegrityError, match="missing"):
            read()


def test_a_missing_bucket_is_one_clear_error(aws_env):
    store = S3BlobStore.from_location("s3://no-such-bucket-here/x")
    with pytest.raises(RemoteError, match="no-such-bucket-here.*NoSuchBucket.*create the bucket"):
        store.put_chunks([b"data"])
    with pytest.raises(RemoteError, match="NoSuchBucket"):
        list(store.digests())


def test_locations(aws_env):
    store = open_blob_store("s3://bucket/a/b/")
    assert isinstance(store, S3BlobStore) and (store.bucket, store.prefix) == ("bucket", "a/b")
    assert store.key("ab" + "0" * 62) == "a/b/sha256/ab/ab" + "0" * 62
    assert open_blob_store("s3://bucket").key("cd" + "1" * 62) == "sha256/cd/cd" + "1" * 62
    assert store.client.meta.endpoint_url == aws_env
    for bad in ("gs://bucket/x", "s3:///x"):
        with pytest.raises(InvalidArgument):
            open_blob_store(bad)


# ---------------------------------------------------------------- under the registry


@pytest.fixture
def registry(home, location):
    registry = Registry(Settings.load(home=str(home), database_url=f"sqlite:///{home / 'registry.db'}",
                                      store=location))
    assert isinstance(registry.blobs, S3BlobStore)
    yield registry
    registry.close()


def test_push_pull_is_byte_identical(registry, llama_lora, tmp_path):
    from .. import factories

    examples = factories.write_examples(tmp_path / "examples.jsonl", [("a", "b"), ("c", "d")])
    version = registry.push(llama_lora, name="acme/a", task="t", examples=examples)
    out = registry.pull("acme/a", output=tmp_path / "pulled")
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        assert filecmp.cmp(llama_lora / name, out / name, shallow=False)
    assert filecmp.cmp(examples, out / "examples.jsonl", shallow=False)
    assert registry.read_file("acme/a", "examples.jsonl") == examples.read_bytes()
    assert registry.pull("acme/a") == registry.snapshot_dir(version)  # the snapshot cache works too


def test_identical_content_is_stored_once_across_versions(registry, llama_lora):
    first = registry.push(llama_lora, name="acme/a", task="t")
    second = registry.push(llama_lora, name="acme/b", task="t")
    assert first.digest == second.digest
    assert sorted(registry.blobs.digests()) == sorted(f.digest for f in first.files)


def test_verify_gc_and_a_blob_deleted_from_the_bucket(registry, llama_lora, llama_dir, tmp_path):
    from .. import factories

    other = factories.make_lora(llama_dir, tmp_path / "other", r=8)
    kept = registry.push(llama_lora, name="acme/a", task="t")
    gone = registry.push(other, name="acme/b", task="t")
    assert registry.verify().ok
    registry.rm(gone.ref)
    assert registry.gc().removed_blobs == 0  # too recent: a push could be committing them
    only_gone = {f.digest for f in gone.files} - {f.digest for f in kept.files}
    assert registry.gc(grace_seconds=0).removed_blobs == len(only_gone)
    assert set(registry.blobs.digests()) == {f.digest for f in kept.files}
    assert registry.verify().ok

    weights = next(f for f in kept.files if f.name == "adapter_model.safetensors")
    registry.blobs.client.delete_object(Bucket=registry.blobs.bucket, Key=registry.blobs.key(weights.digest))
    report = registry.verify()
    assert not report.ok
    assert report.problems == [{"ref": "acme/a@1", "file": "adapter_model.safetensors",
                                "digest": weights.digest, "problem": "missing"}]
    with pytest.raises(IntegrityError, match="missing"):
        registry.pull("acme/a", output=tmp_path / "pulled")

    result = CliRunner().invoke(main, ["verify"])
    assert result.exit_code == 1
    assert f"missing: acme/a@1 adapter_model.safetensors (sha256:{weights.digest[:16]})" in result.stderr


def test_gc_removes_dead_temp_files(registry, location):
    registry.blobs.client.put_object(Bucket=registry.blobs.bucket, Key="team/blobs/tmp/1-2-dead", Body=b"x" * 5)
    registry.blobs = S3BlobStore.from_location(location, temp_grace_seconds=0)
    assert registry.verify().dead_temp_files == 1
    report = registry.gc(grace_seconds=0)
    assert (report.removed_temp_files, report.freed_bytes) == (1, 5)
    assert registry.blobs.dead_temp_files() == []


def test_register_uploaded_blobs(registry, llama_lora):
    # What the server does: blobs arrive with their digests first, then the version is registered.
    files = {}
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        data = (llama_lora / name).read_bytes()
        files[name], _ = registry.blobs.put_chunks(pieces(data), expected_digest=hashlib.sha256(data).hexdigest())
    version = registry.push_stored(files, name="acme/up", task="t")
    assert {f.name: f.digest for f in version.files} == files and registry.verify(version.ref).ok
