"""ORM models of the metadata store. The schema itself is owned by the alembic revisions in
``migrations/``; a test checks that these models and the migrated schema agree.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


# The full-text index of search (an FTS5 virtual table and its shadow tables on SQLite, a
# tsvector table on PostgreSQL) is made by raw DDL in migration 0002, not by a model.
FULL_TEXT_TABLES = "version_search"


def is_modelled(_object, name, type_, _reflected, _compare_to) -> bool:
    """alembic's ``include_object``: leave the full-text index out of schema comparisons."""
    return not (type_ == "table" and name is not None and name.startswith(FULL_TEXT_TABLES))


class Adapter(Base):
    __tablename__ = "adapters"
    __table_args__ = (UniqueConstraint("namespace", "name", name="uq_adapters_namespace_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    # The last version number handed out; bumped in the push transaction so numbers are never
    # reused, even after `rm`, and concurrent pushers serialise on this row.
    last_number: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    versions: Mapped[list["Version"]] = relationship(back_populates="adapter", cascade="all, delete-orphan",
                                                     passive_deletes=True)
    tags: Mapped[list["Tag"]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("adapter_id", "number", name="uq_versions_adapter_number"),
        # `id` last: search walks the matches of an equality filter newest first from the index.
        Index("ix_versions_search", "base_model", "task", "rank", "id"),
        Index("ix_versions_task", "task", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    base_model: Mapped[str] = mapped_column(String(256))
    task: Mapped[str] = mapped_column(String(128))
    task_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rank: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)
    # Stored as ",q_proj,v_proj," so one LIKE '%,name,%' finds a target module.
    target_modules: Mapped[str] = mapped_column(Text)
    dtype: Mapped[str] = mapped_column(String(32))
    param_count: Mapped[int] = mapped_column(BigInteger)
    byte_size: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))  # pushed | composed | imported
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    manifest: Mapped[str] = mapped_column(Text)  # the adapter's Manifest as JSON
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

    adapter: Mapped[Adapter] = relationship(back_populates="versions")
    files: Mapped[list["VersionFile"]] = relationship(cascade="all, delete-orphan", passive_deletes=True,
                                                      order_by="VersionFile.filename")
    composition: Mapped["Composition | None"] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    sources: Mapped[list["LineageSource"]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="LineageSource.position",
        foreign_keys="LineageSource.version_id")
    tags: Mapped[list["Tag"]] = relationship(primaryjoin="Tag.version_id == Version.id", viewonly=True,
                                             order_by="Tag.tag")


class VersionFile(Base):
    __tablename__ = "version_files"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    filename: Mapped[str] = mapped_column(String(128), primary_key=True)
    blob_digest: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)


class Tag(Base):
    __tablename__ = "tags"

    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), index=True)

    version: Mapped[Version] = relationship()


class Composition(Base):
    """How a ``composed`` version was made: the search that produced it."""

    __tablename__ = "compositions"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    mode: Mapped[str] = mapped_column(String(32))
    objective: Mapped[str] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    examples_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[str] = mapped_column(Text, default="{}")  # budget, optimizer, shots... as JSON


class LineageSource(Base):
    """One source adapter version of a composed version, with its weight."""

    __tablename__ = "lineage_sources"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Kept as text too: the source may be removed later, the lineage must still say what it was.
    source_ref: Mapped[str] = mapped_column(String(160))
    source_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("versions.id", ondelete="SET NULL"), nullable=True, index=True)
    weight: Mapped[float] = mapped_column(Float)


class Token(Base):
    """A bearer token of the team hub, stored as a sha256 of the secret."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    namespace: Mapped[str] = mapped_column(String(64))
    can_write: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
