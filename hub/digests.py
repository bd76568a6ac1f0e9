"""sha256, the hub's one way to name content: blobs, versions and token secrets.

One pattern for a digest and one helper per kind of input, so every part of the hub (blob
stores, the registry, the server, the client) agrees on what a digest is and how it is made.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

# 64 lowercase hex digits: what every blob, file and version digest looks like.
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
CHUNK = 8 * 1024 * 1024

# An incremental hasher, for bytes that stream through (uploads, downloads, copies).
new_sha256 = hashlib.sha256


def is_sha256(value: object) -> bool:
    """True when ``value`` is a digest as the hub writes them (64 lowercase hex digits)."""
    return isinstance(value, str) and SHA256_HEX.fullmatch(value) is not None


def sha256_bytes(data: bytes | str) -> str:
    """The hex sha256 of ``data`` (a string is hashed as UTF-8)."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def read_file_chunks(f: BinaryIO) -> Iterator[memoryview]:
    """Chunks of an unbuffered file, read into one reused buffer: no allocation per chunk,
    which doubles the throughput of hash-while-copying over ``f.read(CHUNK)``."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while size := f.readinto(buffer):
        yield view[:size]


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        for chunk in read_file_chunks(f):
            digest.update(chunk)
    return digest.hexdigest()


def version_digest(files: Iterable[tuple[str, str]]) -> str:
    """One digest for a version: over its sorted (file name, blob digest) pairs."""
    return sha256_bytes("".join(f"{name} {digest}\n" for name, digest in sorted(files)))
