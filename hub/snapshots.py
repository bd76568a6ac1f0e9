"""Writing a version's files: into a folder the user names, or into the snapshot cache (a
folder per version under the hub's home, reused by later pulls of the same version).

A snapshot's files are hard links to the blobs where the file system allows (the local store on
the same device), so a pull into the cache costs no second copy of the bytes; elsewhere (another
device, S3, a remote hub) they are copies. Either way they are read-only: a hard link must never
be written through, since it is the blob. A folder the user names always gets copies, which are
theirs to edit. ``rm`` removes a version's snapshot; ``gc`` removes snapshots of versions that
no longer exist."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from .errors import DestinationNotEmpty, InvalidArgument
from .records import AdapterVersion, VersionFileInfo

# Written last into a snapshot folder: its content (the version digest) says the folder is whole.
SNAPSHOT_MARKER = ".loramgr-version"

Fetch = Callable[[VersionFileInfo, Path], None]
# Puts a hard link to the file's blob at the path; False when it cannot (nothing written then).
Link = Callable[[VersionFileInfo, Path], bool]
READ_ONLY = 0o444


def snapshot_dir(cache: Path, version: AdapterVersion) -> Path:
    """The snapshot folder of ``version`` in the cache folder ``cache``."""
    return Path(cache) / version.namespace / version.name / str(version.number)


def snapshot_complete(folder: Path, version: AdapterVersion) -> bool:
    marker = folder / SNAPSHOT_MARKER
    return marker.is_file() and marker.read_text().strip() == version.digest


def materialise(version: AdapterVersion, output: str | Path | None, snapshot_folder: Path, fetch: Fetch, *,
                force: bool, link: Link | None = None) -> Path:
    """Write a version's files into ``output`` (copies, with ``fetch``), or into (or reuse) its
    snapshot cache folder: read-only hard links made by ``link`` where it can, else copies."""
    if output is not None:
        write_version_files(Path(output), version, fetch, force=force)
        return Path(output)
    if not snapshot_complete(snapshot_folder, version):
        def place(file: VersionFileInfo, destination: Path) -> None:
            if link is None or not link(file, destination):
                fetch(file, destination)
            os.chmod(destination, READ_ONLY)

        write_version_files(snapshot_folder, version, place, force=True, marker=True)
    return snapshot_folder


def write_version_files(folder: Path, version: AdapterVersion, fetch: Fetch, *, force: bool,
                        marker: bool = False) -> None:
    """Write a version's files into ``folder``: each goes to a temp name, then is renamed, so a
    reader never sees a half-written file. Refuses a non-empty folder unless ``force``.
    ``marker`` records the version digest last, so a snapshot cache entry is known complete.
    Raises ``DestinationNotEmpty``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DestinationNotEmpty(f"{folder} exists and is not a folder", path=str(folder))
    try:
        if folder.is_dir() and any(folder.iterdir()) and not force:
            raise DestinationNotEmpty(f"{folder} is not empty: pass --force to overwrite its adapter files",
                                      path=str(folder))
        folder.mkdir(parents=True, exist_ok=True)
    except DestinationNotEmpty:  # a FileExistsError, so an OSError too
        raise
    except OSError as exc:
        # A dangling symbolic link, a link loop, a path under a file, no permission.
        problem = "is a symbolic link to nowhere" if folder.is_symlink() and not folder.exists() \
            else (exc.strerror or type(exc).__name__).lower()
        raise InvalidArgument(f"cannot write the adapter into {folder}: {problem}", path=str(folder)) from None
    (folder / SNAPSHOT_MARKER).unlink(missing_ok=True)
    for file in version.files:
        temp = folder / f".{file.name}.{os.getpid()}.part"
        try:
            fetch(file, temp)
            os.replace(temp, folder / file.name)
        finally:
            temp.unlink(missing_ok=True)
    if marker:
        (folder / SNAPSHOT_MARKER).write_text(version.digest + "\n")


def remove_snapshot(folder: Path, *, dry_run: bool = False) -> int:
    """Remove one snapshot folder (with ``dry_run``, only count); returns the bytes this frees:
    a file still linked from the blob store frees nothing. Gone already is fine."""
    if not folder.is_dir():
        return 0
    freed = 0
    for path in folder.iterdir():
        info = path.lstat()
        freed += info.st_size if info.st_nlink == 1 and not path.is_dir() else 0
        if dry_run:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # not something loramgr writes; removed with the folder
        else:
            path.unlink()
    if dry_run:
        return freed
    folder.rmdir()
    for parent in (folder.parent, folder.parent.parent):  # NAME/, then NS/, once empty
        try:
            parent.rmdir()
        except OSError:
            break
    return freed


def snapshot_folders(cache: Path) -> dict[tuple[str, str, int], Path]:
    """The snapshot folders in ``cache``, by (namespace, name, number)."""
    found = {}
    for folder in Path(cache).glob("*/*/*"):
        if folder.is_dir() and folder.name.isdigit():
            found[(folder.parent.parent.name, folder.parent.name, int(folder.name))] = folder
    return found
