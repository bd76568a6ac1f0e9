"""The local blob store's write paths: streamed chunks, and large files copied while hashed."""

import hashlib
import os

import pytest

from loramgr.hub.blobs import CHUNK, LocalBlobStore
from loramgr.hub.errors import IntegrityError


@pytest.mark.parametrize("size", [0, 1000, CHUNK + 12345])
def test_put_file_stores_the_bytes_under_their_sha256(tmp_path, size):
    store = LocalBlobStore(tmp_path / "blobs")
    source = tmp_path / "file.bin"
    source.write_bytes(os.urandom(size))
    seen = []
    digest, stored_size = store.put_file(source, progress=seen.append)
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest() and stored_size == size
    assert store.path(digest).read_bytes() == source.read_bytes()
    assert sum(seen) == size
    assert store.verify(digest) is None and list(store.tmp.iterdir()) == []
    assert store.put_file(source) == (digest, size)  # stored once


def test_a_digest_mismatch_stores_nothing(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(IntegrityError):
        store.put_chunks([b"abc"], expected_digest="0" * 64)
    assert list(store.digests()) == [] and list(store.tmp.iterdir()) == []
