"""Search over the metadata store: the query that picks matching versions, the full-text index
of the text query, and building the records of many versions in one statement.

Why it is shaped this way (10,000 versions took 13-26 ms per search through the ORM, where a
bare indexed lookup takes 0.06 ms; the time went to building the statement, five selectinload
queries, ORM objects and a GROUP BY over every match):

- One statement per search: the hits (limited first) joined to their adapter and composition,
  with their tags and files aggregated into one string each; records are built from its column
  tuples (the ``manifest`` JSON is not read). Only composed versions need one more query, for
  their lineage sources. No ORM objects, no lazy loads.
- The statement is built and compiled once per set of filters given (values are bound), so a
  search costs its execution, not SQLAlchemy's construction of it.
- "The newest matching version of each adapter" is an anti-join (no newer version of the same
  adapter also matches) walked newest first: the database stops after ``limit`` rows instead of
  grouping every match. Newest is the highest id (ids are handed out in push order).
- The text query runs on a full-text index (SQLite FTS5, PostgreSQL ``tsvector`` + GIN; see
  ``migrations/versions/0002_search_index.py``). Its document is built here, in Python, so both
  databases see the same words: the namespace, name, task and description, lowercased and
  split at anything that is not a letter or digit. Each word of a query must begin a word of the
  document (``sql`` finds "Text to SQL", ``acme/senti`` finds ``acme/sentiment``).
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime, timezone
from typing import Sequence

from sqlalchemy import (Column, Integer, MetaData, String, Table, Text, bindparam, cast, exists, func, select,
                        text)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from .db.models import Adapter, Composition, LineageSource, Tag, Version, VersionFile
from .errors import InvalidArgument
from .records import AdapterVersion, Lineage, SourceWeight, VersionFileInfo

# The full-text index table (an FTS5 virtual table on SQLite, a plain table on PostgreSQL).
TEXT_INDEX = "version_search"
MAX_QUERY_WORDS = 16
MAX_WORD_CHARS = 200
# Longer descriptions are indexed by their beginning (a tsvector is limited to 1 MB).
MAX_DOCUMENT_CHARS = 100_000
# Ids per IN (...) list when loading records: far under every driver's parameter limit.
_ID_BATCH = 500

_WORD = re.compile(r"[^\W_]+")
_fts5 = Table(TEXT_INDEX, MetaData(), Column("rowid", Integer), Column("document", Text))
_tsvector = Table(TEXT_INDEX, MetaData(), Column("version_id", Integer), Column("document", Text))
versions = Version.__table__


def words(text_: str) -> list[str]:
    """The words of ``text_`` as the index sees them: lowercased runs of letters and digits, cut
    at ``MAX_WORD_CHARS`` (PostgreSQL leaves out words over 2047 bytes; SQLite would keep them)."""
    return [word[:MAX_WORD_CHARS] for word in _WORD.findall(text_.lower())]


def search_document(namespace: str, name: str, task: str, description: str | None) -> str:
    return " ".join(words(" ".join((namespace, name, task, description or ""))))[:MAX_DOCUMENT_CHARS]


def index_version_text(session: Session, version_id: int, namespace: str, name: str, task: str,
                       description: str | None) -> None:
    """Add a new version to the full-text index, in the caller's (push) transaction. Removal
    needs no call: a trigger (SQLite) or the foreign key's cascade (PostgreSQL) does it."""
    document = search_document(namespace, name, task, description)
    if session.bind.dialect.name == "sqlite":
        statement = text(f"INSERT INTO {TEXT_INDEX} (rowid, document) VALUES (:id, :document)")
    else:
        statement = text(f"INSERT INTO {TEXT_INDEX} (version_id, document) "
                         "VALUES (:id, to_tsvector('simple', :document))")
    session.execute(statement, {"id": version_id, "document": document})


def _text_expression(dialect: str, query: str) -> str | None:
    """The full-text query of ``query``: each word as a word prefix, all required; None when it
    has no word."""
    found = words(query)[:MAX_QUERY_WORDS]
    if not found:
        return None
    if dialect == "sqlite":
        return " AND ".join(f'"{w}"*' for w in found)  # words hold no quotes: safe to quote
    return " & ".join(f"{w}:*" for w in found)  # words hold no tsquery operators


