"""Request limits: idle timeouts, JSON body sizes, and streaming an upload into the blob store
under a size limit.
"""

from __future__ import annotations

import json
import math
import re
from typing import Callable, Iterator

import anyio
from anyio import from_thread, to_thread
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidArgument, PayloadTooLarge
from ..errors import RequestTimeout

# Uploads reach the worker thread that hashes and writes them in batches of about this size:
# one thread hop per batch rather than per (often 64 KB) network read.
UPLOAD_BATCH = 1024 * 1024
_DIGITS = re.compile(r"[0-9]+")


class IdleTimeoutMiddleware:
    """Cut off a client that stalls: no request bytes for ``seconds`` while its request is being
    read (answered 408), or no response bytes accepted for ``seconds`` (connection dropped).

    Idle, not total, time: a 2 GB pull over a slow link is fine as long as it keeps moving.
    Once the response has started, ``receive`` only waits for a disconnect, so it is not timed.
    """

    def __init__(self, app: ASGIApp, seconds: float):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def timed_receive() -> Message:
            if started:
                return await receive()
            try:
                with anyio.fail_after(self.seconds):
                    return await receive()
            except TimeoutError:
                raise RequestTimeout(f"no request data for {self.seconds:g} s: the hub stopped waiting") from None

        async def timed_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            with anyio.fail_after(self.seconds):
                await send(message)

        await self.app(scope, timed_receive, timed_send)


def declared_length(request: Request, limit: int, what: str) -> int | None:
    """The Content-Length, if any. Raises ``PayloadTooLarge`` above ``limit`` (before a byte of
    the body is read), ``InvalidArgument`` when it is not a number."""
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not _DIGITS.fullmatch(value):  # ASCII digits only: '²'.isdigit() is true, int('²') fails
        raise InvalidArgument(f"invalid Content-Length {value[:40]!r}")
    if len(value) > 18:
        raise PayloadTooLarge(f"{what} of {len(value)} digits of bytes is over this hub's limit of {limit:,} bytes")
    if int(value) > limit:
        raise PayloadTooLarge(f"{what} of {int(value):,} bytes is over this hub's limit of {limit:,} bytes")
    return int(value)


async def read_json(request: Request, limit: int) -> dict:
    """The request body as a JSON object. Raises ``PayloadTooLarge`` over ``limit`` bytes,
    ``InvalidArgument`` for anything but a JSON object."""
    declared_length(request, limit, "a JSON body")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"a JSON body over {limit:,} bytes is over this hub's limit")
    data = parse_json(bytes(body or b"{}"), "the request body")
    if not isinstance(data, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return data


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: bytes | str, what: str):
    """Strict JSON: no ``NaN`` / ``Infinity`` (nor ``1e999``, which Python reads as infinity),
    nesting bounded. Raises ``InvalidArgument`` naming ``what``."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:  # ValueError: JSONDecodeError, NaN, a 5,000-digit int
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InvalidArgument(f"{what} is not valid JSON: {first}") from None
    except RecursionError:
        raise InvalidArgument(f"{what} is nested too deeply") from None
    if not _finite(data):
        raise InvalidArgument(f"{what} holds a number out of range (JSON numbers here must be finite)")
    return data


def _finite(data) -> bool:
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return True


async def store_upload(request: Request, store_chunks: Callable[[Iterator[bytes]], tuple[str, int]],
                       limit: int) -> tuple[str, int]:
    """Stream the request body into ``store_chunks`` (e.g. the blob store's ``put_chunks``),
    which runs in a worker thread so hashing and writing never block the event loop.

    Raises ``PayloadTooLarge`` once more than ``limit`` bytes arrive (whatever Content-Length
    said); whatever ``store_chunks`` raises (it must store nothing then) passes through.
    """
    declared_length(request, limit, "an upload")
    body = request.stream()

    async def next_batch() -> bytes | None:
        parts, size = [], 0
        while size < UPLOAD_BATCH:
            try:
                chunk = await body.__anext__()
            except StopAsyncIteration:
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts) if parts else None

    def chunks() -> Iterator[bytes]:
        received = 0
        while (batch := from_thread.run(next_batch)) is not None:
            received += len(batch)
            if received > limit:
                raise PayloadTooLarge(f"upload over this hub's limit of {limit:,} bytes")
            if batch:
                yield batch

    return await to_thread.run_sync(store_chunks, chunks())
