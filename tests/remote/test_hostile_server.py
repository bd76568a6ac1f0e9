"""Hostile requests against the hub app (issue 12): every one is a 4xx with the JSON error
shape, never a 500, and leaves the hub answering for everyone else."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from ..hostile import config, lora_tensors, write_adapter
from .test_app import assert_error, bearer, upload

DEEP_JSON = "[" * 200_000 + "]" * 200_000
NAME = "acme/hostile"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def writer(tokens):
    return tokens.create("acme")


@pytest.fixture
def admin(tokens):
    return tokens.create("*")


@pytest.fixture
def pushed(client, writer, tmp_path):
    """One good version of acme/good on the hub, pushed over HTTP."""
    folder = write_adapter(tmp_path / "good")
    response = commit(client, folder, "acme/good", writer)
    assert response.status_code == 201, response.text
    return response.json()


def commit(client, folder, name: str, token: str, **body):
    files = {}
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        assert upload(client, data, token).status_code == 201
        files[path.name] = sha256(data)
    # Non-finite floats go out as 1e999, as a hostile client would write them.
    text = json.dumps({"task": "t", "files": files, **body}).replace("Infinity", "1e999").replace("NaN", "1e999")
    return client.post(f"/api/adapters/{name}/versions", content=text,
                       headers={**bearer(token), "Content-Type": "application/json"})


def still_serving(client):
    assert client.get("/api/adapters").status_code == 200
    assert client.get("/api/search").status_code == 200


def nothing_stored(client, name=NAME):
    assert client.get(f"/api/adapters/{name}/versions").status_code == 404


# -- 1. non-finite numbers ------------------------------------------------------------------

@pytest.mark.parametrize("alpha_text", ["1e999", "Infinity", "NaN"])
def test_non_finite_alpha_commit_is_422_and_the_hub_keeps_answering(client, writer, tmp_path, alpha_text):
    text = json.dumps(config()).replace('"lora_alpha": 4', f'"lora_alpha": {alpha_text}')
    response = commit(client, write_adapter(tmp_path / "a", config_text=text), NAME, writer)
    assert_error(response, 422, "invalid_adapter")
    nothing_stored(client)
    still_serving(client)


@pytest.mark.parametrize("lineage", [
    {"sources": [{"ref": "acme/good@1", "weight": "heavy"}], "mode": "delta"},
    {"sources": [{"ref": "acme/good@1", "weight": 1.0}], "mode": "delta", "score": float("inf")},
    {"sources": [{"ref": "acme/good@1", "weight": [0.5]}], "mode": "delta"},
    {"sources": [], "mode": "delta", "seed": 2 ** 70},
])
def test_bad_lineage_in_a_commit_is_400(client, writer, tmp_path, lineage):
    response = commit(client, write_adapter(tmp_path / "a"), NAME, writer, source="composed", lineage=lineage)
    message = assert_error(response, 400, "invalid_argument")
    assert "lineage" in message or "out of range" in message
    nothing_stored(client)


@pytest.mark.parametrize("body", ['{"tag": NaN}', '{"grace_seconds": Infinity}', '{"grace_seconds": 1e999}'])
def test_non_finite_numbers_in_bodies_are_400(client, admin, pushed, body):
    for path in ("/api/versions/acme/good@1/tags", "/api/gc"):
        response = client.post(path, headers={**bearer(admin), "Content-Type": "application/json"}, content=body)
        assert_error(response, 400, "invalid_argument")


@pytest.mark.parametrize("grace", [-1, 1e300, True])
def test_gc_grace_out_of_range_is_400(client, admin, grace):
    assert_error(client.post("/api/gc", headers=bearer(admin), json={"grace_seconds": grace}), 400,
                 "invalid_argument")


# -- 2. ReDoS ------------------------------------------------------------------------------

def test_redos_pattern_is_refused_without_running_it(client, writer, tmp_path):
    module = "model." + "a" * 28 + "!"
    folder = write_adapter(tmp_path / "a", config_fields={"rank_pattern": {"(a+)+b": 2}},
                           tensors=lora_tensors([module]))
    message = assert_error(commit(client, folder, NAME, writer), 422, "invalid_adapter")
    assert "rank_pattern" in message
    nothing_stored(client)


# -- 6. unhandled exceptions -----------------------------------------------------------------

@pytest.mark.parametrize("ref", ["acme/good@²", "acme/good@" + "9" * 30, "acme/good@١٢", "acme/good@0"])
def test_odd_version_numbers_are_400(client, pushed, ref):
    assert_error(client.get(f"/api/versions/{ref}"), 400, "invalid_name")


@pytest.mark.parametrize("query", ["rank=" + "9" * 25, "limit=" + "9" * 25, "min_rank=²", "max_rank=١٢",
                                   "rank=-1"])
def test_odd_numbers_in_search_are_400(client, pushed, query):
    assert_error(client.get(f"/api/search?{query}"), 400, "invalid_argument")


def test_huge_range_headers(client, pushed):
    digest = pushed["files"][0]["digest"]
    size = pushed["files"][0]["size"]
    past_end = client.get(f"/api/blobs/{digest}", headers={"Range": "bytes=" + "9" * 5000 + "-"})
    assert_error(past_end, 416, "range_not_satisfiable")
    whole = client.get(f"/api/blobs/{digest}", headers={"Range": "bytes=0-" + "9" * 5000})
    assert whole.status_code == 206 and len(whole.content) == size
    suffix = client.get(f"/api/blobs/{digest}", headers={"Range": "bytes=-" + "9" * 5000})
    assert suffix.status_code == 206 and len(suffix.content) == size


@pytest.mark.parametrize("path", ["/api/versions/acme/good@1/tags", "/api/gc", "/api/adapters/acme/x/versions"])
def test_deeply_nested_json_bodies_are_400(client, admin, pushed, path):
    response = client.post(path, headers={**bearer(admin), "Content-Type": "application/json"}, content=DEEP_JSON)
    assert_error(response, 400, "invalid_argument")


def test_deeply_nested_bodies_on_the_hf_api_are_400(client, admin, pushed):
    headers = {**bearer(admin), "Content-Type": "application/json"}
    for path in ("/api/repos/create", "/api/validate-yaml", "/api/models/acme/good/preupload/main"):
        response = client.post(path, headers=headers, content=DEEP_JSON)
        assert response.status_code == 400, (path, response.text)
    card = "---\nbase_model: " + "[" * 100_000 + "]" * 100_000 + "\n---\n# card\n"
    response = client.post("/api/validate-yaml", headers=headers, json={"content": card})
    assert response.status_code == 400 and "nested" in response.text
    line = json.dumps({"key": "header", "value": {"summary": "x"}}) + "\n" + '{"key": "file", "value": ' + \
        "[" * 100_000 + "]" * 100_000 + "}\n"
    response = client.post("/api/models/acme/good/commit/main", headers={**bearer(admin),
                           "Content-Type": "application/x-ndjson"}, content=line)
    assert response.status_code == 400, response.text


def test_nested_readme_front_matter_in_an_hf_commit_is_400(client, admin, pushed):
    card = ("---\nbase_model: " + "[" * 100_000 + "]" * 100_000 + "\n---\n").encode()
    lines = [{"key": "header", "value": {"summary": "card"}},
             {"key": "file", "value": {"path": "README.md", "encoding": "base64",
                                       "content": base64.b64encode(card).decode()}}]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    response = client.post("/api/models/acme/good/commit/main", headers={**bearer(admin),
                           "Content-Type": "application/x-ndjson"}, content=body)
    assert response.status_code == 400, response.text
    assert client.get("/api/adapters/acme/good/versions").json()["versions"][0]["number"] == 1


def test_unhashable_dtype_commit_is_422(client, writer, tmp_path):
    folder = write_adapter(tmp_path / "a")
    header = json.dumps({"base_model.model.x.lora_A.weight": {"dtype": {"F32": 1}, "shape": [1],
                                                              "data_offsets": [0, 4]}}).encode()
    (folder / "adapter_model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    assert_error(commit(client, folder, NAME, writer), 422, "invalid_adapter")


def test_commit_errors_do_not_show_the_servers_folders(client, writer, tmp_path, server_home):
    folder = write_adapter(tmp_path / "a", config_fields={"target_modules": 12345})
    message = assert_error(commit(client, folder, NAME, writer), 422, "invalid_adapter")
    assert str(server_home) not in message and "/tmp" not in message and NAME in message


# -- 7. a numeric tag and a version number in the HF API --------------------------------------

def test_revision_digits_name_a_version_and_numeric_tags_are_refused(client, writer, tmp_path, pushed):
    second = commit(client, write_adapter(tmp_path / "b", config_fields={"lora_alpha": 8}), "acme/good", writer)
    assert second.status_code == 201
    assert client.post("/api/versions/acme/good@2/tags", headers=bearer(writer), json={"tag": "v1"}).status_code == 200
    response = client.post("/api/versions/acme/good@2/tags", headers=bearer(writer), json={"tag": "1"})
    assert "only digits" in assert_error(response, 400, "invalid_name")
    info = client.get("/api/models/acme/good/revision/1").json()
    assert info["loramgr"]["number"] == 1
    assert client.get("/api/models/acme/good/revision/v1").json()["loramgr"]["number"] == 2
    assert client.get("/api/models/acme/good/revision/²").status_code == 404
