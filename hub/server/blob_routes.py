"""Blob bytes over HTTP, addressed by sha256:

- ``HEAD /api/blobs/{sha256}``: 200 with the size when the hub has it, 404 otherwise (a client
  skips uploading what is there).
- ``GET /api/blobs/{sha256}``: the bytes, streamed, with ``Content-Length``, ``ETag`` (the
  digest), ``Accept-Ranges``; a ``Range: bytes=N-`` (honoured when ``If-Range`` is absent or is
  the ETag) answers 206 with the rest, so a cut-off pull resumes.
- ``PUT /api/blobs/{sha256}``: the body is hashed while it is written to a temp file and only
  stored if it hashes to the digest in the URL (else 400 and nothing is kept); 413 over the limit.
"""

from __future__ import annotations

import re
from typing import Iterator

from anyio import to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import AdapterNotFound, IntegrityError, InvalidArgument
from ..digests import is_sha256
from . import auth
from ..errors import RangeNotSatisfiable
from .limits import store_upload

# ASCII digits only (\d also matches other scripts' digits, which int() reads or refuses).
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
# More digits than any blob size has: such a position is past the end (int() of 5,000 digits fails).
_MAX_DIGITS = 18
# Responses go out in pieces of this size: the idle timeout applies per piece, so a slow but
# steady client (1 MiB in a minute is 140 kbit/s) is never mistaken for a stalled one.
SEND_PIECE = 1024 * 1024


def blob_digest(request: Request) -> str:
    """The sha256 in the path. Raises ``InvalidArgument`` unless it is 64 lowercase hex digits."""
    digest = request.path_params["digest"]
    if not is_sha256(digest):
        raise InvalidArgument(f"invalid blob digest {digest[:80]!r}: expected 64 lowercase hex digits (sha256)")
    return digest


def etag(digest: str) -> str:
    return f'"{digest}"'


def requested_range(request: Request, digest: str, size: int) -> tuple[int, int] | None:
    """The ``[start, end)`` a ``Range`` header asks for, or None for the whole blob.

    One range only: a multi-range or malformed header is ignored, as RFC 9110 allows, and so is
    one whose ``If-Range`` names another ETag. Raises ``RangeNotSatisfiable`` past the end.
    """
    header = request.headers.get("range")
    if header is None:
        return None
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range != etag(digest):
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match[1] == match[2] == "":
        return None
    first, last = (_position(text) for text in (match[1], match[2]))
    if match[1] == "":  # "bytes=-N": the last N bytes
        start, end = max(0, size - last), size
        if last == 0:
            start = size
    else:
        start = first
        end = min(size, last + 1) if match[2] else size
    if start >= size or start >= end:
        raise RangeNotSatisfiable(f"range {header[:80]!r} is outside the blob's {size} bytes", size=size)
    return start, end


def _position(text: str) -> int:
    if not text:
        return 0
    return int(text) if len(text) <= _MAX_DIGITS else 10 ** _MAX_DIGITS


async def _size(request: Request, digest: str) -> int:
    """The blob's size. Raises ``AdapterNotFound`` (404) when the hub does not have it."""
    store = request.app.state.registry.blobs
    size = await to_thread.run_sync(lambda: store.size(digest) if store.has(digest) else None)
    if size is None:
        raise AdapterNotFound(f"this hub has no blob sha256:{digest}", digest=digest)
    return size


async def get_blob(request: Request) -> Response:
    digest = blob_digest(request)
    await auth.require_read(request)
    size = await _size(request, digest)
    cache = "public" if request.app.state.config.public_read else "private"
    headers = {"ETag": etag(digest), "Accept-Ranges": "bytes", "Content-Length": str(size),
               "Cache-Control": f"{cache}, max-age=31536000, immutable"}
    if request.method == "HEAD":
        return Response(headers=headers, media_type="application/octet-stream")
    span = requested_range(request, digest, size)
    start, end = span or (0, size)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
    # A sync iterator: Starlette pulls each piece in a worker thread.
    pieces = _pieces(request.app.state.registry.blobs.read_chunks(digest, start, end))
    return StreamingResponse(pieces, status_code=status, headers=headers, media_type="application/octet-stream")


def _pieces(chunks: Iterator[bytes]) -> Iterator[bytes]:
    # Copies, so a store that reuses one read buffer cannot change bytes still queued to send.
    for chunk in chunks:
        view = memoryview(chunk)
        for offset in range(0, len(view), SEND_PIECE):
            yield bytes(view[offset:offset + SEND_PIECE])


async def put_blob(request: Request) -> Response:
    digest = blob_digest(request)
    await auth.require_write(request, None)
    config = request.app.state.config
    store = request.app.state.registry.blobs

    def put(chunks):
        try:
            return store.put_chunks(chunks, expected_digest=digest)
        except IntegrityError as exc:
            raise InvalidArgument(f"upload rejected, nothing was stored: {exc}", digest=digest) from None

    try:
        stored, size = await store_upload(request, put, config.max_upload_bytes)
    except ClientDisconnect:
        # The client went away mid-upload; put_chunks removed its temp file. No one to answer.
        return Response(status_code=400)
    return JSONResponse({"digest": stored, "size": size}, status_code=201)


# ``:path`` so that anything under /api/blobs/ reaches blob_digest and is refused as 400.
ROUTES = [
    Route("/api/blobs/{digest:path}", get_blob, methods=["GET", "HEAD"]),
    Route("/api/blobs/{digest:path}", put_blob, methods=["PUT"]),
]
