"""Search at scale: the full-text index (kept in sync on push and rm, made and removed by its
migration) and the batched query, checked against a plain reading of the same rows.

Versions are registered through the registry's own transaction code with made-up metadata
(as benchmarks/hub_throughput.py does): the query is under test here, not adapter reading.
"""

import random

import pytest
from alembic import command
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import selectinload

from loramgr.hub.db.engine import Database, alembic_config
from loramgr.hub.db.models import Version
from loramgr.hub.records import Lineage, SourceWeight
from loramgr.hub.refs import AdapterName
from loramgr.hub.registry import Registry
from loramgr.hub.search import TEXT_INDEX, search_document, words

TEMPLATE = dict(task_type="CAUSAL_LM", alpha=16.0, dtype="float32", param_count=10, byte_size=40, digest="0" * 64,
                source="pushed", manifest="{}")


def register(registry: Registry, name: str, **fields):
    return register_many(registry, [(name, fields)])


def register_many(registry: Registry, versions: list[tuple[str, dict]]):
    """Register versions (name, fields) in one transaction; returns the last one."""
    # Two small blobs really in the store (a commit checks that its blobs are there).
    stored = {name: registry.blobs.put_chunks([content]) for name, content in
              (("adapter_model.safetensors", b"weights"), ("adapter_config.json", b"{}"))}

    def work(session):
        for name, fields in versions:
            fields = {"task": "t", "base": "org/base", "rank": 8, "targets": ("q_proj",), "description": None,
                      "tags": (), "lineage": None, "source": "pushed", **fields}
            record = dict(TEMPLATE, base_model=fields["base"], task=fields["task"], rank=fields["rank"],
                          target_modules="," + ",".join(fields["targets"]) + ",", description=fields["description"],
                          source=fields["source"])
            version = registry._register(session, AdapterName.parse(name), record, stored, list(fields["tags"]),
                                         fields["lineage"])
        return version

    return registry._write(work)


def refs(registry, **filters):
    return [v.ref for v in registry.search(**filters)]


def index_rows(registry) -> int:
    with registry.db.reading() as session:
        return session.execute(text(f"SELECT count(*) FROM {TEXT_INDEX}")).scalar_one()


def test_the_text_query_finds_word_prefixes_in_name_task_and_description(registry):
    register(registry, "acme/sentiment-v2", task="sentiment", description="Reviews of films, in Français")
    register(registry, "team/sql", task="text-to-sql", description="Text to SQL for Postgres")
    assert refs(registry, query="acme") == ["acme/sentiment-v2@1"]          # namespace
    assert refs(registry, query="senti") == ["acme/sentiment-v2@1"]         # a word's beginning
    assert refs(registry, query="acme/sentiment") == ["acme/sentiment-v2@1"]
    assert refs(registry, query="POSTGRES") == ["team/sql@1"]               # case does not matter
    assert refs(registry, query="sql") == ["team/sql@1"]                    # task and description
    assert refs(registry, query="text sql") == ["team/sql@1"]               # every word is needed
    assert refs(registry, query="text films") == []
    assert refs(registry, query="français") == ["acme/sentiment-v2@1"]      # not only ASCII
    assert refs(registry, query="gres") == []                               # words, not substrings
    assert refs(registry, query="%%") == []                                 # no word at all
    assert refs(registry, query='"sql*" (postgres)') == ["team/sql@1"]     # no query syntax passes through


def test_the_index_follows_push_and_rm(registry):
    register(registry, "acme/a", description="first words")
    register(registry, "acme/a", description="second words")
    assert refs(registry, query="words") == ["acme/a@2"]
    assert refs(registry, query="words", all_versions=True) == ["acme/a@2", "acme/a@1"]
    registry.rm("acme/a@2")
    assert refs(registry, query="second") == []
    assert refs(registry, query="words") == ["acme/a@1"]
    assert index_rows(registry) == 1
    # SQLite hands a removed newest row's id out again: the new version must not inherit a row.
    register(registry, "acme/a", description="third")
    assert refs(registry, query="second") == [] and refs(registry, query="third") == ["acme/a@3"]
    assert index_rows(registry) == 2


