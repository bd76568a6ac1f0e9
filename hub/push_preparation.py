"""What a push checks before anything is stored: its arguments, its folder (or the blobs a
client uploaded), and the base model. Shared by the local registry, the remote client (which
checks before uploading) and the server (which checks again before registering)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from .adapter import ADAPTER_FILES, Manifest, check_regular_files, convert_pickled_adapter, read_adapter
from .formats import files_root, other_file_problem, push_source
from .digests import is_sha256
from .errors import InvalidArgument, InvalidName, LoramgrError
from .examples_file import EXAMPLES_FILE, check_examples_file
from .refs import LATEST, AdapterName, check_part, check_new_tag

SOURCES = ("pushed", "composed", "imported")


def check_task(task: str) -> str:
    if not isinstance(task, str) or not task.strip() or len(task) > 128 or any(ord(c) < 32 for c in task):
        raise InvalidName(f"invalid task {task!r}: use 1-128 printable characters")
    return task.strip()


def check_push_arguments(name: str, task: str, tags: Sequence[str], source: str
                         ) -> tuple[AdapterName, str, list[str]]:
    """The checked (name, task, tags) of a push. Raises ``InvalidName``, ``InvalidArgument``."""
    adapter_name = AdapterName.parse(name)
    task = check_task(task)
    tags = [check_new_tag(t) for t in tags]
    if LATEST in tags:
        raise InvalidName("the tag 'latest' is managed by loramgr: it always names the newest version")
    if source not in SOURCES:
        raise InvalidArgument(f"invalid source {source!r}: one of {', '.join(SOURCES)}")
    return adapter_name, task, tags


def prepare_push(path: str | Path, scratch: Path, *, base: str | None, examples: str | Path | None,
                 convert_pickle: bool, label: str | None = None, alpha: float | None = None
                 ) -> tuple[Manifest, str, dict[str, Path]]:
    """Validate what a push would store: (manifest, base model, {file name: path to read}).

    A pickled ``adapter_model.bin`` is converted into ``scratch`` when ``convert_pickle``; so is a
    loralib checkpoint, into a PEFT folder for ``base`` with ``alpha`` (``hub/formats``).
    ``path`` may also be a Stable Diffusion LoRA file, or a folder holding one.
    Messages name ``label`` (else ``path``), never the scratch folder.
    Raises ``InvalidAdapter``, ``PickleRefused``, ``InvalidArgument``.
    """
    if examples is not None:
        check_examples_file(Path(examples))
    if Path(path).is_dir():
        check_regular_files(path)  # before anything reads them: a FIFO blocks, a link publishes its target
    folder = push_source(path, scratch, convert_pickle=convert_pickle, base=base, alpha=alpha)
    if convert_pickle and not (folder / "adapter_model.safetensors").exists() \
            and (folder / "adapter_model.bin").exists():
        try:
            folder = convert_pickled_adapter(folder, scratch / "converted")
        except LoramgrError as error:
            raise (error.naming(path, label) if label else error) from None
    manifest = read_adapter(folder, digests=False, label=label or (str(path) if folder != Path(path) else None))
    sources = {f.name: files_root(folder) / f.name for f in manifest.files}
    check_regular_files(files_root(folder), sources)
    if examples is not None:
        sources[EXAMPLES_FILE] = Path(examples)
    elif EXAMPLES_FILE in sources:  # one inside the folder is checked like --examples
        check_examples_file(sources[EXAMPLES_FILE], source=examples_source(label or Path(path)))
    return manifest, base_model_of(manifest, base, label or path), sources


def examples_source(origin) -> str:
    """How messages name the ``examples.jsonl`` of ``origin`` (a folder, an adapter, a repo)."""
    return f"{str(origin).rstrip('/')}/{EXAMPLES_FILE}"


def base_model_of(manifest: Manifest, base: str | None, origin) -> str:
    """The base model of a push: ``base`` or the config's. Raises ``InvalidArgument`` if neither."""
    base_model = base or manifest.base_model
    if not base_model:
        if manifest.format != "peft":
            raise InvalidArgument(f"{origin}: a {manifest.format} LoRA file does not name its base model; pass "
                                  "--base, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5")
        raise InvalidArgument(f"{origin}: adapter_config.json names no base model; pass --base")
    return base_model


def check_stored_files(files: Mapping[str, str], blobs) -> None:
    """Check the files of a push from blobs already uploaded (file name -> sha256): adapter file
    names, well-formed digests, blobs present. Raises ``InvalidArgument``."""
    problem = other_file_problem(files, ADAPTER_FILES)
    if problem:
        raise InvalidArgument(problem)
    for filename, digest in sorted(files.items()):
        if not is_sha256(digest):
            raise InvalidArgument(f"invalid sha256 {digest!r} for {filename}: expected 64 hex digits",
                                  path=filename)
        if not blobs.has(digest):
            raise InvalidArgument(f"{filename} (sha256:{digest[:16]}) is not in the blob store: upload it first",
                                  path=filename, digest=digest, blobs_removed=True)


def check_stored_examples(files: Mapping[str, str], folder: Path, name: str) -> None:
    """Check the ``examples.jsonl`` among stored ``files`` (staged in ``folder``) like
    ``--examples``; messages name it ``NAME/examples.jsonl``. Raises ``InvalidArgument``."""
    if EXAMPLES_FILE in files:
        check_examples_file(folder / EXAMPLES_FILE, source=examples_source(name))


def stage_stored_files(files: Mapping[str, str], blobs, folder: Path) -> None:
    """Put stored blobs under their file names in ``folder``, to be read like a pushed folder:
    linked when the store is a local folder, copied otherwise."""
    for filename, digest in files.items():
        local = blobs.path(digest)
        if local is not None:
            os.symlink(local, folder / filename)
        else:
            blobs.copy_to(digest, folder / filename)
