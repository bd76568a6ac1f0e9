"""``RemoteRegistry`` against the app in process: same methods and errors as ``Registry``,
uploads that skip what the hub has, limits checked before sending, retries that give up."""

from __future__ import annotations

import inspect

import httpx
import pytest

from loramgr.hub.client import RemoteRegistry
from loramgr.hub.errors import (AdapterNotFound, Forbidden, InvalidArgument, InvalidName, PayloadTooLarge,
                                RemoteError, Unauthorized)
from loramgr.hub.records import Lineage, SourceWeight
from loramgr.hub.registry import Registry
from loramgr.hub.server import ServerConfig
from loramgr.hub.settings import Settings

from .. import factories
from .conftest import remote

# Registering already-uploaded blobs is what the hub does for a client; the facets and "used in"
# reads feed the server's own web pages.
SERVER_ONLY = {"push_stored", "facets", "compositions_using"}


class AppTransport(httpx.BaseTransport):
    """An httpx transport into the app through Starlette's TestClient (which may be built on
    another httpx distribution, so responses are copied over); remembers (method, path)."""

    def __init__(self, app_client):
        self.app_client, self.requests = app_client, []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        answer = self.app_client.request(request.method, str(request.url), headers=dict(request.headers),
                                         content=request.read())
        return httpx.Response(answer.status_code, headers=list(answer.headers.multi_items()),
                              content=answer.content)


@pytest.fixture
def connect(make_client, tmp_path):
    """``connect(token=None, config=None)``: a RemoteRegistry talking to the app in process."""

    def make(token: str | None = None, config: ServerConfig | None = None) -> RemoteRegistry:
        app_client = make_client(config)
        settings = Settings.load(environ={}, home=str(tmp_path / "client"), remote="http://testserver",
                                 token=token)
        return RemoteRegistry(settings, retries=0, transport=AppTransport(app_client))

    return make


def test_remote_registry_has_every_registry_method_with_the_same_signature():
    public = {name for name, _ in inspect.getmembers(Registry, inspect.isfunction) if not name.startswith("_")}
    for name in sorted(public - SERVER_ONLY):
        assert hasattr(RemoteRegistry, name), f"RemoteRegistry lacks {name}"
        assert inspect.signature(getattr(RemoteRegistry, name)) == inspect.signature(getattr(Registry, name)), name


def test_errors_come_back_as_the_exceptions_the_hub_raised(connect, tokens, llama_lora):
    reader = connect()
    with pytest.raises(AdapterNotFound, match="no adapter named acme/none") as raised:
        reader.show("acme/none")
    assert isinstance(raised.value, LookupError)
    assert raised.value.details == {"ref": "acme/none:latest"}  # the details travel too
    with pytest.raises(InvalidName):
        reader.ls("bad namespace")
    with pytest.raises(InvalidArgument, match="--limit"):
        reader.search(limit=0)
    with pytest.raises(Unauthorized, match="needs a token"):
        reader.push(llama_lora, name="acme/a", task="t")
    with pytest.raises(Forbidden, match="not 'acme'"):
        connect(tokens.create("other")).push(llama_lora, name="acme/a", task="t")
    with pytest.raises(Forbidden, match="read-only"):
        connect(tokens.create("acme", write=False)).push(llama_lora, name="acme/a", task="t")


def test_push_skips_blobs_the_hub_has_and_round_trips_everything(connect, tokens, llama_lora, tmp_path):
    hub = connect(tokens.create("acme"))
    examples = factories.write_examples(tmp_path / "ex.jsonl", [("a", "b"), ("c", "d")])
    progress = []
    first = hub.push(llama_lora, name="acme/a", task="t", examples=examples, progress=progress.append)
    assert sum(progress) == first.byte_size
    puts = [r for r in hub.http._transport.requests if r[0] == "PUT"]
    assert len(puts) == len(first.files) == 4

    hub.http._transport.requests.clear()
    lineage = Lineage(sources=[SourceWeight("acme/a@1", 0.5, first.digest)], mode="delta", score=1.5, seed=3,
                      details={"budget": 4})
    second = hub.push(llama_lora, name="acme/a", task="t", examples=examples, source="composed", lineage=lineage)
    assert [r for r in hub.http._transport.requests if r[0] == "PUT"] == []  # all there already
    assert second.number == 2 and second.digest == first.digest and second.lineage == lineage
    assert hub.show("acme/a@2") == second
    assert hub.read_file("acme/a", "examples.jsonl") == examples.read_bytes()
    assert hub.read_file("acme/a", "nothing.txt") is None
    assert [v.number for v in hub.versions("acme/a")] == [2, 1]
    assert [v.ref for v in hub.search(task="t", all_versions=True, limit=None)] == ["acme/a@2", "acme/a@1"]
    assert hub.tag("acme/a@1", "old").tags == ["old"]
    assert hub.rm("acme/a@2").ref == "acme/a@2" and hub.show("acme/a").number == 1


def test_a_file_over_the_limit_is_refused_before_any_upload(connect, tokens, llama_lora):
    hub = connect(tokens.create("acme"), ServerConfig(max_upload_bytes=2000))
    with pytest.raises(PayloadTooLarge, match="over the hub's upload limit"):
        hub.push(llama_lora, name="acme/a", task="t")
    assert [r for r in hub.http._transport.requests if r[0] in ("PUT", "POST")] == []


def test_an_unreachable_hub_is_remote_error_after_retries(tmp_path):
    from .helpers import free_port

    hub = remote(f"http://127.0.0.1:{free_port()}", tmp_path, retries=2, backoff=0.01)
    with pytest.raises(RemoteError, match="cannot reach the hub .*tried 3 times"):
        hub.ls()
    with pytest.raises(InvalidArgument, match="expected http"):
        remote("ftp://example", tmp_path)
