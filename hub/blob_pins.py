"""gc and pushes, side by side: a blob is never deleted while a committed or committing version
references it, at any grace period.

A push stores its blobs first and commits its version after; gc lists what is referenced, then
deletes the rest. Without coordination gc can delete a blob between a push's upload and its
commit (or a blob that was unreferenced and old, which an identical push is about to reuse), and
the committed version then points at nothing. So:

- a commit, inside its transaction, takes the blob lock *shared* and checks that every blob it
  references is in the store (``check_blobs_present``); if gc removed one, the commit stores it
  again when it has the file (a local push), else fails with
  ``InvalidArgument`` (``details["blobs_removed"]``) and registers nothing (the remote client then
  uploads again and repeats the commit);
- gc deletes only inside a write transaction holding the blob lock *exclusively*, after asking
  the store again which of the candidates are referenced (``delete_unreferenced``).

The lock: on PostgreSQL a transaction-scoped advisory lock (shared for commits, so they never
wait for each other); on SQLite write transactions begin with ``BEGIN IMMEDIATE`` and are
serialised already.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from .db.models import VersionFile
from .errors import InvalidArgument

BLOB_LOCK_KEY = 0x6C6F72616D6762  # "loramgb": any constant no other lock of this database uses
_BATCH = 500


def lock_blobs(session: Session, *, exclusive: bool) -> None:
    if session.get_bind().dialect.name == "postgresql":
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        session.execute(text(f"SELECT {function}(:key)"), {"key": BLOB_LOCK_KEY})


def check_blobs_present(session: Session, blobs, stored: Mapping[str, tuple[str, int]],
                        restore: Callable[[str], object] | None = None) -> None:
    """Inside a commit's transaction, under the shared blob lock (so no gc deletes until the
    transaction ends): make sure every ``stored`` blob (file name -> (sha256, size)) is still in
    the store. One that gc removed since it was stored is stored again with ``restore(file
    name)`` when given (a local push has the files); otherwise ``InvalidArgument`` with
    ``details["blobs_removed"]`` (a remote push must upload it again)."""
    lock_blobs(session, exclusive=False)
    missing = sorted(name for name, (digest, _) in stored.items() if not blobs.has(digest))
    if missing and restore is not None:
        for name in missing:
            restore(name)
        missing = [name for name in missing if not blobs.has(stored[name][0])]
    if missing:
        raise InvalidArgument(f"{', '.join(missing)} was removed from the blob store by gc before the version "
                              "was committed: upload it again", blobs_removed=True)


def delete_unreferenced(db, blobs, candidates: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Delete those of ``candidates`` ((sha256, size) pairs) that no version references, checked
    again under the exclusive blob lock; returns the ones deleted."""
    candidates, deleted = list(candidates), []
    for start in range(0, len(candidates), _BATCH):
        batch = dict(candidates[start:start + _BATCH])
        with db.writing() as session:
            lock_blobs(session, exclusive=True)
            referenced = set(session.scalars(select(VersionFile.blob_digest)
                                             .where(VersionFile.blob_digest.in_(list(batch))).distinct()))
            for digest, size in batch.items():
                if digest not in referenced:
                    blobs.delete(digest)
                    deleted.append((digest, size))
    return deleted
