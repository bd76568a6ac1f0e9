"""The registry's metadata operations as JSON endpoints; each maps to one ``Registry`` method
and answers with the same records (``AdapterVersion.to_dict()`` and friends).

Registry calls are blocking (SQLAlchemy, file hashing): they run in worker threads.
"""

from __future__ import annotations

from importlib.metadata import version as package_version
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..errors import InvalidArgument, LoramgrError
from ..records import Lineage
from ..bounds import MAX_INT32, check_grace_seconds, is_ascii_number
from ..refs import AdapterName, AdapterRef
from ..tokens import ALL_NAMESPACES
from . import auth
from .limits import read_json


async def call(function, *args, **kwargs):
    return await to_thread.run_sync(lambda: function(*args, **kwargs))


def registry(request: Request):
    return request.app.state.registry


def versions_response(versions, status_code: int = 200) -> JSONResponse:
    return JSONResponse({"versions": [v.to_dict() for v in versions]}, status_code=status_code)


# -- query and body parsing ---------------------------------------------------------------------

def query_int(request: Request, name: str) -> int | None:
    """A query parameter of ASCII digits (``int()`` also reads '١٢' and '1_000'), at most
    ``MAX_INT32``: the store's columns are 32-bit. Raises ``InvalidArgument``."""
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    if not is_ascii_number(value):
        raise InvalidArgument(f"{name} must be a whole number from 0 to {MAX_INT32}, not {value[:40]!r}")
    return int(value)


def query_bool(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise InvalidArgument(f"{name} must be true or false, not {value!r}")
    return value in ("true", "1")


def field(body: dict, name: str, kind: type | tuple[type, ...], default: Any = ..., *, optional: bool = False):
    """``body[name]`` checked to be ``kind`` (or None when ``optional``). Raises ``InvalidArgument``."""
    if name not in body:
        if default is ...:
            raise InvalidArgument(f"the request needs {name!r}")
        return default
    value = body[name]
    if (value is None and optional) or isinstance(value, kind):
        return value
    raise InvalidArgument(f"{name!r} has the wrong type: {type(value).__name__}")


def string_map(value: dict, what: str) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArgument(f"{what} must map names to strings")
    return value


def string_list(value: list, what: str) -> list[str]:
    if not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{what} must be a list of strings")
    return value


def lineage_from(value: dict | None) -> Lineage | None:
    """The lineage of a commit body; ``Lineage.from_dict`` refuses non-finite or non-numeric
    weights and scores with ``InvalidArgument``."""
    if value is None:
        return None
    try:
        return Lineage.from_dict(value)
    except LoramgrError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise InvalidArgument(f"invalid lineage: {str(exc)[:200]}") from None


# -- endpoints ----------------------------------------------------------------------------------

async def info(request: Request) -> JSONResponse:
    """What a client needs to know before it talks: version, access, limits. Also the health check."""
    config = request.app.state.config
    return JSONResponse({"service": "loramgr", "version": package_version("loramgr"),
                         "public_read": config.public_read, "max_upload_bytes": config.max_upload_bytes,
                         "max_json_bytes": config.max_json_bytes})


async def search(request: Request) -> JSONResponse:
    await auth.require_read(request)
    q = request.query_params
    limit = q.get("limit")
    found = await call(
        registry(request).search, base=q.get("base") or None, task=q.getlist("task") or None,
        rank=query_int(request, "rank"), min_rank=query_int(request, "min_rank"),
        max_rank=query_int(request, "max_rank"), target=q.get("target") or None, query=q.get("query") or None,
        source=q.get("source") or None, all_versions=query_bool(request, "all_versions"),
        limit=None if limit == "none" else (query_int(request, "limit") if limit else 100),
        offset=query_int(request, "offset") or 0)
    return versions_response(found)


async def list_adapters(request: Request) -> JSONResponse:
    await auth.require_read(request)
    return versions_response(await call(registry(request).ls, request.query_params.get("namespace") or None))


def path_name(request: Request) -> str:
    """``NS/NAME`` from the path, checked (no ``..``, nothing a file system reads specially)."""
    return str(AdapterName.parse(f"{request.path_params['namespace']}/{request.path_params['name']}"))


async def list_versions(request: Request) -> JSONResponse:
    name = path_name(request)
    await auth.require_read(request)
    return versions_response(await call(registry(request).versions, name))


async def commit_version(request: Request) -> JSONResponse:
    """Register the next version from uploaded blobs; the adapter is validated as a local push."""
    name = path_name(request)
    await auth.require_write(request, AdapterName.parse(name).namespace)
    body = await read_json(request, request.app.state.config.max_json_bytes)
    version = await call(
        registry(request).push_stored, string_map(field(body, "files", dict), "files"), name=name,
        task=field(body, "task", str), base=field(body, "base", str, None, optional=True),
        tags=string_list(field(body, "tags", list, []), "tags"),
        description=field(body, "description", str, None, optional=True),
        source=field(body, "source", str, "pushed"),
        lineage=lineage_from(field(body, "lineage", dict, None, optional=True)))
    return JSONResponse(version.to_dict(), status_code=201)


def path_ref(request: Request) -> AdapterRef:
    return AdapterRef.parse(request.path_params["ref"])


async def show(request: Request) -> JSONResponse:
    ref = path_ref(request)
    await auth.require_read(request)
    return JSONResponse((await call(registry(request).show, str(ref))).to_dict())


async def remove(request: Request) -> JSONResponse:
    ref = path_ref(request)
    await auth.require_write(request, ref.adapter.namespace)
    return JSONResponse((await call(registry(request).rm, str(ref))).to_dict())


async def tag(request: Request) -> JSONResponse:
    ref = path_ref(request)
    await auth.require_write(request, ref.adapter.namespace)
    body = await read_json(request, request.app.state.config.max_json_bytes)
    return JSONResponse((await call(registry(request).tag, str(ref), field(body, "tag", str))).to_dict())


async def verify(request: Request) -> JSONResponse:
    ref = request.query_params.get("ref") or None
    if ref is not None:
        AdapterRef.parse(ref)
        await auth.require_read(request)
    else:
        # Re-hashing the whole store is heavy maintenance, like gc: not for anonymous callers.
        await auth.require_write(request, ALL_NAMESPACES)
    return JSONResponse((await call(registry(request).verify, ref)).to_dict())


async def gc(request: Request) -> JSONResponse:
    await auth.require_write(request, ALL_NAMESPACES)
    body = await read_json(request, request.app.state.config.max_json_bytes)
    options = {"dry_run": bool(field(body, "dry_run", bool, False))}
    if "grace_seconds" in body:
        options["grace_seconds"] = check_grace_seconds(field(body, "grace_seconds", (int, float)))
    return JSONResponse((await call(registry(request).gc, **options)).to_dict())


async def openapi(request: Request) -> JSONResponse:
    from .openapi import openapi_document

    return JSONResponse(openapi_document())


ROUTES = [
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/api/info", info, methods=["GET"]),
    Route("/api/search", search, methods=["GET"]),
    Route("/api/adapters", list_adapters, methods=["GET"]),
    Route("/api/adapters/{namespace}/{name}/versions", list_versions, methods=["GET"]),
    Route("/api/adapters/{namespace}/{name}/versions", commit_version, methods=["POST"]),
    Route("/api/versions/{ref:path}/tags", tag, methods=["POST"]),
    Route("/api/versions/{ref:path}", show, methods=["GET"]),
    Route("/api/versions/{ref:path}", remove, methods=["DELETE"]),
    Route("/api/verify", verify, methods=["GET"]),
    Route("/api/gc", gc, methods=["POST"]),
]
