"""``Hub``: the registry from Python, configured like the CLI (flags, then ``LORAMGR_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from loramgr.hub.examples_file import EXAMPLES_FILE, ExampleRecord, parse_examples
from loramgr.hub.records import AdapterVersion, GcReport, VerifyReport
from loramgr.hub.connect import open_registry
from loramgr.hub.settings import Settings


class Hub:
    """A LoRA adapter registry, local or remote.

    >>> hub = Hub()                                     # LORAMGR_HOME / LORAMGR_REMOTE decide
    >>> v = hub.push("out/sentiment", name="acme/sentiment", task="sentiment")
    >>> path = hub.pull("acme/sentiment:latest")

    Every method raises a subclass of ``loramgr.LoramgrError`` for what the caller can fix.
    """

    def __init__(self, home: str | Path | None = None, *, database_url: str | None = None,
                 remote: str | None = None, token: str | None = None, settings: Settings | None = None):
        self.settings = settings or Settings.load(home=home, database_url=database_url, remote=remote, token=token)
        self.backend = open_registry(self.settings)

    def __repr__(self) -> str:
        where = self.settings.remote or self.settings.home
        return f"Hub({str(where)!r})"

    def push(self, path: str | Path, *, name: str, task: str, base: str | None = None, tags: Sequence[str] = (),
             description: str | None = None, examples: str | Path | None = None, convert_pickle: bool = False,
             **options) -> AdapterVersion:
        """Store a PEFT LoRA folder as the next version of ``name`` (``NS/NAME``)."""
        return self.backend.push(path, name=name, task=task, base=base, tags=tags, description=description,
                                 examples=examples, convert_pickle=convert_pickle, **options)

    def pull(self, ref: str, output: str | Path | None = None, *, force: bool = False, **options) -> Path:
        """Materialise ``ref`` (``NS/NAME``, ``NS/NAME@N``, ``NS/NAME:TAG``) as a PEFT folder."""
        return self.backend.pull(ref, output=output, force=force, **options)

    def search(self, **filters) -> list[AdapterVersion]:
        """Newest matching versions: ``base``, ``task``, ``rank``, ``min_rank``, ``max_rank``,
        ``target``, ``query``, ``source``, ``all_versions``, ``limit``."""
        return self.backend.search(**filters)

    def ls(self, namespace: str | None = None) -> list[AdapterVersion]:
        return self.backend.ls(namespace)

    def show(self, ref: str) -> AdapterVersion:
        return self.backend.show(ref)

    def versions(self, name: str) -> list[AdapterVersion]:
        return self.backend.versions(name)

    def tag(self, ref: str, tag: str) -> AdapterVersion:
        return self.backend.tag(ref, tag)

    def rm(self, ref: str) -> AdapterVersion:
        return self.backend.rm(ref)

    def verify(self, ref: str | None = None) -> VerifyReport:
        return self.backend.verify(ref)

    def gc(self, **options) -> GcReport:
        return self.backend.gc(**options)

    def examples(self, ref: str) -> list[ExampleRecord]:
        """The few-shot examples registered with a version (``[]`` when it has none), as records
        with ``input`` and ``output``. Raises ``AdapterNotFound``, ``InvalidArgument`` (a stored
        file that is not a valid examples file, naming its line)."""
        data = self.backend.read_file(ref, EXAMPLES_FILE)
        return parse_examples(data, f"{ref}/{EXAMPLES_FILE}") if data else []
