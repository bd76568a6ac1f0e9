"""The Hugging Face Hub HTTP API, for adapters: unmodified Hugging Face tools (huggingface_hub,
transformers, PEFT) use this hub when pointed at it with ``HF_ENDPOINT=http://HOST:PORT`` or
``endpoint=``. The endpoints and headers are those huggingface_hub 2.x uses (file_download.py,
hf_api.py, _snapshot_download.py, _commit_api.py, _upload_pipeline.py):

- ``GET /api/models/{ns}/{name}[/revision/{rev}]``: model info (``sha``, ``siblings``, ...;
  ``?blobs=true`` adds sizes and LFS digests), what ``model_info`` and ``snapshot_download`` read.
- ``GET /api/models/{ns}/{name}/tree/{rev}[/{path}]``: the files, what ``list_repo_tree`` reads.
- ``GET|HEAD /{ns}/{name}/resolve/{rev}/{file}``: the bytes, with ``X-Repo-Commit``, ``ETag``
  and ``X-Linked-Etag`` (the sha256), ``Content-Length`` and ``X-Linked-Size``,
  ``Accept-Ranges`` (``Range`` answers 206). A revision that is not a commit id is answered with
  a 307 to the URL of its commit, so the HEAD huggingface_hub makes and the GET that follows
  read the same version even when a push lands in between.
- ``POST /api/repos/create``, ``POST /api/validate-yaml``, ``POST .../preupload/{rev}`` (every
  file "regular", non-adapter files "shouldIgnore") and ``POST .../commit/{rev}`` (NDJSON): what
  ``upload_folder`` and ``create_commit`` call. A commit becomes the next version; see
  ``hf_commit``.

Revisions: ``main`` (the latest version), a version number (``2``), a tag (``stable``) or a
commit id. A version's commit id (``commit_id``) is 40 hex digits, stable, and different for
every version, even two with identical files.

Errors use the shape HF clients surface: ``X-Error-Code`` (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``, which huggingface_hub turns into its exception classes)
and ``X-Error-Message`` headers, and a ``{"error": "<message>"}`` body. The hub's own endpoints
keep ``{"error": {"code", "message"}}``.

Tokens are the hub's (``loramgr token create``), sent as HF tools send theirs (``token=`` or
``HF_TOKEN``). HF tools also send a huggingface.co token on their own, from ``hf auth login``;
it is not one of ours, so reads treat a token without the ``lmt_`` prefix as no token, and
writes refuse it with a message saying which token to use.
"""

from __future__ import annotations

import functools
import hashlib
import re
from urllib.parse import quote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..adapter import ADAPTER_FILES, PICKLE_FILE, WEIGHTS_FILE
from ..bounds import is_ascii_number
from ..digests import sha256_bytes
from ..errors import (AdapterNotFound, InvalidAdapter, InvalidArgument, InvalidName, LoramgrError, PickleRefused,
                      Unauthorized)
from ..hf_card import PIPELINE_TAGS, split_card
from ..records import AdapterVersion, VersionFileInfo
from ..refs import AdapterName, AdapterRef
from ..tokens import SECRET_PREFIX
from . import auth
from .blob_routes import _pieces, etag, requested_range
from .hf_commit import PICKLE_MESSAGE, commit_to_registry, kept_file, read_commit_draining
from .limits import read_json, store_upload
from .routes import call, path_name, registry

COMMIT_ID = re.compile(r"[0-9a-f]{40}")
MAIN = "main"
_LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\nsize {size}\n"


# -- versions as commits ------------------------------------------------------------------------

def commit_id(version: AdapterVersion) -> str:
    """The commit id HF clients see for a version: 40 hex digits, the same on every request.
    Made from the name and number as well as the digest, so two versions with identical files
    are still two commits (clients cache snapshots by commit id)."""
    text = f"loramgr {version.namespace}/{version.name}@{version.number} {version.digest}"
    return sha256_bytes(text)[:40]


