"""Choosing the blob store a location names: a local folder or an S3 bucket."""

from __future__ import annotations

from .blobs import LocalBlobStore
from .errors import InvalidArgument


def open_blob_store(location: str, *, s3_endpoint_url: str | None = None):
    """The blob store at ``location``: a local folder (or ``file://``), or ``s3://bucket/prefix``.
    Raises ``InvalidArgument`` for another scheme."""
    if location.startswith("s3://"):
        from .blobs_s3 import S3BlobStore  # boto3 is an optional dependency (the `s3` extra)

        return S3BlobStore.from_location(location, endpoint_url=s3_endpoint_url)
    if "://" in location and not location.startswith("file://"):
        raise InvalidArgument(f"unsupported blob store {location!r}: use a local folder or s3://bucket/prefix")
    return LocalBlobStore(location.removeprefix("file://"))
