"""Every error loramgr raises on purpose.

Each class has a stable ``code`` (used by the CLI's exit table, the HTTP API's JSON error body
and the client that turns responses back into exceptions) and the HTTP status the server
answers with. Classes also inherit the matching builtin, so ``except LookupError`` works.
An error carries its details (``ref``, ``digest``, ``path``, ...) as keyword arguments: they
travel in the JSON error body and come back on the client's exception.

``HUB_ERRORS`` is the one table from code to class; the client reads it, nothing depends on
which modules happen to be imported. The composer's errors are in ``loramgr.composer.errors``.
"""

from __future__ import annotations

from typing import Mapping


class LoramgrError(Exception):
    """Base class: a problem the user can fix. The message is one line that says how."""

    code = "error"
    http_status = 400

    def __init_subclass__(cls, *, code: str | None = None, http_status: int | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
        if http_status is not None:
            cls.http_status = http_status

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message

    def naming(self, folder, label: str) -> LoramgrError:
        """This error with ``folder`` shown as ``label`` in its message and ``path`` detail: for
        an error raised while reading a scratch copy of what the user named."""
        folder = str(folder)
        details = {k: label + v[len(folder):] if isinstance(v, str) and v.startswith(folder) else v
                   for k, v in self.details.items()}
        return type(self)(self.message.replace(folder, label), **details)

    def public_details(self) -> dict:
        """The details that can travel as JSON: strings, numbers, booleans."""
        return {k: v for k, v in self.details.items() if isinstance(v, (str, int, float, bool)) or v is None}


class InvalidAdapter(LoramgrError, ValueError, code="invalid_adapter", http_status=422):
    """The folder or file is not a valid PEFT LoRA adapter."""


class InvalidName(LoramgrError, ValueError, code="invalid_name", http_status=400):
    """An adapter name, tag or reference that is not allowed."""


class InvalidArgument(LoramgrError, ValueError, code="invalid_argument", http_status=400):
    """A parameter value outside what the operation accepts."""


class AdapterNotFound(LoramgrError, LookupError, code="not_found", http_status=404):
    """No adapter, version or tag matches the reference."""


class DestinationNotEmpty(LoramgrError, FileExistsError, code="destination_not_empty", http_status=409):
    """A pull would overwrite files in a folder that is not empty."""


class PickleRefused(LoramgrError, ValueError, code="pickle_refused", http_status=422):
    """A pickled ``.bin`` checkpoint was offered without ``--convert-pickle``."""


class IntegrityError(LoramgrError, code="integrity", http_status=500):
    """Stored bytes do not match their digest, or a referenced blob is missing."""


class DatabaseBehind(LoramgrError, code="database_behind", http_status=503):
    """The metadata store's schema is older than this version of loramgr."""


class DatabaseError(LoramgrError, code="database", http_status=503):
    """The metadata store could not be reached or refused the operation."""


class Unauthorized(LoramgrError, PermissionError, code="unauthorized", http_status=401):
    """No token, or one the hub does not know."""


class Forbidden(LoramgrError, PermissionError, code="forbidden", http_status=403):
    """A token without the right to write (or read) that namespace."""


class PayloadTooLarge(LoramgrError, code="payload_too_large", http_status=413):
    """An upload over the hub's limit."""


class RequestTimeout(LoramgrError, TimeoutError, code="request_timeout", http_status=408):
    """A client stopped sending or reading for longer than the server's timeout."""


class RangeNotSatisfiable(LoramgrError, code="range_not_satisfiable", http_status=416):
    """A download asked for bytes outside the blob."""


class RemoteError(LoramgrError, ConnectionError, code="remote", http_status=502):
    """The remote hub could not be reached or answered something unexpected."""


def error_table(*classes: type[LoramgrError]) -> dict[str, type[LoramgrError]]:
    """``{code: class}`` for ``classes``. Raises ``ValueError`` when two classes share a code."""
    table: dict[str, type[LoramgrError]] = {}
    for cls in classes:
        if cls.code in table:
            raise ValueError(f"error code {cls.code!r} is used by {table[cls.code].__name__} and {cls.__name__}")
        table[cls.code] = cls
    return table


HUB_ERRORS = error_table(
    LoramgrError, InvalidAdapter, InvalidName, InvalidArgument, AdapterNotFound, DestinationNotEmpty,
    PickleRefused, IntegrityError, DatabaseBehind, DatabaseError, Unauthorized, Forbidden, PayloadTooLarge,
    RequestTimeout, RangeNotSatisfiable, RemoteError)


def all_error_classes() -> list[type[LoramgrError]]:
    """The hub's error classes, from ``HUB_ERRORS``."""
    return list(HUB_ERRORS.values())


def error_from_code(code: str, message: str, details: Mapping | None = None, *,
                    table: Mapping[str, type[LoramgrError]] = HUB_ERRORS) -> LoramgrError:
    """Rebuild the exception a server raised from its JSON ``code``, message and details; a
    code the table does not hold (a newer hub) comes back as ``RemoteError`` with that code in
    its details."""
    # "message" would collide with the constructor's first argument.
    details = {k: v for k, v in (details or {}).items() if isinstance(k, str) and k != "message"}
    cls = table.get(code)
    if cls is None:
        return RemoteError(message, **{**details, "code": code})
    return cls(message, **details)
