"""The blob store interface (``BlobStore``), and choosing the store a location names: a local
folder (``LocalBlobStore``) or an S3 bucket (``S3BlobStore``). The registry and the server use
only these methods, so a new backend is one class that satisfies the protocol (a test checks
every implementation against it)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Protocol, runtime_checkable

from .blobs import LocalBlobStore
from .errors import InvalidArgument

Progress = Callable[[int], None]


@runtime_checkable
class BlobStore(Protocol):
    """Content-addressed bytes, by sha256; writes are atomic and verified (see hub/blobs.py)."""

    def path(self, digest: str) -> Path | None:
        """The blob's local file, or None where blobs are not local files (S3)."""

    def has(self, digest: str) -> bool: ...

    def size(self, digest: str) -> int: ...

    def put_chunks(self, chunks: Iterable[bytes], expected_digest: str | None = None,
                   progress: Progress | None = None) -> tuple[str, int]:
        """Store a stream; returns (sha256, size). Raises ``IntegrityError`` on a digest mismatch."""

    def put_file(self, source: str | Path, progress: Progress | None = None) -> tuple[str, int]: ...

    def open(self, digest: str) -> BinaryIO: ...

    def read_chunks(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]: ...

    def link_to(self, digest: str, destination: Path) -> bool:
        """Hard-link the blob (made read-only) at ``destination`` where the store and file system
        allow; False, with nothing written, where not."""

    def copy_to(self, digest: str, destination: Path) -> None:
        """Write the blob to ``destination`` (a temp name the caller renames into place)."""

    def verify(self, digest: str) -> str | None:
        """None when intact, else 'missing' or 'corrupt'."""

    def digests(self) -> Iterator[str]: ...

    def age_seconds(self, digest: str) -> float: ...

    def delete(self, digest: str) -> None: ...

    def dead_temp_files(self) -> list:
        """Leftovers of interrupted writes (opaque to callers: pass them back below)."""

    def temp_size(self, temp, /) -> int: ...

    def remove_temp(self, temp, /) -> None: ...


def open_blob_store(location: str, *, s3_endpoint_url: str | None = None) -> BlobStore:
    """The blob store at ``location``: a local folder (or ``file://``), or ``s3://bucket/prefix``.
    Raises ``InvalidArgument`` for another scheme."""
    if location.startswith("s3://"):
        from .blobs_s3 import S3BlobStore  # boto3 is an optional dependency (the `s3` extra)

        return S3BlobStore.from_location(location, endpoint_url=s3_endpoint_url)
    if "://" in location and not location.startswith("file://"):
        raise InvalidArgument(f"unsupported blob store {location!r}: use a local folder or s3://bucket/prefix")
    return LocalBlobStore(location.removeprefix("file://"))
