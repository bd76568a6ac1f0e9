"""The registry reads the pages use (filter choices, "used in"), and the pages themselves, on
SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from loramgr.hub.errors import AdapterNotFound
from loramgr.hub.registry import Registry
from loramgr.hub.server import ServerConfig, create_app

from ..postgres import settings_for
from .hub_content import populate


def test_facets_and_compositions_using(home, database_url, tmp_path):
    made = populate(home, tmp_path / "scratch", database_url)
    registry = Registry(settings_for(home, database_url))
    try:
        assert registry.facets() == {"base_models": ["synthetic/base-model", "synthetic/other-base"],
                                     "tasks": ["review-summary", "sentiment", "summarization", "translation"]}
        assert registry.compositions_using("acme/sentiment") == [
            {"source": made["sentiment"], "weight": 1.0, "composed": made["bare"]},
            {"source": made["sentiment"], "weight": 0.72, "composed": made["mix"]}]
        assert registry.compositions_using("acme/summarize") == [
            {"source": made["summarize"], "weight": -0.31, "composed": made["mix"]}]
        assert registry.compositions_using("acme/mix") == []
        # A removed composition is no longer a use.
        registry.rm(made["bare"])
        assert [u["composed"] for u in registry.compositions_using("acme/sentiment")] == [made["mix"]]
        with pytest.raises(AdapterNotFound):
            registry.compositions_using("acme/nothing")
    finally:
        registry.close()

    app = create_app(settings_for(home, database_url), ServerConfig())
    with TestClient(app, raise_server_exceptions=False) as client:
        assert "acme/mix" in client.get("/", params={"q": "composed"}).text
        page = client.get("/adapters/acme/mix")
        assert page.status_code == 200 and page.text.count("<rect") == 2


def test_search_pages_with_an_offset(home, database_url, tmp_path):
    from loramgr.hub.errors import InvalidArgument

    populate(home, tmp_path / "scratch", database_url)
    registry = Registry(settings_for(home, database_url))
    try:
        everything = [v.ref for v in registry.search(limit=None)]
        assert len(everything) == 5
        pages = [[v.ref for v in registry.search(limit=2, offset=offset)] for offset in (0, 2, 4, 6)]
        assert pages == [everything[0:2], everything[2:4], everything[4:], []]
        assert [v.ref for v in registry.search(source="pushed", limit=1, offset=1)] == \
            [v.ref for v in registry.search(source="pushed")][1:2]
        with pytest.raises(InvalidArgument):
            registry.search(offset=-1)
    finally:
        registry.close()
