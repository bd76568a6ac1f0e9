"""The web pages in-process (Starlette's TestClient): what they answer, escape and refuse."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.testclient import TestClient

from loramgr.hub.server import ServerConfig, create_app
from loramgr.hub.server.web import pages
from loramgr.hub.settings import Settings

from ..remote.helpers import LiveServer
from .conftest import create_token, revoke_token


def client_for(home, *, public_read: bool = True) -> TestClient:
    app = create_app(Settings.load(environ={}, home=str(home)), ServerConfig(public_read=public_read))
    return TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1:8000")


@pytest.fixture(scope="module")
def public(web_hub):
    with client_for(web_hub[0]) as client:
        yield client


@pytest.fixture(scope="module")
def private(web_hub):
    with client_for(web_hub[0], public_read=False) as client:
        yield client


def adapter_names(html: str) -> list[str]:
    return re.findall(r'class="adapter-link" href="/adapters/([^"]+)"', html)


def test_home_lists_newest_first_with_filters(public):
    response = public.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert adapter_names(response.text) == ["acme/mix-bare", "acme/mix", "lab/translate", "acme/summarize",
                                            "acme/sentiment"]
    assert adapter_names(public.get("/", params={"task": "sentiment"}).text) == ["acme/sentiment"]
    assert adapter_names(public.get("/", params={"base": "synthetic/other-base"}).text) == ["lab/translate"]
    assert adapter_names(public.get("/", params={"min_rank": 8, "max_rank": 16}).text) == \
        ["acme/mix-bare", "acme/summarize", "acme/sentiment"]
    assert adapter_names(public.get("/", params={"source": "composed", "q": "sentiment"}).text) == ["acme/mix"]
    # The filters offer what the registry holds.
    assert '<option value="synthetic/other-base">' in response.text and '<option value="translation">' in response.text


def test_pages_of_results(public, monkeypatch):
    monkeypatch.setattr(pages, "PAGE_SIZE", 2)
    first = public.get("/", params={"source": "pushed"}).text
    assert adapter_names(first) == ["lab/translate", "acme/summarize"]
    assert 'rel="next" href="/?source=pushed&amp;page=2"' in first and 'rel="prev"' not in first
    second = public.get("/", params={"source": "pushed", "page": 2}).text
    assert adapter_names(second) == ["acme/sentiment"]
    assert 'rel="prev" href="/?source=pushed"' in second and 'rel="next"' not in second


def test_bad_input_is_a_page_with_the_reason(public):
    for url, status, words in (("/?min_rank=abc", 400, "whole number"), ("/?page=0", 400, "page must be"),
                               ("/?source=stolen", 400, "source must be"),
                               ("/adapters/acme/nothing", 404, "no adapter named acme/nothing"),
                               ("/adapters/acme/sentiment?version=9", 404, "has no version"),
                               ("/adapters/acme/sentiment?version=no..tag", 400, "invalid tag"),
                               ("/adapters/a..b/x", 400, "invalid namespace")):
        response = public.get(url)
        assert response.status_code == status, url
        assert response.headers["content-type"].startswith("text/html") and words in response.text, url


def test_the_card_is_rendered_and_cannot_inject_markup(public):
    html = public.get("/adapters/acme/sentiment").text
    card = html[html.index('<article class="markdown">'):html.index("</article>")]
    assert "<h1>Sentiment adapter</h1>" in card and "<em>reviews</em>" in card and "<table>" in card
    assert "&lt;script&gt;" in card and "<script" not in card
    assert "&lt;img" in card and "<img" not in card
    assert "javascript:" not in card.replace("[click me](javascript:", "")  # shown as text, not a link
    assert 'href="javascript' not in card
    assert "license: apache-2.0" not in card  # the metadata block is not part of the body
    csp = public.get("/adapters/acme/sentiment").headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp


def test_a_hostile_name_or_description_is_escaped(tmp_path):
    from loramgr.hub.registry import Registry

    from ..remote.helpers import write_synthetic_adapter

    home = tmp_path / "home"
    registry = Registry(Settings.load(environ={}, home=str(home)))
    folder = write_synthetic_adapter(tmp_path / "a", megabytes=0.01, hidden=32, rank=2,
                                     base='base"><script>alert(1)</script>')
    registry.push(folder, name="x/y", task="<b>task</b>", description="<img src=x onerror=alert(1)>")
    registry.close()
    with client_for(home) as client:
        for url in ("/", "/adapters/x/y"):
            html = client.get(url).text
            assert "<script>alert" not in html and "<img src=x" not in html and "<b>task" not in html
            assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_adapter_page_has_versions_files_usage_and_lineage(public, web_hub):
    _, made = web_hub
    html = public.get("/adapters/acme/mix").text
    assert 'href="/adapters/acme/sentiment?version=2"' in html and 'href="/adapters/acme/summarize?version=1"' in html
    assert html.count("<rect") == 2 and "+0.720" in html and "-0.310" in html
    assert "30 evaluations" in html and "eeee" in html and "NGOpt" in html
    assert "LORAMGR_REMOTE=http://127.0.0.1:8000 loramgr pull acme/mix@1" in html
    assert 'snapshot_download(&#34;acme/mix&#34;, revision=&#34;1&#34;, endpoint=&#34;http://127.0.0.1:8000&#34;)' in html
    for f in public.get(f"/api/versions/{made['mix']}").json()["files"]:
        assert f'href="/api/blobs/{f["digest"]}" download="{f["name"]}"' in html
    source = public.get("/adapters/acme/sentiment", params={"version": "stable"}).text
    assert '<a class="used-in" href="/adapters/acme/mix?version=1">acme/mix@1</a>' in source
    assert "acme/mix-bare@1" in source
    assert "No search history was recorded" in public.get("/adapters/acme/mix-bare").text
    assert 'id="used-in"' not in public.get("/adapters/lab/translate").text


def test_a_private_hub_shows_only_the_login_form(private, web_hub):
    home, made = web_hub
    digest = private.get  # noqa: F841  (readability: every read below is refused)
    for url in ("/", "/adapters/acme/sentiment", "/adapters/acme/mix?version=1", "/adapters/acme/nothing"):
        response = private.get(url)
        assert response.status_code == 401, url
        assert 'action="/login"' in response.text and "acme/sentiment" not in response.text.replace(
            'value="/adapters/acme/sentiment"', "")
        assert response.headers["cache-control"] == "no-store"
    assert private.get("/api/search").status_code == 401  # the API as before
    assert private.get("/login").status_code == 200 and private.get("/static/web.css").status_code == 200


def test_login_sets_a_strict_httponly_cookie_and_logout_clears_it(web_hub):
    home, made = web_hub
    secret, token_id = create_token(home, "acme")
    with client_for(home, public_read=False) as client:
        refused = client.post("/login", data={"token": "lmt_wrong", "next": "/"})
        assert refused.status_code == 401 and "unknown or was revoked" in refused.text
        assert "set-cookie" not in refused.headers

        response = client.post("/login", data={"token": secret, "next": "/adapters/acme/mix"}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/adapters/acme/mix"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"loramgr_token={secret};")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie

        page = client.get("/adapters/acme/mix")
        assert page.status_code == 200 and f"token {token_id} · acme" in page.text
        # The cookie reads files too (the download links), but never writes.
        blob = make_blob_request(client, made)
        assert blob.status_code == 200
        assert client.post("/api/adapters/acme/x/versions", json={}).status_code == 401

        out = client.post("/logout", follow_redirects=False)
        assert out.status_code == 303 and 'loramgr_token=""' in out.headers["set-cookie"]
        assert "Max-Age=0" in out.headers["set-cookie"] or "expires" in out.headers["set-cookie"].lower()
        client.cookies.clear()
        assert client.get("/adapters/acme/mix").status_code == 401

        # A revoked token's session ends at once, and the stale cookie is cleared.
        client.post("/login", data={"token": secret, "next": "/"})
        revoke_token(home, token_id)
        stale = client.get("/")
        assert stale.status_code == 401 and "revoked" in stale.text
        assert 'loramgr_token=""' in stale.headers["set-cookie"]


def make_blob_request(client, made):
    digest = next(f.digest for f in made_version_files(client, made["mix"]))
    return client.get(f"/api/blobs/{digest}")


def made_version_files(client, ref):
    from loramgr.hub.records import AdapterVersion

    return AdapterVersion.from_dict(client.get(f"/api/versions/{ref}").json()).files


def test_login_refuses_other_sites_and_other_destinations(web_hub):
    home, _ = web_hub
    secret, _ = create_token(home, "acme")
    with client_for(home, public_read=False) as client:
        cross = client.post("/login", data={"token": secret}, headers={"origin": "http://evil.example"})
        assert cross.status_code == 403 and "set-cookie" not in cross.headers
        for target in ("//evil.example/x", "http://evil.example/", "/\\evil.example", ""):
            response = client.post("/login", data={"token": secret, "next": target}, follow_redirects=False)
            assert response.headers["location"] == "/", target
        assert client.post("/logout", headers={"origin": "http://evil.example"}).status_code == 403


def test_serve_prints_the_web_page_url(web_hub):
    home, _ = web_hub
    server = LiveServer(home).start()
    try:
        assert f"web pages: http://127.0.0.1:{server.port}/" in server.log()
        page = httpx.get(server.url + "/")
        assert page.status_code == 200 and "acme/mix" in page.text
    finally:
        server.stop()


def test_a_card_whose_blob_is_gone_still_leaves_a_page(tmp_path):
    from loramgr.hub.registry import Registry

    from ..remote.helpers import write_synthetic_adapter

    home = tmp_path / "home"
    registry = Registry(Settings.load(environ={}, home=str(home)))
    folder = write_synthetic_adapter(tmp_path / "a", megabytes=0.01, hidden=32, rank=2)
    (folder / "README.md").write_text("# card\n")
    version = registry.push(folder, name="x/y", task="t")
    card = next(f for f in version.files if f.name == "README.md")
    registry.blobs.path(card.digest).unlink()
    registry.close()
    with client_for(home) as client:
        page = client.get("/adapters/x/y")
        assert page.status_code == 200 and "could not be read" in page.text
