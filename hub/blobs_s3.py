"""Content-addressed blob store in an S3 bucket (AWS S3 or an S3-compatible server such as MinIO).

Same interface and guarantees as ``LocalBlobStore``: blobs live under
``<prefix>/sha256/<ab>/<digest>``, each is stored once, and a crash never leaves a visible
half-blob. S3 makes an object visible only when its PUT (or multipart upload, or copy) completes,
so:

- content up to one part (8 MiB) is hashed in memory, checked, then PUT straight to its final
  key in one atomic request;
- larger content streams as a multipart upload to a temp key ``<prefix>/tmp/...`` while it is
  hashed; once the digest is known and checked, a server-side copy creates the final key and
  the temp object is deleted. An interrupted write leaves only a temp object or an unfinished
  multipart upload, which ``dead_temp_files`` reports once older than ``temp_grace_seconds``
  (S3 has no process ids to ask whether the writer still runs) and ``gc`` removes.

Storing content that is already there rewrites the same key with the same bytes: that refreshes
its LastModified, which protects it from a concurrent ``gc`` by its grace period, as
``os.utime`` does for the local store.

Configuration: ``LORAMGR_STORE=s3://bucket/prefix``; the endpoint of an S3-compatible server
from ``LORAMGR_S3_ENDPOINT_URL`` (else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``);
credentials and region from the usual AWS variables, files or roles (boto3's chain).
Failures to reach the bucket raise ``RemoteError``; missing or corrupt content ``IntegrityError``.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Mapping

from .digests import is_sha256, new_sha256
from .errors import IntegrityError, InvalidArgument, RemoteError

PART_SIZE = 8 * 1024 * 1024  # S3 needs every part but the last to be >= 5 MiB
CHUNK = 8 * 1024 * 1024
# A writer can take long over a slow link: its multipart upload counts as dead only after this.
TEMP_GRACE_SECONDS = 24 * 3600


@dataclass(frozen=True)
class S3Leftover:
    """A temp object or an unfinished multipart upload left by an interrupted write."""

    key: str
    size: int
    upload_id: str | None = None


class S3BlobStore:
    """Blobs as objects ``<prefix>/sha256/<ab>/<digest>`` in one S3 bucket."""

    def __init__(self, bucket: str, prefix: str = "", *, client=None, endpoint_url: str | None = None,
                 part_size: int = PART_SIZE, temp_grace_seconds: float = TEMP_GRACE_SECONDS):
        if not bucket:
            raise InvalidArgument("an S3 blob store needs a bucket: LORAMGR_STORE=s3://bucket/prefix")
        if part_size < 5 * 1024 * 1024:
            raise InvalidArgument("part_size must be at least 5 MiB (S3's smallest multipart part)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self.temp_grace_seconds = temp_grace_seconds
        self.client = client or _make_client(endpoint_url)
        root = f"{self.prefix}/" if self.prefix else ""
        self._blob_root = f"{root}sha256/"
        self._temp_root = f"{root}tmp/"

    @classmethod
    def from_location(cls, location: str, environ: Mapping[str, str] | None = None, *,
                      endpoint_url: str | None = None, **options) -> "S3BlobStore":
        """The store for ``s3://bucket[/prefix]``; the endpoint is ``endpoint_url`` (from
        ``LORAMGR_S3_ENDPOINT_URL`` via Settings), else AWS's own variables in ``environ``
        (default ``os.environ``). Raises ``InvalidArgument`` for a malformed location or when
        boto3 is not installed."""
        environ = os.environ if environ is None else environ
        if not location.startswith("s3://"):
            raise InvalidArgument(f"not an S3 location: {location!r} (use s3://bucket/prefix)")
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        endpoint = (endpoint_url or environ.get("LORAMGR_S3_ENDPOINT_URL") or environ.get("AWS_ENDPOINT_URL_S3")
                    or environ.get("AWS_ENDPOINT_URL") or None)
        return cls(bucket, prefix, endpoint_url=endpoint, **options)

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def __repr__(self) -> str:
        return f"S3BlobStore({self.location!r})"

    def key(self, digest: str) -> str:
        return f"{self._blob_root}{digest[:2]}/{digest}"

    def path(self, digest: str) -> None:
        """Blobs have no local path here; callers use ``open``/``copy_to``/``read_chunks``."""
        return None

    # -- reading -------------------------------------------------------------------------------

    def _head(self, digest: str) -> dict | None:
        with self._s3_errors():
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
            except self._client_error() as exc:
                if _status(exc) == 404:
                    return None
                raise

    def _missing(self, digest: str) -> IntegrityError:
        return IntegrityError(f"blob {digest} is missing from the store {self.location}", digest=digest)

    def has(self, digest: str) -> bool:
        return self._head(digest) is not None

    def size(self, digest: str) -> int:
        head = self._head(digest)
        if head is None:
            raise self._missing(digest)
        return head["ContentLength"]

    def age_seconds(self, digest: str) -> float:
        head = self._head(digest)
        if head is None:
            raise self._missing(digest)
        return time.time() - head["LastModified"].timestamp()

    def _get(self, digest: str, byte_range: str | None = None):
        """The GetObject body, or None when the range starts past the end. Raises
        ``IntegrityError`` when the blob is missing."""
        extra = {"Range": byte_range} if byte_range else {}
        with self._s3_errors():
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self.key(digest), **extra)["Body"]
            except self._client_error() as exc:
                if _status(exc) == 404:
                    raise self._missing(digest) from None
                if _status(exc) == 416:
                    return None
                raise

    def open(self, digest: str) -> BinaryIO:
        """A readable stream of the blob (use as a context manager). Raises ``IntegrityError``."""
        return self._get(digest)

    def read_chunks(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of the blob, in chunks. Raises ``IntegrityError``."""
        if end is not None and end <= start:
            return
        # A Range on an empty object is refused (416), so whole reads send none.
        byte_range = None if start == 0 and end is None else f"bytes={start}-{'' if end is None else end - 1}"
        body = self._get(digest, byte_range)
        if body is None:
            return
        with body, self._s3_errors():
            yield from body.iter_chunks(CHUNK)

    def _hash_stream(self, digest: str, sink: BinaryIO | None = None) -> str:
        sha = new_sha256()
        for chunk in self.read_chunks(digest):
            sha.update(chunk)
            if sink is not None:
                sink.write(chunk)
        return sha.hexdigest()

    def link_to(self, digest: str, destination: Path) -> bool:
        """Objects cannot be hard-linked into a local folder: always False (callers copy)."""
        return False

    def copy_to(self, digest: str, destination: Path) -> None:
        """Stream a blob to ``destination`` (which the caller later renames into place), checking
        its digest on the way: raises ``IntegrityError`` when it is missing or corrupt."""
        with open(destination, "wb") as out:
            got = self._hash_stream(digest, out)
        if got != digest:
            raise IntegrityError(f"blob {digest} in {self.location} is corrupt (its bytes hash to {got}): "
                                 "run `loramgr verify`", digest=digest)

    def verify(self, digest: str) -> str | None:
        """None when the blob is present and intact, else 'missing' or 'corrupt' (re-hashed
        from the bucket)."""
        try:
            return None if self._hash_stream(digest) == digest else "corrupt"
        except IntegrityError:
            return "missing"

    def digests(self) -> Iterator[str]:
        for obj in self._list(self._blob_root):
            name = obj["Key"].rsplit("/", 1)[-1]
            if is_sha256(name) and obj["Key"] == self.key(name):
                yield name

    def _list(self, prefix: str) -> Iterator[dict]:
        with self._s3_errors():
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])

    # -- writing -------------------------------------------------------------------------------

    def put_chunks(self, chunks: Iterable[bytes], expected_digest: str | None = None,
                   progress: Callable[[int], None] | None = None) -> tuple[str, int]:
        """Store a stream of bytes; returns (sha256, size); ``progress`` gets byte counts.
        Raises ``IntegrityError`` when ``expected_digest`` is given and the bytes do not match it
        (nothing is stored then), ``RemoteError`` when the bucket cannot be written."""
        sha, size, buffer = new_sha256(), 0, bytearray()
        upload: _MultipartUpload | None = None
        try:
            for chunk in chunks:
                sha.update(chunk)
                size += len(chunk)
                buffer += chunk  # a copy: callers may reuse the chunk's memory for the next one
                if progress:
                    progress(len(chunk))
                if len(buffer) >= self.part_size:
                    upload = upload or _MultipartUpload(self, self._temp_key())
                    upload.add_part(bytes(buffer))
                    buffer.clear()
            digest = sha.hexdigest()
            if expected_digest and digest != expected_digest:
                raise IntegrityError(f"content does not match its digest: expected {expected_digest}, "
                                     f"got {digest}", digest=expected_digest)
            with self._s3_errors():
                if upload is None:
                    # One PUT is atomic: the object appears whole or not at all.
                    self.client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=bytes(buffer))
                else:
                    if buffer:
                        upload.add_part(bytes(buffer))
                    upload.complete()
                    self._copy(upload.key, self.key(digest))
            return digest, size
        finally:
            if upload is not None:
                upload.discard()

    def put_file(self, source: str | Path, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
        """Store a file's bytes; returns (sha256, size). ``progress`` gets byte counts."""
        with open(source, "rb") as f:
            return self.put_chunks(iter(lambda: f.read(CHUNK), b""), progress=progress)

    def _temp_key(self) -> str:
        return f"{self._temp_root}{time.time_ns()}-{os.getpid()}-{os.urandom(4).hex()}"

    def _copy(self, source_key: str, key: str) -> None:
        # The managed copy switches to a multipart copy above 5 GB, CopyObject's limit.
        self.client.copy({"Bucket": self.bucket, "Key": source_key}, self.bucket, key)

    def delete(self, digest: str) -> None:
        with self._s3_errors():
            self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    # -- leftovers of interrupted writes -------------------------------------------------------

    def dead_temp_files(self) -> list[S3Leftover]:
        """Temp objects and unfinished multipart uploads older than ``temp_grace_seconds``."""
        cutoff = time.time() - self.temp_grace_seconds
        dead = [S3Leftover(obj["Key"], obj["Size"]) for obj in self._list(self._temp_root)
                if _started(obj["Key"], obj["LastModified"]) <= cutoff]
        with self._s3_errors():
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._temp_root)
            for page in pages:
                for upload in page.get("Uploads", []):
                    if _started(upload["Key"], upload["Initiated"]) <= cutoff:
                        dead.append(S3Leftover(upload["Key"], self._uploaded_bytes(upload), upload["UploadId"]))
        return dead

    def _uploaded_bytes(self, upload: dict) -> int:
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            return sum(part["Size"] for page in pages for part in page.get("Parts", []))
        except self._client_error():
            return 0  # finished or aborted since it was listed

    def temp_size(self, leftover: S3Leftover) -> int:
        return leftover.size

    def remove_temp(self, leftover: S3Leftover) -> None:
        """Delete a temp object or abort an unfinished upload; gone already is fine."""
        with self._s3_errors():
            try:
                if leftover.upload_id:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=leftover.key,
                                                       UploadId=leftover.upload_id)
                else:
                    self.client.delete_object(Bucket=self.bucket, Key=leftover.key)
            except self._client_error() as exc:
                if _status(exc) != 404:
                    raise

    # -- errors --------------------------------------------------------------------------------

    def _client_error(self):
        from botocore.exceptions import ClientError

        return ClientError

    @contextmanager
    def _s3_errors(self):
        """Turn boto errors (no credentials, no bucket, unreachable endpoint) into one-line
        ``RemoteError``s; errors the caller handles pass through as loramgr errors."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", "?"), error.get("Message", "")
            hint = {"NoSuchBucket": "create the bucket or fix LORAMGR_STORE",
                    "AccessDenied": "check the AWS credentials' permissions on the bucket",
                    "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID",
                    "SignatureDoesNotMatch": "check AWS_SECRET_ACCESS_KEY"}.get(code, "")
            raise RemoteError(f"blob store {self.location}: {code} {message}".rstrip()
                              + (f": {hint}" if hint else ""), store=self.location) from None
        except BotoCoreError as exc:
            raise RemoteError(f"blob store {self.location}: {exc}", store=self.location) from None


class _MultipartUpload:
    """One multipart upload to a temp key; ``discard`` leaves nothing behind, whatever happened."""

    def __init__(self, store: S3BlobStore, key: str):
        self.store, self.key = store, key
        self.parts: list[dict] = []
        self.completed = False
        with store._s3_errors():
            self.upload_id = store.client.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]

    def add_part(self, data: bytes) -> None:
        number = len(self.parts) + 1
        with self.store._s3_errors():
            response = self.store.client.upload_part(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id,
                                                     PartNumber=number, Body=data)
        self.parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def complete(self) -> None:
        with self.store._s3_errors():
            self.store.client.complete_multipart_upload(Bucket=self.store.bucket, Key=self.key,
                                                        UploadId=self.upload_id,
                                                        MultipartUpload={"Parts": self.parts})
        self.completed = True

    def discard(self) -> None:
        # Best effort: if this fails too (the endpoint went away), gc finds the leftover later.
        try:
            if self.completed:
                self.store.client.delete_object(Bucket=self.store.bucket, Key=self.key)
            else:
                self.store.client.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key,
                                                         UploadId=self.upload_id)
        except Exception:  # noqa: BLE001 - cleanup must not hide the error that got us here
            pass


def _started(key: str, server_time) -> float:
    """When a temp object or upload began: the later of the server's time and the writer's own
    (the first field of the temp key's name). Some S3-compatible servers report a fixed
    ``Initiated`` for multipart uploads; taking the later keeps a live writer's upload safe."""
    written = key.rsplit("/", 1)[-1].split("-", 1)[0]
    own = int(written) / 1e9 if written.isdigit() else 0.0
    return max(server_time.timestamp(), own)


def _status(exc) -> int | None:
    """404 for a missing key or upload, 416 for a range past the end; None for a missing bucket
    (a configuration problem, reported as such rather than as a missing blob)."""
    code = exc.response.get("Error", {}).get("Code")
    if code == "NoSuchBucket":
        return None
    if code in ("NoSuchKey", "NotFound", "NoSuchUpload"):
        return 404
    if code == "InvalidRange":
        return 416
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _make_client(endpoint_url: str | None):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise InvalidArgument("an s3:// blob store needs boto3: pip install 'loramgr[s3]'") from None
    # S3-compatible servers (MinIO, Ceph, moto) generally need path-style addressing.
    config = Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}) if endpoint_url else None
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)