def test_records_carry_tags_files_and_lineage(registry):
    source = register(registry, "acme/a", tags=["stable", "beta"])
    lineage = Lineage(sources=[SourceWeight(source.ref, 0.5, source.digest), SourceWeight("./local", -0.25)],
                      mode="delta", score=1.5, seed=3, details={"budget": 4})
    register(registry, "acme/c", source="composed", lineage=lineage)
    found = {v.ref: v for v in registry.search()}
    assert found["acme/a@1"].tags == ["beta", "latest", "stable"]
    assert [f.name for f in found["acme/a@1"].files] == ["adapter_config.json", "adapter_model.safetensors"]
    assert found["acme/c@1"].lineage == registry.show("acme/c@1").lineage
    assert [s.ref for s in found["acme/c@1"].lineage.sources] == ["acme/a@1", "./local"]
    assert found["acme/a@1"] == registry.show("acme/a@1")
    assert registry.ls() == [registry.show("acme/a"), registry.show("acme/c")]
    assert registry.versions("acme/a") == [registry.show("acme/a@1")]


def plain_reading(registry):
    """Every version, newest first, read through the ORM (not the search module's queries)."""
    with registry.db.reading() as session:
        every = select(Version).order_by(Version.id.desc()).options(*(selectinload(relation) for relation in (
            Version.adapter, Version.files, Version.tags, Version.composition, Version.sources)))
        return [registry._record(v) for v in session.scalars(every)]


def keeps(filters: dict, v) -> bool:
    tasks = filters.get("task")
    document = search_document(v.namespace, v.name, v.task, v.description).split()
    return ((tasks is None or v.task in ([tasks] if isinstance(tasks, str) else tasks))
            and v.base_model == filters.get("base", v.base_model) and v.rank == filters.get("rank", v.rank)
            and filters.get("min_rank", 0) <= v.rank <= filters.get("max_rank", 99)
            and filters.get("target", "q_proj") in v.target_modules
            and all(any(d.startswith(w) for d in document) for w in words(filters.get("query", ""))))


def test_search_agrees_with_a_plain_reading_of_every_version(registry):
    rng = random.Random(7)
    register_many(registry, [(f"ns{index % 3}/a{rng.randrange(8)}", dict(
        task=rng.choice(["x", "y", "z"]), base=rng.choice(["b1", "b2"]), rank=rng.choice([4, 8, 16]),
        targets=rng.choice([("q_proj",), ("q_proj", "k_proj")]), description=rng.choice([None, "alpha beta"])))
        for index in range(40)])
    for version in plain_reading(registry)[::6]:
        registry.rm(version.ref)
    every = plain_reading(registry)
    cases = [dict(), dict(task="x"), dict(task=["x", "y"], base="b2"), dict(rank=8), dict(min_rank=8, max_rank=8),
             dict(target="k_proj"), dict(query="bet"), dict(base="b1", query="ns2 a")]
    for filters in cases:
        matching = [v for v in every if keeps(filters, v)]
        newest, seen = [], set()
        for v in matching:
            if v.adapter not in seen:
                seen.add(v.adapter)
                newest.append(v)
        assert matching and newest, filters
        assert registry.search(**filters, all_versions=True, limit=None) == matching, filters
        assert registry.search(**filters, limit=None) == newest, filters
        assert refs(registry, **filters, limit=3) == [v.ref for v in newest[:3]], filters


def test_the_migration_fills_the_index_and_downgrades_cleanly(settings):
    registry = Registry(settings)
    register(registry, "acme/old", description="made before the index")
    registry.close()
    database = Database(settings.database_url)
    config = alembic_config()
    with database.write_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
    with database.write_engine.connect() as connection:
        assert not [t for t in inspect(connection).get_table_names() if t.startswith(TEXT_INDEX)]
    database.upgrade()  # back to head: fills the index from the versions there
    database.dispose()
    registry = Registry(settings)
    try:
        assert refs(registry, query="before index") == ["acme/old@1"]
        register(registry, "acme/new", description="after")
        assert refs(registry, query="after") == ["acme/new@1"]
    finally:
        registry.close()


def test_a_limit_under_one_is_refused(registry):
    from loramgr.hub.errors import InvalidArgument

    for limit in (0, -1):
        with pytest.raises(InvalidArgument, match="--limit"):
            registry.search(limit=limit)


ODD_QUERIES = ["x" * 3000, "²³ ١٢ ⅷ", "a\x00b", "ǅ ß ﬁ", "e\u0301t\u00e9", "-- ; drop table versions"]


def test_odd_text_queries_answer_without_error(registry):
    register(registry, "acme/a", description="x" * 3000 + " ² ١٢ ﬁ été")
    for query in ODD_QUERIES:
        assert isinstance(registry.search(query=query), list), query
    # A word past the length cut is found alike on both databases.
    assert refs(registry, query="x" * 3000) == ["acme/a@1"]
