"""The registry interface (``RegistryBackend``): what the CLI, ``Hub`` and the composer call,
met alike by the local ``Registry`` and the team hub's client ``RemoteRegistry``, so every
command works the same local or remote. A test checks both against it, signatures included."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

from .records import AdapterVersion, GcReport, Lineage, VerifyReport

Progress = Callable[[int], None]


@runtime_checkable
class RegistryBackend(Protocol):
    """Push / pull / search / show / tag / rm / verify / gc over one hub."""

    def close(self) -> None: ...

    def push(self, path: str | Path, *, name: str, task: str, base: str | None = None,
             tags: Sequence[str] = (), description: str | None = None, examples: str | Path | None = None,
             convert_pickle: bool = False, source: str = "pushed", lineage: Lineage | None = None,
             progress: Progress | None = None, label: str | None = None) -> AdapterVersion: ...

    def show(self, ref: str) -> AdapterVersion: ...

    def versions(self, name: str) -> list[AdapterVersion]: ...

    def search(self, *, base: str | None = None, task: str | Sequence[str] | None = None,
               rank: int | None = None, min_rank: int | None = None, max_rank: int | None = None,
               target: str | None = None, query: str | None = None, source: str | None = None,
               all_versions: bool = False, limit: int | None = 100) -> list[AdapterVersion]: ...

    def ls(self, namespace: str | None = None) -> list[AdapterVersion]: ...

    def read_file(self, ref: str, filename: str) -> bytes | None: ...

    def tag(self, ref: str, tag: str) -> AdapterVersion: ...

    def rm(self, ref: str) -> AdapterVersion: ...

    def verify(self, ref: str | None = None) -> VerifyReport: ...

    def gc(self, *, grace_seconds: float = ..., dry_run: bool = False) -> GcReport: ...

    def snapshot_dir(self, version: AdapterVersion) -> Path: ...

    def pull(self, ref: str, *, output: str | Path | None = None, force: bool = False,
             progress: Progress | None = None) -> Path: ...