def _text_matches(dialect: str):
    """The ids of versions whose document matches the bound ``text_query``."""
    if dialect == "sqlite":
        return select(_fts5.c.rowid).where(_fts5.c.document.op("MATCH")(bindparam("text_query")))
    return select(_tsvector.c.version_id).where(
        _tsvector.c.document.op("@@")(func.to_tsquery("simple", bindparam("text_query"))))


# The filters search_versions takes; a statement is built once per set of filters given.
_FILTERS = ("base", "tasks", "rank", "min_rank", "max_rank", "target", "source", "text_query")


def _conditions(table, given: frozenset, dialect: str) -> list:
    """The filters in ``given`` on ``table`` (``versions`` or an alias), values bound by name."""
    conditions = {
        "base": lambda: table.c.base_model == bindparam("base"),
        "tasks": lambda: table.c.task.in_(bindparam("tasks", expanding=True)),
        "rank": lambda: table.c.rank == bindparam("rank"),
        "min_rank": lambda: table.c.rank >= bindparam("min_rank"),
        "max_rank": lambda: table.c.rank <= bindparam("max_rank"),
        "target": lambda: table.c.target_modules.like(bindparam("target"), escape="\\"),
        "source": lambda: table.c.source == bindparam("source"),
        "text_query": lambda: table.c.id.in_(_text_matches(dialect)),
    }
    return [conditions[name]() for name in _FILTERS if name in given]


@functools.lru_cache(maxsize=512)
def _search_statement(dialect: str, given: frozenset, all_versions: bool, limited: bool):
    """The search query for one set of filters: built and compiled once, then only executed."""
    hits = select(versions.c.id).where(*_conditions(versions, given, dialect))
    if not all_versions:
        # "No newer version of this adapter matches too". By number, not id: the probe then
        # runs on the (adapter_id, number) unique index, where SQLite's planner would otherwise
        # take the filter's index and walk every newer match of every adapter.
        newer = versions.alias("newer")
        hits = hits.where(~exists().where(newer.c.adapter_id == versions.c.adapter_id,
                                          newer.c.number > versions.c.number, *_conditions(newer, given, dialect)))
    hits = hits.order_by(versions.c.id.desc())
    if limited:
        hits = hits.limit(bindparam("limit", type_=Integer))
    if "offset" in given:
        hits = hits.offset(bindparam("offset", type_=Integer))
    hits = hits.subquery("hit")
    # The details are gathered for the hits only, after the limit: an outer query over them.
    return (_with_details(select(*_RECORD_COLUMNS).select_from(hits).join(Version, Version.id == hits.c.id))
            .order_by(Version.id.desc()))


def search_versions(session: Session, *, base: str | None = None, task: str | Sequence[str] | None = None,
                    rank: int | None = None, min_rank: int | None = None, max_rank: int | None = None,
                    target: str | None = None, query: str | None = None, source: str | None = None,
                    all_versions: bool = False, limit: int | None = 100, offset: int = 0
                    ) -> list[AdapterVersion]:
    """Versions matching every given filter, newest first; unless ``all_versions``, only the
    newest matching version of each adapter; ``offset`` hits skipped first (pages of results).
    Raises ``InvalidArgument`` for a limit under 1 or a negative offset."""
    if limit is not None and limit < 1:
        raise InvalidArgument("--limit must be at least 1")
    if offset < 0:
        raise InvalidArgument("offset must be 0 or more")
    connection = session.connection()
    dialect = connection.dialect.name
    values = dict(base=base or None, tasks=[task] if isinstance(task, str) else (list(task) if task else None),
                  rank=rank, min_rank=min_rank, max_rank=max_rank, source=source or None,
                  target=f"%,{escape_like(target)},%" if target else None, limit=limit,
                  offset=offset or None)
    if query:
        values["text_query"] = _text_expression(dialect, query)
        if values["text_query"] is None:  # nothing but punctuation: no word to find
            return []
    values = {name: value for name, value in values.items() if value is not None}
    statement = _search_statement(dialect, frozenset(values), all_versions, limit is not None)
    return _records(connection, connection.execute(statement, values).all())


