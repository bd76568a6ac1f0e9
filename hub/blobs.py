"""Content-addressed blob store: each file is stored once, under its sha256.

Writes go to a unique temp file in ``tmp/`` (named after the writing process), are hashed while
they are written, checked against the expected digest if one is given, and only then moved into
place with ``os.replace``: a crash never leaves a visible half-blob. ``gc`` can tell a dead
writer's temp file from a live one by the process id in its name.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from .digests import CHUNK, new_sha256, read_file_chunks, sha256_file
from .errors import IntegrityError


def _copy_while_hashing(source: Path, destination: Path, progress=None) -> str:
    """Copy ``source`` with the kernel (``shutil.copyfile``) while a thread hashes it."""
    digest = new_sha256()
    failures: list[BaseException] = []

    def hash_source() -> None:
        try:
            with open(source, "rb", buffering=0) as f:
                for chunk in read_file_chunks(f):
                    digest.update(chunk)  # hashlib releases the GIL for large buffers
                    if progress:
                        progress(len(chunk))
        except BaseException as exc:  # re-raised below: a partial digest must never name a blob
            failures.append(exc)

    hasher = threading.Thread(target=hash_source, name="loramgr-hash")
    hasher.start()
    try:
        shutil.copyfile(source, destination)
    finally:
        hasher.join()
    if failures:
        raise failures[0]
    return digest.hexdigest()


# Why a hard link can fail where a copy works: another device, a file system without links (or
# without them for us), too many links to one file.
_NO_LINKS = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalBlobStore:
    """Blobs as files ``<root>/sha256/<ab>/<digest>`` on a local file system."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.tmp = self.root / "tmp"

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def _temp_file(self) -> tuple[int, Path]:
        self.tmp.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{time.monotonic_ns()}-{os.urandom(4).hex()}"
        path = self.tmp / name
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), path

    def put_chunks(self, chunks: Iterable[bytes], expected_digest: str | None = None,
                   progress=None) -> tuple[str, int]:
        """Store a stream of bytes; returns (sha256, size). Raises ``IntegrityError`` when
        ``expected_digest`` is given and the bytes do not match it (nothing is stored then)."""
        fd, temp = self._temp_file()
        digest, size = new_sha256(), 0
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    if progress:
                        progress(len(chunk))
            hexdigest = digest.hexdigest()
            if expected_digest and hexdigest != expected_digest:
                raise IntegrityError(f"content does not match its digest: expected {expected_digest}, "
                                     f"got {hexdigest}", digest=expected_digest)
            self._move_into_place(temp, hexdigest)
            return hexdigest, size
        finally:
            temp.unlink(missing_ok=True)

    def put_file(self, source: str | Path, progress=None) -> tuple[str, int]:
        """Store a file's bytes; returns (sha256, size). ``progress`` gets byte counts.

        A large file is copied by the kernel while another thread hashes it, which takes about
        the time of the hash alone instead of hash + copy. If the file changes meanwhile (size or
        mtime), the copy is thrown away and the bytes are hashed while copied instead.
        """
        source = Path(source)
        before = source.stat()
        if before.st_size > CHUNK:
            fd, temp = self._temp_file()
            os.close(fd)
            try:
                hexdigest = _copy_while_hashing(source, temp, progress)
                after = source.stat()
                if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
                    self._move_into_place(temp, hexdigest)
                    return hexdigest, before.st_size
            finally:
                temp.unlink(missing_ok=True)
        with open(source, "rb", buffering=0) as f:
            return self.put_chunks(read_file_chunks(f), progress=progress)

    def _move_into_place(self, temp: Path, digest: str) -> None:
        final = self.path(digest)
        if final.is_file():
            # Already stored; refresh its mtime so gc's grace period protects it from a concurrent
            # gc while this push is still being committed.
            os.utime(final)
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise IntegrityError(f"blob {digest} is missing from the store {self.root}", digest=digest) from None

    def read_chunks(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with self.open(digest) as f:
            f.seek(start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                chunk = f.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def link_to(self, digest: str, destination: Path) -> bool:
        """Hard-link the blob at ``destination`` when the file system allows (same device, links
        supported); False, with nothing written, when it does not. The blob is made read-only
        first: the link is the blob, and must never be written through."""
        source = self.path(digest)
        if not source.is_file():
            raise IntegrityError(f"blob {digest} is missing from the store {self.root}", digest=digest)
        try:
            os.chmod(source, 0o444)
            os.link(source, destination)
        except OSError as exc:
            if exc.errno in _NO_LINKS:
                return False
            raise
        return True

    def copy_to(self, digest: str, destination: Path) -> None:
        """Copy a blob to ``destination`` (which the caller later renames into place)."""
        source = self.path(digest)
        if not source.is_file():
            raise IntegrityError(f"blob {digest} is missing from the store {self.root}", digest=digest)
        shutil.copyfile(source, destination)

    def verify(self, digest: str) -> str | None:
        """None when the blob is present and intact, else 'missing' or 'corrupt'."""
        path = self.path(digest)
        if not path.is_file():
            return "missing"
        return None if sha256_file(path) == digest else "corrupt"

    def digests(self) -> Iterator[str]:
        base = self.root / "sha256"
        if base.is_dir():
            for path in base.glob("??/*"):
                yield path.name

    def age_seconds(self, digest: str) -> float:
        return time.time() - self.path(digest).stat().st_mtime

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def dead_temp_files(self) -> list[Path]:
        """Temp files whose writing process is gone: leftovers of a crash."""
        if not self.tmp.is_dir():
            return []
        dead = []
        for path in self.tmp.iterdir():
            pid = path.name.split("-", 1)[0]
            if not pid.isdigit() or not _pid_alive(int(pid)):
                dead.append(path)
        return dead

    def temp_size(self, temp: Path) -> int:
        """The size of a leftover from ``dead_temp_files`` (0 when it is gone already)."""
        try:
            return temp.stat().st_size
        except FileNotFoundError:
            return 0

    def remove_temp(self, temp: Path) -> None:
        """Remove a leftover from ``dead_temp_files``; gone already is fine."""
        temp.unlink(missing_ok=True)
