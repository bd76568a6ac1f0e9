"""Writing a version's files: into a folder the user names, or into the snapshot cache (a
folder per version under the hub's home, reused by later pulls of the same version)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .errors import DestinationNotEmpty, InvalidArgument
from .records import AdapterVersion, VersionFileInfo

# Written last into a snapshot folder: its content (the version digest) says the folder is whole.
SNAPSHOT_MARKER = ".loramgr-version"

Fetch = Callable[[VersionFileInfo, Path], None]


def snapshot_dir(cache: Path, version: AdapterVersion) -> Path:
    """The snapshot folder of ``version`` in the cache folder ``cache``."""
    return Path(cache) / version.namespace / version.name / str(version.number)


def snapshot_complete(folder: Path, version: AdapterVersion) -> bool:
    marker = folder / SNAPSHOT_MARKER
    return marker.is_file() and marker.read_text().strip() == version.digest


def materialise(version: AdapterVersion, output: str | Path | None, snapshot_folder: Path, fetch: Fetch, *,
                force: bool) -> Path:
    """Write a version's files into ``output``, or into (or reuse) its snapshot cache folder."""
    if output is not None:
        write_version_files(Path(output), version, fetch, force=force)
        return Path(output)
    if not snapshot_complete(snapshot_folder, version):
        write_version_files(snapshot_folder, version, fetch, force=True, marker=True)
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