def load_records(session: Session, ids: Sequence[int]) -> list[AdapterVersion]:
    """The records of the versions ``ids``, in that order (ids no longer there are skipped)."""
    ids = list(ids)
    connection = session.connection()
    rows = {}
    for start in range(0, len(ids), _ID_BATCH):
        rows.update((row[0], row) for row in connection.execute(_BY_IDS, {"ids": ids[start:start + _ID_BATCH]}))
    return _records(connection, [rows[i] for i in ids if i in rows])


# Separators of the aggregated tags and files: characters no tag, file name or digest holds.
_ITEM, _FIELD = "\x1f", "\x1e"
_RECORD_COLUMNS = (
    Version.id, Adapter.namespace, Adapter.name, Version.number, Version.base_model, Version.task, Version.rank,
    Version.alpha, Version.target_modules, Version.task_type, Version.dtype, Version.param_count, Version.byte_size,
    Version.digest, Version.source, Version.description, Version.created_at,
    select(func.aggregate_strings(Tag.tag, _ITEM)).where(Tag.version_id == Version.id).scalar_subquery(),
    select(func.aggregate_strings(VersionFile.filename + _FIELD + VersionFile.blob_digest + _FIELD
                                  + cast(VersionFile.size, String), _ITEM))
    .where(VersionFile.version_id == Version.id).scalar_subquery(),
    Composition.mode, Composition.objective, Composition.score, Composition.seed, Composition.examples_digest,
    Composition.details)


def _with_details(selected):
    return (selected.join(Adapter, Adapter.id == Version.adapter_id)
            .outerjoin(Composition, Composition.version_id == Version.id))


_BY_IDS = _with_details(select(*_RECORD_COLUMNS).where(Version.id.in_(bindparam("ids", expanding=True))))
_SOURCES = (select(LineageSource.version_id, LineageSource.source_ref, LineageSource.weight,
                   LineageSource.source_digest)
            .where(LineageSource.version_id.in_(bindparam("ids", expanding=True))).order_by(LineageSource.position))


def _records(connection: Connection, rows: Sequence) -> list[AdapterVersion]:
    """Records from rows of ``_RECORD_COLUMNS``; the lineage sources of composed ones are
    read in one more query."""
    composed = [row.id for row in rows if row.mode is not None]
    sources: dict[int, list[SourceWeight]] = {}
    for start in range(0, len(composed), _ID_BATCH):
        for version_id, ref, weight, digest in connection.execute(
                _SOURCES, {"ids": composed[start:start + _ID_BATCH]}):
            sources.setdefault(version_id, []).append(SourceWeight(ref, weight, digest))
    records = []
    for row in rows:
        (version_id, namespace, name, number, base_model, task, rank, alpha, targets, task_type, dtype, param_count,
         byte_size, digest, source, description, created_at, tags, files, mode, objective, score, seed,
         examples_digest, details) = row
        lineage = None
        if mode is not None:
            lineage = Lineage(sources=sources.get(version_id, []), mode=mode, objective=objective, score=score,
                              seed=seed, examples_digest=examples_digest, details=json.loads(details or "{}"))
        records.append(AdapterVersion(
            namespace=namespace, name=name, number=number, base_model=base_model, task=task, rank=rank,
            alpha=alpha, target_modules=[t for t in targets.split(",") if t], task_type=task_type, dtype=dtype,
            param_count=param_count, byte_size=byte_size, digest=digest, source=source, description=description,
            created_at=utc_iso(created_at), tags=_tags(tags),
            files=_files(files), lineage=lineage))
    return records


def _files(aggregated: str | None) -> list[VersionFileInfo]:
    if not aggregated:
        return []
    # Sorted as split, by file name first (no key function: this runs for every hit).
    return [VersionFileInfo(name, digest, int(size))
            for name, digest, size in sorted(item.split(_FIELD) for item in aggregated.split(_ITEM))]


def _tags(aggregated: str | None) -> list[str]:
    tags = aggregated.split(_ITEM) if aggregated else []
    tags.sort()
    return tags


def utc_iso(moment: datetime | None) -> str:
    """``2026-01-31T12:00:00+00:00`` from every backend: SQLite hands back naive datetimes
    (stored as UTC), PostgreSQL aware ones in the session's time zone."""
    if moment is None:
        return ""
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return moment.isoformat(timespec="seconds")


def escape_like(text_: str) -> str:
    return text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


