"""The registry service: push, pull, search, show, tag, rm, verify and gc over the metadata
store and the blob store. The CLI, the Python API and the HTTP server all call this class.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from .adapter import Manifest, read_adapter
from .blob_store import open_blob_store
from .db.engine import Database
from .db.models import Adapter, Composition, LineageSource, Tag, Version, VersionFile
from .digests import version_digest
from .errors import AdapterNotFound, DatabaseError, InvalidName
from .push_preparation import (base_model_of, check_push_arguments, check_stored_examples, check_stored_files,
                               prepare_push, stage_stored_files)
from .records import AdapterVersion, GcReport, Lineage, SourceWeight, VerifyReport, VersionFileInfo
from .refs import LATEST, AdapterName, AdapterRef, check_part, check_new_tag
from .bounds import check_grace_seconds, check_whole_number
from .blob_pins import check_blobs_present, delete_unreferenced
from .search import index_version_text, load_records, search_versions, utc_iso
from .settings import Settings
from .snapshots import SNAPSHOT_MARKER, materialise, remove_snapshot, snapshot_dir, snapshot_folders

# Names other modules and tests have imported from here.
__all__ = ["GC_GRACE_SECONDS", "SNAPSHOT_MARKER", "Registry", "open_blob_store"]

Progress = Callable[[int], None]
GC_GRACE_SECONDS = 3600
_WRITE_RETRIES = 8


def _unique_violation(error: SQLIntegrityError) -> bool:
    """A UNIQUE constraint (SQLite's message, PostgreSQL's SQLSTATE 23505)."""
    return getattr(error.orig, "sqlstate", None) == "23505" or "UNIQUE" in str(error.orig)


class Registry:
    """The local registry: one metadata store and one blob store, per ``Settings``."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.load()
        self.db = Database(self.settings.database_url)
        self.db.ensure_current()
        self.blobs = open_blob_store(self.settings.store, s3_endpoint_url=self.settings.s3_endpoint_url)

    def close(self) -> None:
        self.db.dispose()

    # -- writing -----------------------------------------------------------------------------

    def push(self, path: str | Path, *, name: str, task: str, base: str | None = None,
             tags: Sequence[str] = (), description: str | None = None, examples: str | Path | None = None,
             convert_pickle: bool = False, source: str = "pushed", lineage: Lineage | None = None,
             progress: Progress | None = None, label: str | None = None,
             alpha: float | None = None) -> AdapterVersion:
        """Store the adapter folder at ``path`` as the next version of ``name``.

        All or nothing: blobs are written first, then one transaction registers the version and
        moves ``latest``. Messages name ``label`` in place of ``path`` when given. Raises
        ``InvalidAdapter``, ``PickleRefused``, ``InvalidName``, ``InvalidArgument`` (nothing is
        stored then).
        """
        adapter_name, task, tags = check_push_arguments(name, task, tags, source)
        with tempfile.TemporaryDirectory(prefix="loramgr-push-") as scratch:
            manifest, base_model, sources = prepare_push(path, Path(scratch), base=base, examples=examples,
                                                         convert_pickle=convert_pickle, label=label,
                                                         alpha=alpha)
            stored = {}
            for filename, file_path in sorted(sources.items()):
                stored[filename] = self.blobs.put_file(file_path, progress=progress)
            # ``restore``: a blob gc removed before the commit is stored again inside it.
            return self._commit(adapter_name, manifest, stored, base_model=base_model, task=task, tags=tags,
                                description=description, source=source, lineage=lineage,
                                restore=lambda filename: self.blobs.put_file(sources[filename]))

    def push_stored(self, files: Mapping[str, str], *, name: str, task: str, base: str | None = None,
                    tags: Sequence[str] = (), description: str | None = None, source: str = "pushed",
                    lineage: Lineage | None = None) -> AdapterVersion:
        """Register the next version of ``name`` from blobs already in the store (``files``:
        file name -> sha256), as the server does once a client has uploaded them.

        Validated exactly like ``push``: the blobs are put under their file names in a scratch
        folder in the hub's home (linked, not copied, when the store is a local folder) and read
        with ``read_adapter``; then one transaction registers the version. Raises
        ``InvalidAdapter``, ``InvalidName``, ``InvalidArgument`` (a file name that is not an
        adapter file, a malformed digest, a blob that is not in the store).
        """
        adapter_name, task, tags = check_push_arguments(name, task, tags, source)
        files = dict(files)
        check_stored_files(files, self.blobs)
        scratch_root = self.settings.home / "tmp"
        scratch_root.mkdir(parents=True, exist_ok=True)
        # The scratch folder lives in the home: a server writes nowhere else.
        with tempfile.TemporaryDirectory(prefix="push-", dir=scratch_root) as scratch:
            folder = Path(scratch)
            stage_stored_files(files, self.blobs, folder)
            # Messages name the adapter, never the server's scratch folder.
            manifest = read_adapter(folder, digests=False, label=name)
            check_stored_examples(files, folder, name)
            base_model = base_model_of(manifest, base, name)
            stored = {filename: (digest, self.blobs.size(digest)) for filename, digest in files.items()}
        return self._commit(adapter_name, manifest, stored, base_model=base_model, task=task, tags=tags,
                            description=description, source=source, lineage=lineage)

    def _commit(self, adapter_name: AdapterName, manifest: Manifest, stored: dict[str, tuple[str, int]], *,
                base_model: str, task: str, tags: list[str], description: str | None, source: str,
                lineage: Lineage | None, restore: Callable[[str], object] | None = None) -> AdapterVersion:
        """Register stored blobs as the next version, in one transaction. ``restore(file name)``
        stores a file's blob again if gc removed it meanwhile (``blob_pins``)."""
        digest = version_digest((n, d) for n, (d, _) in stored.items())
        record = dict(base_model=base_model, task=task, task_type=manifest.task_type, rank=manifest.rank,
                      alpha=float(manifest.alpha), target_modules="," + ",".join(manifest.target_modules) + ",",
                      dtype=manifest.dtype, param_count=manifest.param_count,
                      byte_size=sum(size for _, size in stored.values()), digest=digest, source=source,
                      description=description, manifest=json.dumps(manifest.to_dict(), sort_keys=True))
        return self._write(lambda s: self._register(s, adapter_name, record, stored, tags, lineage, restore))

    def _write(self, work: Callable[[Session], Version | AdapterVersion]) -> AdapterVersion:
        """Run ``work`` in one write transaction, retrying the races a concurrent pusher causes."""
        for attempt in range(_WRITE_RETRIES):
            try:
                with self.db.writing() as session:
                    result = work(session)
                    session.flush()
                    return result if isinstance(result, AdapterVersion) else self._record(result)
            except SQLIntegrityError as exc:
                # Two first pushes of one adapter raced to create its row: the loser retries. Any
                # other constraint (a NOT NULL, say) is no race: retrying would only repeat it.
                if not _unique_violation(exc):
                    line = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
                    raise DatabaseError(f"the metadata store refused the version: {line}") from None
                if attempt == _WRITE_RETRIES - 1:
                    raise DatabaseError("could not register the version: too much contention, try again")
            except OperationalError as exc:
                if "locked" not in str(exc.orig) or attempt == _WRITE_RETRIES - 1:
                    raise DatabaseError(f"the metadata store refused the write: {exc.orig}") from None
            time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _register(self, session: Session, adapter_name: AdapterName, record: dict,
                  stored: dict[str, tuple[str, int]], tags: list[str], lineage: Lineage | None,
                  restore: Callable[[str], object] | None = None) -> Version:
        adapter = self._adapter(session, adapter_name, create=True)  # SQLite: BEGIN IMMEDIATE, gc waits
        # gc may have removed a blob since it was stored. Checked before the adapter's row lock:
        # the check asks the blob store (S3: a round trip per file) and concurrent pushers of the
        # adapter would queue behind it. The shared blob lock it takes (PostgreSQL) lasts until the
        # transaction ends, so gc still cannot delete in between.
        check_blobs_present(session, self.blobs, stored, restore)
        # An UPDATE takes the row lock (PostgreSQL) / is inside BEGIN IMMEDIATE (SQLite), so
        # concurrent pushers of one adapter get consecutive, distinct numbers.
        number = session.execute(
            update(Adapter).where(Adapter.id == adapter.id)
            .values(last_number=Adapter.last_number + 1).returning(Adapter.last_number)).scalar_one()
        version = Version(adapter_id=adapter.id, number=number, **record)
        version.files = [VersionFile(filename=n, blob_digest=d, size=s) for n, (d, s) in sorted(stored.items())]
        session.add(version)
        session.flush()
        index_version_text(session, version.id, adapter_name.namespace, adapter_name.name, record["task"],
                           record["description"])
        for tag in [LATEST, *tags]:
            self._set_tag(session, adapter.id, tag, version.id)
        if lineage is not None:
            self._add_lineage(session, version, lineage)
        return version

    def _add_lineage(self, session: Session, version: Version, lineage: Lineage) -> None:
        version.composition = Composition(
            mode=lineage.mode, objective=lineage.objective, score=lineage.score, seed=lineage.seed,
            examples_digest=lineage.examples_digest, details=json.dumps(lineage.details, sort_keys=True))
        for position, source in enumerate(lineage.sources):
            try:
                source_version = self._resolve(session, AdapterRef.parse(source.ref))
            except (AdapterNotFound, InvalidName):
                source_version = None  # a local folder, or a version since removed: kept as text
            version.sources.append(LineageSource(
                position=position, source_ref=source.ref, weight=float(source.weight),
                source_version_id=source_version.id if source_version else None,
                source_digest=source.digest or (source_version.digest if source_version else None)))

    def _set_tag(self, session: Session, adapter_id: int, tag: str, version_id: int) -> None:
        existing = session.get(Tag, (adapter_id, tag))
        if existing is None:
            session.add(Tag(adapter_id=adapter_id, tag=tag, version_id=version_id))
        else:
            existing.version_id = version_id

    def tag(self, ref: str, tag: str) -> AdapterVersion:
        """Point ``tag`` at the version ``ref`` resolves to. Raises ``AdapterNotFound``, ``InvalidName``."""
        check_new_tag(tag)
        if tag == LATEST:
            raise InvalidName("the tag 'latest' is managed by loramgr: it always names the newest version")
        parsed = AdapterRef.parse(ref)

        def work(session: Session) -> Version:
            version = self._resolve(session, parsed)
            self._set_tag(session, version.adapter_id, tag, version.id)
            return version

        return self._write(work)

    def rm(self, ref: str) -> AdapterVersion:
        """Remove one version (its number is never reused); ``latest`` moves to the newest left.
        Its snapshot goes now, its blobs at the next ``gc``. Raises ``AdapterNotFound``."""
        parsed = AdapterRef.parse(ref)

        def work(session: Session) -> AdapterVersion:
            version = self._resolve(session, parsed)
            removed = self._record(version)
            adapter_id = version.adapter_id
            for tag in session.scalars(select(Tag).where(Tag.version_id == version.id)).all():
                session.delete(tag)
            session.delete(version)
            session.flush()
            newest = session.scalar(select(Version).where(Version.adapter_id == adapter_id)
                                    .order_by(Version.number.desc()).limit(1))
            if newest is not None:
                self._set_tag(session, adapter_id, LATEST, newest.id)
            return removed

        removed = self._write(work)
        remove_snapshot(self.snapshot_dir(removed))
        return removed

    # -- reading -----------------------------------------------------------------------------

    def _adapter(self, session: Session, name: AdapterName, *, create: bool = False) -> Adapter | None:
        adapter = session.scalar(select(Adapter).where(Adapter.namespace == name.namespace,
                                                       Adapter.name == name.name))
        if adapter is None and create:
            adapter = Adapter(namespace=name.namespace, name=name.name, last_number=0)
            session.add(adapter)
            session.flush()
        return adapter

    def _resolve(self, session: Session, ref: AdapterRef) -> Version:
        adapter = self._adapter(session, ref.adapter)
        if adapter is None:
            raise AdapterNotFound(f"no adapter named {ref.adapter}: `loramgr search` lists what there is",
                                  ref=str(ref))
        if ref.version is not None:
            version = session.scalar(select(Version).where(Version.adapter_id == adapter.id,
                                                           Version.number == ref.version))
        else:
            tag = session.get(Tag, (adapter.id, ref.tag or LATEST))
            version = tag.version if tag else None
        if version is None:
            raise AdapterNotFound(f"{ref.adapter} has no version {ref.selector}: `loramgr show {ref.adapter}` "
                                  "shows the latest", ref=str(ref))
        return version

    def _record(self, version: Version) -> AdapterVersion:
        lineage = None
        if version.composition is not None:
            c = version.composition
            lineage = Lineage(
                sources=[SourceWeight(s.source_ref, s.weight, s.source_digest) for s in version.sources],
                mode=c.mode, objective=c.objective, score=c.score, seed=c.seed,
                examples_digest=c.examples_digest, details=json.loads(c.details or "{}"))
        return AdapterVersion(
            namespace=version.adapter.namespace, name=version.adapter.name, number=version.number,
            base_model=version.base_model, task=version.task, rank=version.rank, alpha=version.alpha,
            target_modules=[t for t in version.target_modules.split(",") if t], task_type=version.task_type,
            dtype=version.dtype, param_count=version.param_count, byte_size=version.byte_size,
            digest=version.digest, source=version.source, description=version.description,
            created_at=utc_iso(version.created_at),
            tags=[t.tag for t in version.tags],
            files=[VersionFileInfo(f.filename, f.blob_digest, f.size) for f in version.files],
            lineage=lineage)

    def show(self, ref: str) -> AdapterVersion:
        """The version ``ref`` names. Raises ``AdapterNotFound``, ``InvalidName``."""
        parsed = AdapterRef.parse(ref)
        with self.db.reading() as session:
            return self._record(self._resolve(session, parsed))

    def versions(self, name: str) -> list[AdapterVersion]:
        """Every version of one adapter, newest first."""
        adapter_name = AdapterName.parse(name)
        with self.db.reading() as session:
            adapter = self._adapter(session, adapter_name)
            if adapter is None:
                raise AdapterNotFound(f"no adapter named {adapter_name}")
            return load_records(session, session.scalars(select(Version.id).where(Version.adapter_id == adapter.id)
                                                         .order_by(Version.number.desc())).all())

    def search(self, *, base: str | None = None, task: str | Sequence[str] | None = None,
               rank: int | None = None, min_rank: int | None = None, max_rank: int | None = None,
               target: str | None = None, query: str | None = None, source: str | None = None,
               all_versions: bool = False, limit: int | None = 100, offset: int = 0) -> list[AdapterVersion]:
        """Versions matching every given filter, newest first; by default only the newest
        matching version of each adapter. ``query``: each of its words begins a word of the
        name, task or description. Raises ``InvalidArgument`` for a limit under 1, or a rank or
        limit that is not a whole number the store can hold."""
        for what, value in (("rank", rank), ("min_rank", min_rank), ("max_rank", max_rank), ("limit", limit),
                            ("offset", offset)):
            if value is not None:
                check_whole_number(value, f"--{what.replace('_', '-')}")
        with self.db.reading() as session:
            return search_versions(session, base=base, task=task, rank=rank, min_rank=min_rank, max_rank=max_rank,
                                   target=target, query=query, source=source, all_versions=all_versions,
                                   limit=limit, offset=offset)

    def ls(self, namespace: str | None = None) -> list[AdapterVersion]:
        """The latest version of every adapter, by name."""
        selected = (select(Version.id).join(Tag, (Tag.version_id == Version.id) & (Tag.tag == LATEST))
                    .join(Adapter, Adapter.id == Version.adapter_id))
        if namespace:
            selected = selected.where(Adapter.namespace == check_part(namespace, "namespace"))
        with self.db.reading() as session:
            return load_records(session, session.scalars(selected.order_by(Adapter.namespace, Adapter.name)).all())

    def read_file(self, ref: str, filename: str) -> bytes | None:
        """The bytes of one small file of a version (e.g. ``examples.jsonl``), None if absent."""
        version = self.show(ref)
        for f in version.files:
            if f.name == filename:
                with self.blobs.open(f.digest) as handle:
                    return handle.read()
        return None

    def facets(self, limit: int = 500) -> dict[str, list[str]]:
        """The distinct base models and tasks in the registry (for search filters), sorted."""
        with self.db.reading() as session:
            return {key: list(session.scalars(select(column).distinct().order_by(column).limit(limit)).all())
                    for key, column in (("base_models", Version.base_model), ("tasks", Version.task))}

    def compositions_using(self, name: str, limit: int = 200) -> list[dict]:
        """What was composed from any version of adapter ``name``, newest first:
        ``{"source": "NS/NAME@N", "weight": w, "composed": "NS/OTHER@M"}`` per use."""
        adapter_name = AdapterName.parse(name)
        with self.db.reading() as session:
            adapter = self._adapter(session, adapter_name)
            if adapter is None:
                raise AdapterNotFound(f"no adapter named {adapter_name}")
            rows = session.execute(
                select(LineageSource.source_ref, LineageSource.weight, Adapter.namespace, Adapter.name,
                       Version.number)
                .join(Version, Version.id == LineageSource.version_id).join(Adapter, Adapter.id == Version.adapter_id)
                .where(LineageSource.source_version_id.in_(
                    select(Version.id).where(Version.adapter_id == adapter.id).correlate(None)))
                .order_by(Version.id.desc(), LineageSource.position).limit(limit)).all()
        return [{"source": ref, "weight": weight, "composed": f"{ns}/{n}@{number}"}
                for ref, weight, ns, n, number in rows]

    # -- pulling -----------------------------------------------------------------------------

    def snapshot_dir(self, version: AdapterVersion) -> Path:
        return snapshot_dir(self.settings.home / "snapshots", version)

    def pull(self, ref: str, *, output: str | Path | None = None, force: bool = False,
             progress: Progress | None = None) -> Path:
        """Materialise a version as a PEFT folder and return its path.

        Without ``output`` the files go to (or are reused from) the hub's snapshot cache.
        Raises ``AdapterNotFound``, ``DestinationNotEmpty`` (use ``force``), ``IntegrityError``.
        """
        version = self.show(ref)
        return materialise(version, output, self.snapshot_dir(version),
                           lambda f, dest: self._copy_blob(f, dest, progress), force=force,
                           link=lambda f, dest: self._link_blob(f, dest, progress))

    def _copy_blob(self, file: VersionFileInfo, destination: Path, progress: Progress | None) -> None:
        self.blobs.copy_to(file.digest, destination)
        if progress:
            progress(file.size)

    def _link_blob(self, file: VersionFileInfo, destination: Path, progress: Progress | None) -> bool:
        linked = self.blobs.link_to(file.digest, destination)
        if linked and progress:
            progress(file.size)
        return linked

    # -- maintenance -------------------------------------------------------------------------

    def _referenced_digests(self, session: Session) -> set[str]:
        return set(session.scalars(select(VersionFile.blob_digest).distinct()).all())

    def verify(self, ref: str | None = None) -> VerifyReport:
        """Re-hash the blobs of one version (or of all) and report missing or corrupt ones."""
        with self.db.reading() as session:
            if ref is not None:
                rows = [(str(AdapterRef.parse(ref)), f) for f in self._resolve(session, AdapterRef.parse(ref)).files]
            else:
                rows = [(f"{ns}/{n}@{num}", f) for ns, n, num, f in session.execute(
                    select(Adapter.namespace, Adapter.name, Version.number, VersionFile)
                    .join(Version, Version.adapter_id == Adapter.id).join(VersionFile)).all()]
            referenced = self._referenced_digests(session)
        problems, checked = [], {}
        for shown_ref, f in rows:
            if f.blob_digest not in checked:
                checked[f.blob_digest] = self.blobs.verify(f.blob_digest)
            if checked[f.blob_digest]:
                problems.append({"ref": shown_ref, "file": f.filename, "digest": f.blob_digest,
                                 "problem": checked[f.blob_digest]})
        unreferenced = sum(1 for d in self.blobs.digests() if d not in referenced)
        return VerifyReport(checked_files=len(rows), problems=problems,
                            dead_temp_files=len(self.blobs.dead_temp_files()), unreferenced_blobs=unreferenced)

    def gc(self, *, grace_seconds: float = GC_GRACE_SECONDS, dry_run: bool = False) -> GcReport:
        """Remove blobs no version references and temp files of crashed writers.

        Unreferenced blobs younger than ``grace_seconds`` are kept: a push running right now
        may have stored them and not yet committed its transaction. Raises ``InvalidArgument``
        for a grace period that is negative, NaN or infinite.
        """
        grace_seconds = check_grace_seconds(grace_seconds)
        with self.db.reading() as session:
            referenced = self._referenced_digests(session)
        # Snapshots first: a blob still linked from one would not free its bytes.
        removed_snapshots, freed = self._remove_dead_snapshots(grace_seconds, dry_run)
        removed = kept = 0
        candidates = []
        for digest in list(self.blobs.digests()):
            if digest in referenced:
                continue
            try:
                if self.blobs.age_seconds(digest) < grace_seconds:
                    kept += 1
                    continue
                candidates.append((digest, self.blobs.size(digest)))
            except FileNotFoundError:
                continue  # another gc removed it meanwhile
        # Deleted only after asking again under the blob lock: a push may have committed since.
        deleted = candidates if dry_run else delete_unreferenced(self.db, self.blobs, candidates)
        removed += len(deleted)
        freed += sum(size for _, size in deleted)
        temps = self.blobs.dead_temp_files()
        for temp in temps:
            freed += self.blobs.temp_size(temp)
            if not dry_run:
                self.blobs.remove_temp(temp)
        return GcReport(removed_blobs=removed, removed_temp_files=len(temps), freed_bytes=freed,
                        kept_recent_blobs=kept, removed_snapshots=removed_snapshots)

    def _remove_dead_snapshots(self, grace_seconds: float, dry_run: bool) -> tuple[int, int]:
        """Remove the snapshot folders of versions that no longer exist; returns (folders, bytes
        freed). One younger than ``grace_seconds`` is kept: a pull may be writing it for a
        version pushed since the versions were listed."""
        folders = snapshot_folders(self.settings.home / "snapshots")
        if not folders:
            return 0, 0
        with self.db.reading() as session:
            live = set(session.execute(select(Adapter.namespace, Adapter.name, Version.number)
                                       .join(Version, Version.adapter_id == Adapter.id)).tuples().all())
        removed = freed = 0
        for key, folder in sorted(folders.items()):
            if key in live or time.time() - folder.stat().st_mtime < grace_seconds:
                continue
            removed += 1
            freed += remove_snapshot(folder, dry_run=dry_run)
        return removed, freed