def _versions(reg, name: str) -> list[AdapterVersion]:
    try:
        return reg.versions(name)
    except AdapterNotFound:
        raise AdapterNotFound(f"no model repo {name} on this hub", hf_code="RepoNotFound") from None


def find_version(reg, name: str, revision: str) -> AdapterVersion:
    """The version ``revision`` names (blocking). Raises ``AdapterNotFound`` with the HF code
    ``RepoNotFound`` or ``RevisionNotFound``."""
    if COMMIT_ID.fullmatch(revision):
        for version in _versions(reg, name):
            if commit_id(version) == revision:
                return version
    else:
        try:
            # The rule: ASCII digits name a version number (a tag cannot be only digits).
            ref = name if revision == MAIN else (f"{name}@{revision}" if is_ascii_number(revision)
                                                 else f"{name}:{revision}")
            return reg.show(str(AdapterRef.parse(ref)))
        except (AdapterNotFound, InvalidName):
            _versions(reg, name)  # a missing repo is RepoNotFound, not RevisionNotFound
    raise AdapterNotFound(f"{name} has no revision {revision!r}: use main, a version number, a tag or a commit id",
                          hf_code="RevisionNotFound")


def head(reg, name: str) -> AdapterVersion | None:
    """The latest version of ``name``, None when it has none (yet)."""
    try:
        return reg.show(name)
    except AdapterNotFound:
        return None


# -- JSON shapes --------------------------------------------------------------------------------

def hf_date(iso: str) -> str:
    """``2026-01-31T12:00:00+00:00`` as the Hub writes dates (huggingface_hub parses only this)."""
    return iso.replace("+00:00", "")[:19] + ".000Z" if iso else "1970-01-01T00:00:00.000Z"


def lfs_fields(file: VersionFileInfo) -> tuple[str, dict]:
    """``(git oid, lfs)`` of a file, described as the Hub describes an LFS file: the oid is the
    git blob id of its pointer, ``lfs`` holds its sha256 and size."""
    pointer = _LFS_POINTER.format(digest=file.digest, size=file.size).encode()
    oid = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
    return oid, {"oid": file.digest, "size": file.size, "pointerSize": len(pointer)}


def model_tags(version: AdapterVersion) -> list[str]:
    return ["peft", "safetensors", "lora", "loramgr", f"base_model:adapter:{version.base_model}"]


def model_info_json(version: AdapterVersion, *, private: bool, blobs: bool) -> dict:
    siblings = []
    for file in version.files:
        sibling = {"rfilename": file.name}
        if blobs:
            oid, lfs = lfs_fields(file)
            sibling.update(size=file.size, blobId=oid, lfs={"sha256": lfs["oid"], "size": lfs["size"],
                                                            "pointerSize": lfs["pointerSize"]})
        siblings.append(sibling)
    return {
        "id": version.adapter, "modelId": version.adapter, "author": version.namespace, "sha": commit_id(version),
        "lastModified": hf_date(version.created_at), "createdAt": hf_date(version.created_at),
        "private": private, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
        "library_name": "peft", "tags": model_tags(version), "pipeline_tag": PIPELINE_TAGS.get(version.task_type or ""),
        "cardData": {"library_name": "peft", "base_model": version.base_model, "base_model_relation": "adapter",
                     "tags": ["lora", "loramgr"]},
        "siblings": siblings, "spaces": [], "usedStorage": version.byte_size,
        # Extra keys are kept by huggingface_hub's ModelInfo: model_info(...).loramgr is the record.
        "loramgr": version.to_dict(),
    }


def tree_entry(version: AdapterVersion, file: VersionFileInfo, *, expand: bool) -> dict:
    oid, lfs = lfs_fields(file)
    entry = {"type": "file", "oid": oid, "size": file.size, "path": file.name, "lfs": lfs}
    if expand:
        entry["lastCommit"] = {"id": commit_id(version), "title": f"loramgr {version.ref}",
                               "date": hf_date(version.created_at)}
    return entry


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# -- errors and tokens --------------------------------------------------------------------------

