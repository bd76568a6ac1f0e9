"""The S3 blob store (loramgr.hub.blobs_s3) on moto's S3 emulator (tests/s3.py): the store
alone, its leftovers under the registry's gc, and the CLI configured for it by the environment.
The registry's behaviour on S3 (push -> pull byte-identical, dedupe, verify, gc) runs in
test_registry.py, parametrized over the local and the S3 store.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

pytest.importorskip("boto3")

from loramgr.cli import main  # noqa: E402
from loramgr.hub.blobs_s3 import S3BlobStore, S3Leftover  # noqa: E402
from loramgr.hub.errors import IntegrityError, InvalidArgument, RemoteError  # noqa: E402
from loramgr.hub.registry import open_blob_store  # noqa: E402

MiB = 1024 * 1024
PART = 5 * MiB  # the smallest part S3 (and moto) accept, so multipart paths run on small data
S3_ONLY = pytest.mark.parametrize("blob_store", ["s3"], indirect=True)


@pytest.fixture
def location(s3_location, monkeypatch):
    """A fresh bucket per test, also named by ``LORAMGR_STORE`` (for the CLI)."""
    monkeypatch.setenv("LORAMGR_STORE", s3_location)
    return s3_location


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


# ---------------------------------------------------------------- under the registry and the CLI


@S3_ONLY
def test_gc_removes_dead_temp_files(registry, settings):
    registry.blobs.client.put_object(Bucket=registry.blobs.bucket, Key="team/blobs/tmp/1-2-dead", Body=b"x" * 5)
    registry.blobs = S3BlobStore.from_location(settings.store, temp_grace_seconds=0)
    assert registry.verify().dead_temp_files == 1
    report = registry.gc(grace_seconds=0)
    assert (report.removed_temp_files, report.freed_bytes) == (1, 5)
    assert registry.blobs.dead_temp_files() == []


def test_the_cli_reads_an_s3_store_from_the_environment(home, location, llama_lora):
    run = CliRunner().invoke
    pushed = run(main, ["push", str(llama_lora), "--name", "acme/a", "--task", "t", "--json"])
    assert pushed.exit_code == 0, pushed.output
    weights = next(f["digest"] for f in json.loads(pushed.stdout)["files"] if f["name"] == "adapter_model.safetensors")
    store = S3BlobStore.from_location(location)
    assert store.has(weights) and not (home / "blobs").exists()  # in the bucket, not in the home
    store.delete(weights)
    result = run(main, ["verify"])
    assert result.exit_code == 1
    assert f"missing: acme/a@1 adapter_model.safetensors (sha256:{weights[:16]})" in result.stderr
