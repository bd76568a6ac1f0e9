"""Every error loramgr raises on purpose.

Each class has a stable ``code`` (used by the CLI's exit table, the HTTP API's JSON error body
and the client that turns responses back into exceptions) and the HTTP status the server
answers with. Classes also inherit the matching builtin, so ``except LookupError`` works.
"""

from __future__ import annotations


class LoramgrError(Exception):
    """Base class: a problem the user can fix. The message is one line that says how."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class InvalidAdapter(LoramgrError, ValueError):
    """The folder or file is not a valid PEFT LoRA adapter."""

    code = "invalid_adapter"
    http_status = 422


class InvalidName(LoramgrError, ValueError):
    """An adapter name, tag or reference that is not allowed."""

    code = "invalid_name"
    http_status = 400


class InvalidArgument(LoramgrError, ValueError):
    """A parameter value outside what the operation accepts."""

    code = "invalid_argument"
    http_status = 400


class AdapterNotFound(LoramgrError, LookupError):
    """No adapter, version or tag matches the reference."""

    code = "not_found"
    http_status = 404


class DestinationNotEmpty(LoramgrError, FileExistsError):
    """A pull would overwrite files in a folder that is not empty."""

    code = "destination_not_empty"
    http_status = 409


class PickleRefused(LoramgrError, ValueError):
    """A pickled ``.bin`` checkpoint was offered without ``--convert-pickle``."""

    code = "pickle_refused"
    http_status = 422


class IntegrityError(LoramgrError):
    """Stored bytes do not match their digest, or a referenced blob is missing."""

    code = "integrity"
    http_status = 500


class DatabaseBehind(LoramgrError):
    """The metadata store's schema is older than this version of loramgr."""

    code = "database_behind"
    http_status = 503


class DatabaseError(LoramgrError):
    """The metadata store could not be reached or refused the operation."""

    code = "database"
    http_status = 503


class Unauthorized(LoramgrError, PermissionError):
    code = "unauthorized"
    http_status = 401


class Forbidden(LoramgrError, PermissionError):
    code = "forbidden"
    http_status = 403


class PayloadTooLarge(LoramgrError):
    code = "payload_too_large"
    http_status = 413


class RequestTimeout(LoramgrError, TimeoutError):
    """A client stopped sending or reading for longer than the server's timeout."""

    code = "request_timeout"
    http_status = 408


class RangeNotSatisfiable(LoramgrError):
    """A download asked for bytes outside the blob."""

    code = "range_not_satisfiable"
    http_status = 416


class RemoteError(LoramgrError, ConnectionError):
    """The remote hub could not be reached or answered something unexpected."""

    code = "remote"
    http_status = 502


def all_error_classes() -> list[type[LoramgrError]]:
    """Every concrete error class, including those defined by other packages (composer)."""
    seen, stack = [], [LoramgrError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen


def error_from_code(code: str, message: str) -> LoramgrError:
    """Rebuild the exception a server raised from its JSON ``code`` and message."""
    for cls in all_error_classes():
        if cls.code == code:
            return cls(message)
    return RemoteError(message)