def _header_text(text: str) -> str:
    # ASCII, escaped: clients differ in how they decode other header bytes (UTF-8 or latin-1).
    return text.encode("ascii", "backslashreplace").decode("ascii")[:2000]


def hf_error(error: LoramgrError) -> JSONResponse:
    """``error`` as HF clients read one: ``X-Error-Code`` / ``X-Error-Message`` headers and a
    ``{"error": message}`` body, with the error's HTTP status."""
    message = " ".join(error.message.split())
    headers = {"X-Error-Message": _header_text(message)}
    if error.details.get("hf_code"):
        headers["X-Error-Code"] = error.details["hf_code"]
    if error.details.get("commit"):
        headers["X-Repo-Commit"] = error.details["commit"]
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="loramgr"'
    return JSONResponse({"error": message}, status_code=error.http_status, headers=headers)


def hf_endpoint(handler):
    """Render the ``LoramgrError`` a handler raises in the HF shape."""
    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except LoramgrError as error:
            return hf_error(error)

    return endpoint


def _foreign_token(request: Request) -> bool:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(secret.strip()) and not secret.strip().startswith(SECRET_PREFIX)


async def hf_read(request: Request) -> None:
    """As ``auth.require_read``, except that a token that is not this hub's kind is ignored."""
    if _foreign_token(request):
        if not request.app.state.config.public_read:
            raise Unauthorized(f"this hub needs one of its own tokens ({SECRET_PREFIX}...) to read, not a "
                               f"huggingface.co token: pass token=... or set HF_TOKEN; {auth.CREATE_HINT}")
        return
    await auth.require_read(request)


async def hf_write(request: Request, namespace: str) -> None:
    """As ``auth.require_write``, with a clear refusal of a huggingface.co token."""
    if _foreign_token(request):
        raise Unauthorized(f"writing needs one of this hub's tokens ({SECRET_PREFIX}...), not a huggingface.co "
                           f"token: pass token=... or set HF_TOKEN; {auth.CREATE_HINT}")
    await auth.require_write(request, namespace)


# -- reading ------------------------------------------------------------------------------------

def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true")


@hf_endpoint
async def model_info(request: Request) -> JSONResponse:
    name = path_name(request)
    await hf_read(request)
    version = await call(find_version, registry(request), name, request.path_params.get("revision", MAIN))
    return JSONResponse(model_info_json(version, private=not request.app.state.config.public_read,
                                        blobs=_flag(request, "blobs")))


@hf_endpoint
async def tree(request: Request) -> JSONResponse:
    name = path_name(request)
    await hf_read(request)
    version = await call(find_version, registry(request), name, request.path_params["revision"])
    folder = request.path_params.get("path", "").strip("/")
    if folder:
        # An adapter's files are all at the root: there are no folders to list.
        raise AdapterNotFound(f"{version.ref} has no folder {folder!r}", hf_code="EntryNotFound",
                              commit=commit_id(version))
    return JSONResponse([tree_entry(version, f, expand=_flag(request, "expand")) for f in version.files])


