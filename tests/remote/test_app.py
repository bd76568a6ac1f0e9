"""The hub app in process (Starlette's TestClient): the error shape, access control, limits,
uploads, ranges and the OpenAPI description."""

from __future__ import annotations

import hashlib
import json

import pytest
from starlette.routing import Route

from loramgr.hub.errors import LoramgrError, all_error_classes
from loramgr.hub.server import ServerConfig, web
from loramgr.hub.server.errors import render_error
from loramgr.hub.server.openapi import openapi_document

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def upload(client, data: bytes, token: str, digest: str | None = None, **kwargs):
    return client.put(f"/api/blobs/{digest or sha256(data)}", content=data, headers=bearer(token), **kwargs)


def push(client, folder, name: str, token: str, **commit):
    files = {}
    for filename in ADAPTER_FILES:
        data = (folder / filename).read_bytes()
        assert upload(client, data, token).status_code == 201
        files[filename] = sha256(data)
    return client.post(f"/api/adapters/{name}/versions", headers=bearer(token),
                       json={"task": "t", "files": files, **commit})


def assert_error(response, status: int, code: str) -> str:
    """The one error shape, exactly: {"error": {"code", "message", "details"}}."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and sorted(body["error"]) == ["code", "details", "message"]
    assert body["error"]["code"] == code and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]["message"]


def stored_blobs(server_home) -> list:
    return sorted(p.name for p in (server_home / "blobs" / "sha256").glob("??/*"))


def leftover_temp_files(server_home) -> list:
    tmp = server_home / "blobs" / "tmp"
    return list(tmp.iterdir()) if tmp.is_dir() else []


# -- the error shape ------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", all_error_classes())
def test_every_error_class_renders_the_one_shape(cls):
    response = render_error(cls("what went wrong", ref="acme/x@1"))
    assert response.status_code == cls.http_status
    assert json.loads(response.body) == {"error": {"code": cls.code, "message": "what went wrong",
                                                   "details": {"ref": "acme/x@1"}}}


def test_errors_over_http_have_the_one_shape(client):
    not_found = client.get("/api/versions/acme/none")
    assert "no adapter named acme/none" in assert_error(not_found, 404, "not_found")
    assert not_found.json()["error"]["details"] == {"ref": "acme/none:latest"}
    assert_error(client.get("/api/versions/acme/x@0"), 400, "invalid_name")
    assert_error(client.get("/api/search", params={"rank": "four"}), 400, "invalid_argument")
    assert_error(client.get("/api/nowhere"), 404, "unknown_endpoint")
    assert_error(client.patch("/api/search"), 405, "method_not_allowed")


# -- access control -------------------------------------------------------------------------------

def test_writes_need_a_token_for_the_namespace(client, tokens, llama_lora, server_home):
    acme = tokens.create("acme")
    response = push(client, llama_lora, "acme/a", acme)
    assert response.status_code == 201 and response.json()["ref"] == "acme/a@1"

    no_token = client.post("/api/adapters/acme/a/versions", json={"task": "t", "files": {}})
    assert "LORAMGR_TOKEN" in assert_error(no_token, 401, "unauthorized")
    assert no_token.headers["www-authenticate"].startswith("Bearer")
    assert_error(client.put(f"/api/blobs/{sha256(b'x')}", content=b"x"), 401, "unauthorized")
    assert_error(client.delete("/api/versions/acme/a@1"), 401, "unauthorized")
    assert_error(client.post("/api/versions/acme/a@1/tags", json={"tag": "x"}), 401, "unauthorized")

    other = tokens.create("other")
    assert "'other', not 'acme'" in assert_error(push(client, llama_lora, "acme/a", other), 403, "forbidden")
    assert_error(client.delete("/api/versions/acme/a@1", headers=bearer(other)), 403, "forbidden")
    reader = tokens.create("acme", write=False)
    assert "read-only" in assert_error(client.delete("/api/versions/acme/a@1", headers=bearer(reader)), 403,
                                       "forbidden")
    assert_error(client.post("/api/gc", headers=bearer(acme), json={}), 403, "forbidden")  # gc needs '*'
    assert_error(client.get("/api/verify", headers=bearer(acme)), 403, "forbidden")  # all of it needs '*'
    assert client.get("/api/verify", params={"ref": "acme/a"}).json()["ok"] is True  # one version: a read
    admin = tokens.create("*")
    assert client.post("/api/gc", headers=bearer(admin), json={"dry_run": True}).status_code == 200
    assert client.get("/api/verify", headers=bearer(admin)).json()["checked_files"] == 2
    tagged = client.post("/api/versions/acme/a@1/tags", headers=bearer(admin), json={"tag": "best"})
    assert tagged.status_code == 200

    tokens.revoke_secret(acme)
    config = (llama_lora / "adapter_config.json").read_bytes()
    assert "revoked" in assert_error(upload(client, config, acme), 401, "unauthorized")
    assert_error(client.post("/api/adapters/acme/a/versions", headers=bearer(acme), json={}), 401, "unauthorized")
    # A dead token is refused even where none is needed: its owner should learn it is dead.
    assert_error(client.get("/api/adapters", headers=bearer(acme)), 401, "unauthorized")
    assert_error(client.get("/api/adapters", headers=bearer("lmt_made-up")), 401, "unauthorized")
    assert_error(client.get("/api/adapters", headers={"Authorization": "Basic abc"}), 401, "unauthorized")
    assert [v["ref"] for v in client.get("/api/adapters").json()["versions"]] == ["acme/a@1"]


def test_private_read_needs_any_valid_token(make_client, tokens, llama_lora):
    client = make_client(ServerConfig(public_read=False))
    writer = tokens.create("acme")
    assert push(client, llama_lora, "acme/a", writer).status_code == 201
    for path in ("/api/adapters", "/api/search", "/api/versions/acme/a", "/api/adapters/acme/a/versions",
                 "/api/verify"):
        assert_error(client.get(path), 401, "unauthorized")
    digest = sha256((llama_lora / "adapter_config.json").read_bytes())
    assert client.get(f"/api/blobs/{digest}").status_code == 401
    reader = tokens.create("someone-else", write=False)  # reading is not scoped to a namespace
    assert client.get("/api/versions/acme/a", headers=bearer(reader)).json()["ref"] == "acme/a@1"
    assert client.get(f"/api/blobs/{digest}", headers=bearer(reader)).content == \
        (llama_lora / "adapter_config.json").read_bytes()
    assert client.get("/api/info").json()["public_read"] is False  # no token needed to learn that


# -- pushes -----------------------------------------------------------------------------------------

def test_commit_validates_like_a_local_push(client, tokens, llama_lora, tmp_path, server_home):
    token = tokens.create("acme")
    config = (llama_lora / "adapter_config.json").read_bytes()
    upload(client, config, token)
    missing = client.post("/api/adapters/acme/a/versions", headers=bearer(token),
                          json={"task": "t", "files": {"adapter_config.json": sha256(config),
                                                       "adapter_model.safetensors": sha256(b"never uploaded")}})
    assert "upload it first" in assert_error(missing, 400, "invalid_argument")

    garbage = b"not a safetensors file at all"
    upload(client, garbage, token)
    invalid = client.post("/api/adapters/acme/a/versions", headers=bearer(token),
                          json={"task": "t", "files": {"adapter_config.json": sha256(config),
                                                       "adapter_model.safetensors": sha256(garbage)}})
    message = assert_error(invalid, 422, "invalid_adapter")
    # The message and the path detail name the adapter, never the server's scratch folder.
    assert message.startswith("acme/a/adapter_model.safetensors: ") and str(server_home) not in message
    assert invalid.json()["error"]["details"]["path"] == "acme/a/adapter_model.safetensors"
    assert_error(client.post("/api/adapters/acme/a/versions", headers=bearer(token), json={"files": {}}),
                 400, "invalid_argument")  # no task
    assert_error(client.post("/api/adapters/acme/a/versions", headers=bearer(token), content=b"[1, 2"),
                 400, "invalid_argument")
    assert client.get("/api/adapters").json()["versions"] == []

    pushed = push(client, llama_lora, "acme/a", token, tags=["stable"], description="d").json()
    assert pushed["ref"] == "acme/a@1" and sorted(pushed["tags"]) == ["latest", "stable"]
    assert {f["name"] for f in pushed["files"]} == set(ADAPTER_FILES)
    # The scratch folder the commit validated in is gone, and was inside the home.
    assert list((server_home / "tmp").iterdir()) == []


def test_tampered_upload_is_rejected_and_nothing_stored(client, tokens, server_home):
    token = tokens.create("acme")
    claimed = sha256(b"the real bytes")
    message = assert_error(upload(client, b"tampered bytes", token, digest=claimed), 400, "invalid_argument")
    assert "nothing was stored" in message
    assert stored_blobs(server_home) == [] and leftover_temp_files(server_home) == []
    assert client.head(f"/api/blobs/{claimed}").status_code == 404
    assert upload(client, b"the real bytes", token).status_code == 201
    assert stored_blobs(server_home) == [claimed]


def test_uploads_over_the_limit_are_413_and_nothing_stored(make_client, tokens, server_home):
    client = make_client(ServerConfig(max_upload_bytes=1000, max_json_bytes=200))
    token = tokens.create("acme")
    data = b"x" * 2000
    assert "limit" in assert_error(upload(client, data, token), 413, "payload_too_large")

    def chunked():  # no Content-Length: the limit is enforced on the bytes that arrive
        for _ in range(4):
            yield b"x" * 500

    assert_error(client.put(f"/api/blobs/{sha256(data)}", content=chunked(), headers=bearer(token)),
                 413, "payload_too_large")
    assert stored_blobs(server_home) == [] and leftover_temp_files(server_home) == []
    assert_error(client.post("/api/adapters/acme/a/versions", headers=bearer(token),
                             json={"task": "t", "description": "d" * 500, "files": {}}), 413, "payload_too_large")
    assert upload(client, b"x" * 1000, token).status_code == 201  # the limit itself is fine


@pytest.mark.parametrize("path", [
    "/api/versions/acme%2F..%2F..%2Fetc",
    "/api/versions/..%2Fetc%2Fpasswd",
    "/api/versions/acme/%2E%2E",
    "/api/versions/acme/a%00b",
    "/api/versions/acme/a:..",
    "/api/adapters/%2E%2E/a/versions",
    "/api/adapters/acme/a%5Cb/versions",
    "/api/blobs/..%2F..%2Fregistry.db",
    "/api/blobs/" + "A" * 64,
])
def test_path_tricks_in_names_are_400(client, tokens, path):
    token = tokens.create("*")
    response = client.get(path, headers=bearer(token))
    assert response.status_code == 400, (path, response.status_code, response.text)
    assert response.json()["error"]["code"] in ("invalid_name", "invalid_argument")


@pytest.mark.parametrize("filename", ["../../escape.txt", "/etc/passwd", "adapter_model.bin", ".."])
def test_file_names_outside_the_adapter_files_are_400(client, tokens, llama_lora, server_home, filename):
    token = tokens.create("acme")
    data = (llama_lora / "adapter_config.json").read_bytes()
    upload(client, data, token)
    response = client.post("/api/adapters/acme/a/versions", headers=bearer(token),
                           json={"task": "t", "files": {filename: sha256(data)}})
    assert_error(response, 400, "invalid_argument")
    assert not (server_home.parent / "escape.txt").exists()


# -- pulls ------------------------------------------------------------------------------------------

def test_blob_download_headers_ranges_and_head(client, tokens):
    token = tokens.create("acme")
    data = bytes(range(256)) * 40
    digest = sha256(data)
    upload(client, data, token)

    whole = client.get(f"/api/blobs/{digest}")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-length"] == str(len(data)) and whole.headers["etag"] == f'"{digest}"'
    assert whole.headers["accept-ranges"] == "bytes"

    part = client.get(f"/api/blobs/{digest}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    rest = client.get(f"/api/blobs/{digest}", headers={"Range": "bytes=5000-", "If-Range": f'"{digest}"'})
    assert rest.status_code == 206 and rest.content == data[5000:]
    assert client.get(f"/api/blobs/{digest}", headers={"Range": "bytes=-10"}).content == data[-10:]
    # If-Range naming another version of the bytes: the whole blob, not a wrong splice.
    stale = client.get(f"/api/blobs/{digest}", headers={"Range": "bytes=5000-", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == data

    beyond = client.get(f"/api/blobs/{digest}", headers={"Range": f"bytes={len(data)}-"})
    assert_error(beyond, 416, "range_not_satisfiable")
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"

    head = client.head(f"/api/blobs/{digest}")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(data))
    assert client.head(f"/api/blobs/{sha256(b'absent')}").status_code == 404
    assert_error(client.get(f"/api/blobs/{sha256(b'absent')}"), 404, "not_found")


# -- the description --------------------------------------------------------------------------------

def test_openapi_describes_every_route_and_only_those(client):
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    described = {(path, method.upper()) for path, item in document["paths"].items()
                 for method in item if method != "parameters"}
    served = set()
    for route in client.app.routes:
        assert isinstance(route, Route)
        path = route.path.replace(":path}", "}")
        served |= {(path, method) for method in route.methods}
    # Starlette answers HEAD wherever it answers GET; only the blob HEAD is part of the API.
    implicit_head = {(path, "HEAD") for path, method in served if method == "GET"} - described
    # The web pages are for people, not part of the API.
    pages = {(route.path, method) for route in web.ROUTES for method in route.methods}
    assert described == served - implicit_head - pages
    assert document == openapi_document()
    codes = set(document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])
    assert {cls.code for cls in all_error_classes()} <= codes


def test_info_is_the_health_check(client):
    info = client.get("/api/info").json()
    assert info["service"] == "loramgr" and info["public_read"] is True and info["max_upload_bytes"] > 0


def test_render_error_is_used_for_subclasses_defined_elsewhere():
    class Custom(LoramgrError):
        code = "custom_thing"
        http_status = 409

    response = render_error(Custom("x"))
    assert response.status_code == 409 and json.loads(response.body)["error"]["code"] == "custom_thing"
