"""One JSON shape for every error the hub answers with, rendered by one handler:

    {"error": {"code": "<LoramgrError.code>", "message": "<one line>", "details": {...}}}

with the error class's ``http_status``; ``details`` holds what the error names (``ref``,
``digest``, ``path``, ...), ``{}`` when nothing. The client turns ``code`` and ``details`` back
into the exception (``loramgr.hub.errors.error_from_code``), so a remote command fails like a
local one.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import DatabaseError, LoramgrError, RangeNotSatisfiable, Unauthorized

log = logging.getLogger("loramgr.server")


# Starlette's own errors (no route, wrong method) get codes no LoramgrError uses, so a client
# reads them as RemoteError (e.g. talking to an older hub), never as "adapter not found".
_HTTP_CODES = {404: "unknown_endpoint", 405: "method_not_allowed"}


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


ERROR_CODE_HEADER = "X-Loramgr-Error-Code"
ERROR_MESSAGE_HEADER = "X-Loramgr-Error-Message"


def render_error(error: LoramgrError) -> JSONResponse:
    # The code and message also go in headers: an answer to HEAD has no body, and a client
    # should still learn that its token was revoked rather than "HTTP 401".
    headers = {ERROR_CODE_HEADER: error.code,
               ERROR_MESSAGE_HEADER: " ".join(error.message.split()).encode("ascii", "backslashreplace")
               .decode("ascii")[:1000]}
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="loramgr"'
    if isinstance(error, RangeNotSatisfiable) and "size" in error.details:
        headers["Content-Range"] = f"bytes */{error.details['size']}"
    return JSONResponse(error_body(error.code, error.message, error.public_details()), status_code=error.http_status,
                        headers=headers)


async def handle_loramgr_error(_request: Request, error: LoramgrError) -> JSONResponse:
    return render_error(error)


async def handle_http_exception(_request: Request, error: HTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(error.status_code, "http_error")
    return JSONResponse(error_body(code, str(error.detail)), status_code=error.status_code, headers=error.headers)


async def handle_database_error(_request: Request, error: DBAPIError) -> JSONResponse:
    # The registry wraps the errors it expects; anything else from the database (server gone,
    # connection refused) is still the store's fault, not a bug: 503, with the driver's line.
    log.warning("database error: %s", error.orig)
    first_line = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else type(error.orig).__name__
    return render_error(DatabaseError(f"the metadata store failed: {first_line}"))


async def handle_unexpected(_request: Request, error: Exception) -> JSONResponse:
    # Starlette logs the traceback itself; the client gets the same shape, no internals.
    return JSONResponse(error_body("internal", "the hub failed unexpectedly; its log has the details"),
                        status_code=500)


EXCEPTION_HANDLERS = {
    LoramgrError: handle_loramgr_error,
    HTTPException: handle_http_exception,
    DBAPIError: handle_database_error,
    Exception: handle_unexpected,
}