@hf_endpoint
async def resolve(request: Request) -> Response:
    name = path_name(request)
    await hf_read(request)
    revision, filename = request.path_params["revision"], request.path_params["path"]
    version = await call(find_version, registry(request), name, revision)
    commit = commit_id(version)
    file = next((f for f in version.files if f.name == filename), None)
    if file is None:
        raise AdapterNotFound(f"{version.ref} has no file {filename!r}", hf_code="EntryNotFound", commit=commit)
    linked = {"X-Repo-Commit": commit, "X-Linked-Etag": etag(file.digest), "X-Linked-Size": str(file.size)}
    if revision != commit:
        # Relative, as the Hub's own same-host redirects: huggingface_hub before 1.0 follows
        # only those. The X-Linked-* headers are there too, as on the Hub's LFS redirects.
        pinned = f"/{name}/resolve/{commit}/{quote(filename)}" + (f"?{request.url.query}" if request.url.query else "")
        return Response(status_code=307, headers={"Location": pinned, "Cache-Control": "no-cache", **linked})
    cache = "public" if request.app.state.config.public_read else "private"
    headers = {**linked, "ETag": etag(file.digest), "Content-Length": str(file.size), "Accept-Ranges": "bytes",
               "Content-Disposition": f'inline; filename="{quote(filename)}"',
               "Cache-Control": f"{cache}, max-age=31536000, immutable"}
    if request.method == "HEAD":
        return Response(headers=headers, media_type="application/octet-stream")
    span = requested_range(request, file.digest, file.size)
    start, end = span or (0, file.size)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{file.size}"
        headers["Content-Length"] = str(end - start)
    pieces = _pieces(registry(request).blobs.read_chunks(file.digest, start, end))
    return StreamingResponse(pieces, status_code=status, headers=headers, media_type="application/octet-stream")


# -- writing ------------------------------------------------------------------------------------

@hf_endpoint
async def create_repo(request: Request) -> JSONResponse:
    """Check the name and the token. The adapter itself appears with its first commit."""
    body = await read_json(request, request.app.state.config.max_json_bytes)
    repo_type = body.get("type") or "model"
    if repo_type != "model":
        raise InvalidArgument(f"this hub holds adapters, as model repos: it has no {repo_type} repos")
    if not isinstance(body.get("organization"), str) or not isinstance(body.get("name"), str):
        raise InvalidArgument("give the repo id as NAMESPACE/NAME")
    adapter = AdapterName.parse(f"{body['organization']}/{body['name']}")
    await hf_write(request, adapter.namespace)
    if (body.get("private") is True or body.get("visibility") == "private") and request.app.state.config.public_read:
        raise InvalidArgument("this hub is public-read: every adapter on it can be read by anyone. Use a hub "
                              "served with `loramgr serve --private-read` for private adapters")
    url = f"{base_url(request)}/{adapter}"
    if await call(head, registry(request), str(adapter)) is not None:
        message = "You already created this model repo"
        return JSONResponse({"error": message, "url": url}, status_code=409, headers={"X-Error-Message": message})
    return JSONResponse({"url": url, "name": str(adapter)})


@hf_endpoint
async def validate_yaml(request: Request) -> JSONResponse:
    """Check a README.md's metadata block, as ``upload_folder`` asks before it uploads one."""
    await hf_read(request)
    body = await read_json(request, request.app.state.config.max_json_bytes)
    content = body.get("content")
    if not isinstance(content, str):
        raise InvalidArgument("the request needs 'content': the text of README.md")
    try:
        split_card(content)
    except InvalidArgument as exc:
        return JSONResponse({"error": exc.message, "errors": [{"message": exc.message}], "warnings": []},
                            status_code=400, headers={"X-Error-Message": _header_text(exc.message)})
    return JSONResponse({"errors": [], "warnings": []})


def _check_commit_target(request: Request) -> None:
    if request.path_params["revision"] != MAIN:
        raise InvalidArgument(f"commits go to {MAIN!r}: each one becomes the next version; "
                              f"{request.path_params['revision']!r} is not a branch here")
    if _flag(request, "create_pr"):
        raise InvalidArgument("this hub has no pull requests: commit to main, which makes the next version")


def _git_blob_id(blobs, file: VersionFileInfo) -> str:
    digest = hashlib.sha1(b"blob %d\0" % file.size)
    for chunk in blobs.read_chunks(file.digest):
        digest.update(chunk)
    return digest.hexdigest()


