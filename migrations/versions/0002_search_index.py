"""search index: full-text index of the text query, search indexes ending in id

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:40:00

SQLite: an FTS5 table ``version_search`` (rowid = version id) and a trigger that removes a
version's row when the version goes. PostgreSQL: a table ``version_search`` (version id,
``tsvector``) with a GIN index, its rows removed by the foreign key's cascade. The registry
writes a version's row in its push transaction (``loramgr.hub.search.index_version_text``);
this revision fills in the versions already there.
"""

import re

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# Frozen copy of loramgr.hub.search.search_document as of this revision (a migration must not
# change when the code does).
_WORD = re.compile(r"[^\W_]+")


def _document(namespace, name, task, description):
    text = " ".join((namespace, name, task, description or "")).lower()
    return " ".join(word[:200] for word in _WORD.findall(text))[:100_000]


_SQLITE = [
    "CREATE VIRTUAL TABLE version_search USING fts5(document, tokenize = 'unicode61 remove_diacritics 0')",
    "CREATE TRIGGER version_search_delete AFTER DELETE ON versions BEGIN "
    "DELETE FROM version_search WHERE rowid = OLD.id; END",
]
_POSTGRESQL = [
    "CREATE TABLE version_search (version_id INTEGER PRIMARY KEY REFERENCES versions (id) ON DELETE CASCADE, "
    "document TSVECTOR NOT NULL)",
    "CREATE INDEX ix_version_search_document ON version_search USING gin (document)",
]


def upgrade() -> None:
    # The same indexes with id appended: an equality filter's matches come out newest first.
    op.drop_index('ix_versions_search', table_name='versions')
    op.drop_index('ix_versions_task', table_name='versions')
    op.create_index('ix_versions_search', 'versions', ['base_model', 'task', 'rank', 'id'], unique=False)
    op.create_index('ix_versions_task', 'versions', ['task', 'id'], unique=False)

    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    for statement in _SQLITE if sqlite else _POSTGRESQL:
        op.execute(statement)
    rows = bind.execute(sa.text("SELECT v.id, a.namespace, a.name, v.task, v.description FROM versions v "
                                "JOIN adapters a ON a.id = v.adapter_id")).all()
    insert = ("INSERT INTO version_search (rowid, document) VALUES (:id, :document)" if sqlite else
              "INSERT INTO version_search (version_id, document) VALUES (:id, to_tsvector('simple', :document))")
    if rows:
        bind.execute(sa.text(insert), [{"id": row[0], "document": _document(*row[1:])} for row in rows])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER version_search_delete")
    op.execute("DROP TABLE version_search")
    op.drop_index('ix_versions_task', table_name='versions')
    op.drop_index('ix_versions_search', table_name='versions')
    op.create_index('ix_versions_search', 'versions', ['base_model', 'task', 'rank'], unique=False)
    op.create_index('ix_versions_task', 'versions', ['task'], unique=False)
