"""The OpenAPI 3.1 description served at ``/openapi.json``, written by hand (the app is plain
Starlette). A test checks that every route of the app is described here and nothing else.
"""

from __future__ import annotations

from importlib.metadata import version as package_version

from ..errors import HUB_ERRORS

_JSON = "application/json"
_BLOB = "application/octet-stream"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


_ERROR_TEXTS = {400: "invalid name, argument or body", 401: "no token, an unknown or a revoked one",
                403: "the token may not write here", 404: "no such adapter, version, tag or blob",
                408: "the client stopped sending", 413: "the body is over the hub's limit",
                416: "the range is outside the blob", 422: "not a valid PEFT LoRA adapter",
                503: "the metadata store failed"}


def _errors(*statuses: int) -> dict:
    return {str(s): {"$ref": f"#/components/responses/Error{s}"} for s in statuses}


def _param(name: str, where: str, schema: dict, description: str, required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema,
            "description": description}


_STRING = {"type": "string"}
_INT = {"type": "integer"}
_REF_PARAM = _param("ref", "path", _STRING, "NS/NAME, NS/NAME@VERSION or NS/NAME:TAG")
_NAME_PARAMS = [_param("namespace", "path", _STRING, "namespace"), _param("name", "path", _STRING, "adapter name")]
_DIGEST_PARAM = _param("digest", "path", {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "sha256 of the blob")
_VERSIONS = _json({"type": "object",
                   "properties": {"versions": {"type": "array", "items": _ref("AdapterVersion")}}},
                  "versions, newest first")
_READ = [{}, {"bearer": []}]  # public-read hubs need no token
_WRITE = [{"bearer": []}]


def _paths() -> dict:
    return {
        "/openapi.json": {"get": {"summary": "This description", "security": [{}],
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI document")}}},
        "/api/info": {"get": {"summary": "Version, access mode and limits (also the health check)",
                              "security": [{}], "responses": {"200": _json(_ref("Info"), "hub info")}}},
        "/api/search": {"get": {
            "summary": "Versions matching every filter, newest first (registry.search)", "security": _READ,
            "parameters": [_param("base", "query", _STRING, "base model, exactly"),
                           _param("task", "query", {"type": "array", "items": _STRING}, "task (repeatable)"),
                           _param("rank", "query", _INT, "rank, exactly"),
                           _param("min_rank", "query", _INT, "rank at least"),
                           _param("max_rank", "query", _INT, "rank at most"),
                           _param("target", "query", _STRING, "a target module name"),
                           _param("query", "query", _STRING, "words, each the start of a word in name, task, description"),
                           _param("source", "query", {"enum": ["pushed", "composed", "imported"]}, "how made"),
                           _param("all_versions", "query", {"type": "boolean"}, "not only each adapter's newest"),
                           _param("limit", "query", {"oneOf": [_INT, {"const": "none"}]}, "default 100")],
            "responses": {"200": _VERSIONS, **_errors(400, 401)}}},
        "/api/adapters": {"get": {
            "summary": "The latest version of every adapter (registry.ls)", "security": _READ,
            "parameters": [_param("namespace", "query", _STRING, "only this namespace")],
            "responses": {"200": _VERSIONS, **_errors(400, 401)}}},
        "/api/adapters/{namespace}/{name}/versions": {
            "parameters": _NAME_PARAMS,
            "get": {"summary": "Every version of one adapter (registry.versions)", "security": _READ,
                    "responses": {"200": _VERSIONS, **_errors(400, 401, 404)}},
            "post": {"summary": "Register the next version from uploaded blobs (the push commit)",
                     "security": _WRITE,
                     "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("Commit")}}},
                     "responses": {"201": _json(_ref("AdapterVersion"), "the new version"),
                                   **_errors(400, 401, 403, 413, 422, 503)}}},
        "/api/versions/{ref}": {
            "parameters": [_REF_PARAM],
            "get": {"summary": "One version (registry.show)", "security": _READ,
                    "responses": {"200": _json(_ref("AdapterVersion"), "the version"), **_errors(400, 401, 404)}},
            "delete": {"summary": "Remove one version (registry.rm)", "security": _WRITE,
                       "responses": {"200": _json(_ref("AdapterVersion"), "the removed version"),
                                     **_errors(400, 401, 403, 404)}}},
        "/api/versions/{ref}/tags": {
            "parameters": [_REF_PARAM],
            "post": {"summary": "Point a tag at the version (registry.tag)", "security": _WRITE,
                     "requestBody": {"required": True, "content": {_JSON: {"schema": {
                         "type": "object", "required": ["tag"], "properties": {"tag": _STRING}}}}},
                     "responses": {"200": _json(_ref("AdapterVersion"), "the tagged version"),
                                   **_errors(400, 401, 403, 404)}}},
        "/api/verify": {"get": {
            "summary": "Re-hash the blobs of one version (a read), or of all (needs a write token for '*')",
            "security": _READ, "parameters": [_param("ref", "query", _STRING, "one version; default all")],
            "responses": {"200": _json({"type": "object"}, "VerifyReport"), **_errors(400, 401, 403, 404)}}},
        "/api/gc": {"post": {
            "summary": "Remove unreferenced blobs (registry.gc); needs a write token for '*'", "security": _WRITE,
            "requestBody": {"content": {_JSON: {"schema": {"type": "object", "properties": {
                "grace_seconds": {"type": "number"}, "dry_run": {"type": "boolean"}}}}}},
            "responses": {"200": _json({"type": "object"}, "GcReport"), **_errors(400, 401, 403)}}},
        **_hf_paths(),
        "/api/blobs/{digest}": {
            "parameters": [_DIGEST_PARAM],
            "head": {"summary": "Whether the hub has the blob, and its size", "security": _READ,
                     "responses": {"200": {"description": "present"}, **_errors(400, 401, 404)}},
            "get": {"summary": "The blob's bytes; Range (one range) and If-Range answer 206", "security": _READ,
                    "parameters": [_param("Range", "header", _STRING, "bytes=START- or bytes=START-END"),
                                   _param("If-Range", "header", _STRING, "the ETag (quoted digest)")],
                    "responses": {"200": {"description": "the whole blob", "content": {_BLOB: {}}},
                                  "206": {"description": "the requested range", "content": {_BLOB: {}}},
                                  **_errors(400, 401, 404, 416)}},
            "put": {"summary": "Upload a blob; stored only if its bytes hash to the digest", "security": _WRITE,
                    "requestBody": {"required": True, "content": {_BLOB: {}}},
                    "responses": {"201": _json({"type": "object", "properties": {
                        "digest": _STRING, "size": _INT}}, "stored"), **_errors(400, 401, 403, 408, 413)}}},
    }


_HF_REPO = "/api/models/{namespace}/{name}"
_REVISION_PARAM = _param("revision", "path", _STRING,
                         "main (the latest version), a version number, a tag or a commit id")
_HF_ERRORS = {"description": "an error as HF clients read it: X-Error-Code (RepoNotFound, RevisionNotFound, "
                             "EntryNotFound) and X-Error-Message headers",
              "content": {_JSON: {"schema": _ref("HfError")}}}


def _hf(summary: str, security: list, responses: dict, **more) -> dict:
    return {"summary": summary, "tags": ["huggingface"], "security": security,
            "responses": {**responses, "4XX": _HF_ERRORS}, **more}


def _hf_paths() -> dict:
    """The Hugging Face Hub API (``hf_api``), in the shapes huggingface_hub reads."""
    info = _hf("Model info of a version (HfApi.model_info)", _READ,
               {"200": _json(_ref("HfModelInfo"), "model info; sha is the version's commit id")},
               parameters=[_param("blobs", "query", {"type": "boolean"}, "add size, blobId and lfs to siblings")])
    tree = _hf("The files of a version (HfApi.list_repo_tree)", _READ,
               {"200": _json({"type": "array", "items": {"type": "object"}}, "tree entries, all files at the root")},
               parameters=[_param("recursive", "query", {"type": "boolean"}, "ignored: there are no folders"),
                           _param("expand", "query", {"type": "boolean"}, "add lastCommit")])
    ndjson = "application/x-ndjson"
    return {
        "/api/repos/create": {"post": _hf(
            "Check a new repo's name and token (HfApi.create_repo); the adapter appears with its first commit",
            _WRITE, {"200": _json({"type": "object", "properties": {"url": _STRING}}, "the repo URL"),
                     "409": _json(_ref("HfError"), "the adapter exists (create_repo(exist_ok=True) accepts it)")},
            requestBody={"required": True, "content": {_JSON: {"schema": {"type": "object", "properties": {
                "name": _STRING, "organization": _STRING, "type": {"const": "model"},
                "private": {"type": "boolean"}}}}}})},
        "/api/validate-yaml": {"post": _hf(
            "Check README.md's YAML metadata block, as upload_folder does first", _READ,
            {"200": _json({"type": "object"}, "valid")},
            requestBody={"required": True, "content": {_JSON: {"schema": {"type": "object", "properties": {
                "content": _STRING, "repoType": _STRING}}}}})},
        _HF_REPO: {"parameters": _NAME_PARAMS, "get": info},
        _HF_REPO + "/revision/{revision}": {"parameters": [*_NAME_PARAMS, _REVISION_PARAM], "get": info},
        _HF_REPO + "/tree/{revision}": {"parameters": [*_NAME_PARAMS, _REVISION_PARAM], "get": tree},
        _HF_REPO + "/tree/{revision}/{path}": {
            "parameters": [*_NAME_PARAMS, _REVISION_PARAM, _param("path", "path", _STRING, "a folder")],
            "get": _hf("A folder of a version: always EntryNotFound, an adapter has none", _READ, {})},
        _HF_REPO + "/preupload/{revision}": {"parameters": [*_NAME_PARAMS, _REVISION_PARAM], "post": _hf(
            "How to send each file: always 'regular' (base64 in the commit); non-adapter files 'shouldIgnore'; "
            "a file identical to the head's gets its oid (not sent again). revision: main", _WRITE,
            {"200": _json({"type": "object"}, "files with uploadMode, shouldIgnore, oid")},
            requestBody={"required": True, "content": {_JSON: {"schema": {"type": "object"}}}})},
        _HF_REPO + "/commit/{revision}": {"parameters": [*_NAME_PARAMS, _REVISION_PARAM], "post": _hf(
            "Apply a commit to the latest version's files and register the result as the next version, after "
            "the same validation as a push. Task: a 'task: NAME' line in the description, else loramgr.task in "
            "README.md's metadata, else the previous version's, else 'unspecified'. revision: main", _WRITE,
            {"200": _json({"type": "object", "properties": {"commitOid": _STRING, "commitUrl": _STRING}},
                          "the new version's commit (the head's when nothing changed)")},
            requestBody={"required": True, "content": {ndjson: {"schema": {"type": "string"}}}})},
        "/{namespace}/{name}/resolve/{revision}/{path}": {
            "parameters": [*_NAME_PARAMS, _REVISION_PARAM, _param("path", "path", _STRING, "file name")],
            "head": _hf("A file's metadata: X-Repo-Commit, ETag, X-Linked-Etag, X-Linked-Size", _READ,
                        {"200": {"description": "the file is there"},
                         "307": {"description": "a revision other than a commit id: the commit's URL"}}),
            "get": _hf("A file's bytes; Range (one range) answers 206", _READ,
                       {"200": {"description": "the file", "content": {_BLOB: {}}},
                        "206": {"description": "the requested range", "content": {_BLOB: {}}},
                        "307": {"description": "a revision other than a commit id: the commit's URL"}},
                       parameters=[_param("Range", "header", _STRING, "bytes=START- or bytes=START-END")])},
    }


def _schemas() -> dict:
    version_file = {"type": "object", "properties": {"name": _STRING, "digest": _STRING, "size": _INT}}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message", "details"],
            "properties": {"code": {"type": "string", "enum": sorted(
                set(HUB_ERRORS) | {"unknown_endpoint", "method_not_allowed", "internal"})},
                "message": _STRING,
                "details": {"type": "object", "description": "what the error names: ref, digest, path, ..."}}}}},
        "Info": {"type": "object", "properties": {"service": _STRING, "version": _STRING,
                                                  "public_read": {"type": "boolean"}, "max_upload_bytes": _INT,
                                                  "max_json_bytes": _INT}},
        "AdapterVersion": {"type": "object", "properties": {
            "ref": _STRING, "namespace": _STRING, "name": _STRING, "number": _INT, "base_model": _STRING,
            "task": _STRING, "rank": _INT, "alpha": {"type": "number"},
            "target_modules": {"type": "array", "items": _STRING}, "task_type": {"type": ["string", "null"]},
            "dtype": _STRING, "param_count": _INT, "byte_size": _INT, "digest": _STRING, "source": _STRING,
            "description": {"type": ["string", "null"]}, "created_at": _STRING,
            "tags": {"type": "array", "items": _STRING}, "files": {"type": "array", "items": version_file},
            "lineage": {"type": ["object", "null"]}}},
        "HfError": {"type": "object", "required": ["error"], "properties": {"error": _STRING}},
        "HfModelInfo": {"type": "object", "properties": {
            "id": _STRING, "sha": _STRING, "lastModified": _STRING, "private": {"type": "boolean"},
            "library_name": _STRING, "tags": {"type": "array", "items": _STRING},
            "siblings": {"type": "array", "items": {"type": "object"}}, "loramgr": _ref("AdapterVersion")}},
        "Commit": {"type": "object", "required": ["task", "files"], "properties": {
            "task": _STRING, "base": {"type": ["string", "null"]}, "tags": {"type": "array", "items": _STRING},
            "description": {"type": ["string", "null"]},
            "files": {"type": "object", "additionalProperties": _STRING,
                      "description": "file name -> sha256 of a blob already uploaded"},
            "source": {"enum": ["pushed", "composed", "imported"]}, "lineage": {"type": ["object", "null"]}}},
    }


def openapi_document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "loramgr hub", "version": package_version("loramgr"),
                 "description": "A registry of PEFT LoRA adapters. Errors: " + '{"error": {"code", "message"}}.'},
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": {f"Error{s}": _json(_ref("Error"), text) for s, text in _ERROR_TEXTS.items()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a token from `loramgr token create`"}},
        },
    }