def preupload_answer(reg, name: str, files: list[dict]) -> dict:
    """The preupload answer for ``files`` (blocking). Every file is "regular" (base64 in the
    commit: the one way every huggingface_hub client can send bytes here, hf_xet installed or
    not). Files the hub would not keep are "shouldIgnore", so they are never sent; a file
    identical to the head's gets the head's oid, so it is not sent again. Raises
    ``PickleRefused`` when the only weights are pickled, ``InvalidAdapter`` when none of the
    files is an adapter file and the repo is new."""
    parent = head(reg, name)
    parent_files = {f.name: f for f in parent.files} if parent else {}
    paths = [f["path"] for f in files]
    if PICKLE_FILE in paths and WEIGHTS_FILE not in paths and WEIGHTS_FILE not in parent_files:
        raise PickleRefused(f"{name}: {PICKLE_MESSAGE}")
    if parent is None and not any(kept_file(p) for p in paths):
        raise InvalidAdapter(f"{name}: none of the files is an adapter file; this hub keeps "
                             f"{', '.join(ADAPTER_FILES)} at the root of the repo")
    answer = []
    for f in files:
        known = parent_files.get(f["path"])
        oid = _git_blob_id(reg.blobs, known) if known is not None and known.size == f["size"] else None
        answer.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": not kept_file(f["path"]),
                       "oid": oid})
    return {"files": answer, "commitOid": commit_id(parent) if parent else None}


@hf_endpoint
async def preupload(request: Request) -> JSONResponse:
    name = path_name(request)
    await hf_write(request, AdapterName.parse(name).namespace)
    _check_commit_target(request)
    body = await read_json(request, request.app.state.config.max_json_bytes)
    files = body.get("files")
    if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("size"), int) for f in files):
        raise InvalidArgument("the request needs 'files': a list of {path, size, sample}")
    return JSONResponse(await call(preupload_answer, registry(request), name, files))


def register_commit(reg, name: str, commit) -> tuple[AdapterVersion, bool]:
    """``hf_commit.commit_to_registry`` (its messages name the repo: ``push_stored`` labels them)."""
    return commit_to_registry(reg, name, commit, head=head, commit_id=commit_id)


@hf_endpoint
async def commit(request: Request) -> Response:
    """Apply an NDJSON commit to the head and register the result as the next version."""
    name = path_name(request)
    await hf_write(request, AdapterName.parse(name).namespace)
    _check_commit_target(request)
    reg, config = registry(request), request.app.state.config

    def read(chunks):
        return read_commit_draining(chunks, reg.blobs, max_file_bytes=config.max_upload_bytes)

    try:
        # base64 makes a file 4/3 its size: room for the largest file and the small ones beside it.
        request_commit = await store_upload(request, read, 2 * config.max_upload_bytes)
    except ClientDisconnect:
        return Response(status_code=400)
    version, _created = await call(register_commit, reg, name, request_commit)
    commit_oid = commit_id(version)
    return JSONResponse({"success": True, "commitOid": commit_oid,
                         "commitUrl": f"{base_url(request)}/{name}/commit/{commit_oid}",
                         "hookOutput": "", "pullRequestUrl": None, "loramgr": version.to_dict()})


_REPO = "/api/models/{namespace}/{name}"
ROUTES = [
    Route("/api/repos/create", create_repo, methods=["POST"]),
    Route("/api/validate-yaml", validate_yaml, methods=["POST"]),
    Route(_REPO, model_info, methods=["GET"]),
    Route(_REPO + "/revision/{revision}", model_info, methods=["GET"]),
    Route(_REPO + "/tree/{revision}", tree, methods=["GET"]),
    Route(_REPO + "/tree/{revision}/{path:path}", tree, methods=["GET"]),
    Route(_REPO + "/preupload/{revision}", preupload, methods=["POST"]),
    Route(_REPO + "/commit/{revision}", commit, methods=["POST"]),
    Route("/{namespace}/{name}/resolve/{revision}/{path:path}", resolve, methods=["GET", "HEAD"]),
]
