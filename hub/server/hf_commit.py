"""A Hugging Face ``commit`` request, turned into the next version of an adapter.

huggingface_hub (``_commit_api._prepare_commit_payload``) sends NDJSON, one object per line:

    {"key": "header", "value": {"summary": ..., "description": ..., "parentCommit": ...}}
    {"key": "file", "value": {"content": "<base64>", "path": ..., "encoding": "base64"}}
    {"key": "lfsFile", "value": {"path": ..., "algo": "sha256", "oid": ..., "size": ...}}
    {"key": "deletedFile" | "deletedFolder", "value": {"path": ...}}

Like a git commit, the operations apply to the files of the current head (the latest version):
a commit that only adds ``README.md`` makes a version with the same weights and a new card.
The resulting files are validated as a push (``Registry.push_stored``); nothing is registered
when they are not a valid adapter. Only adapter files (``ADAPTER_FILES``) are kept, as a push
keeps them; others are ignored (the preupload answer already told the client to skip them).

A "file" line carries the whole file in base64, so a 200 MB adapter arrives as a 270 MB line.
Lines up to ``SMALL_LINE`` bytes are parsed whole; a longer one must be a file whose ``content``
comes first (as huggingface_hub writes it), and its base64 is decoded into the blob store as it
arrives: memory stays at one read batch whatever the size of the file.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from ..adapter import ADAPTER_FILES, CONFIG_FILE, PICKLE_FILE, WEIGHTS_FILE
from ..digests import is_sha256
from ..errors import AdapterNotFound, InvalidAdapter, InvalidArgument, LoramgrError, PayloadTooLarge, PickleRefused
from ..hf_card import card_base_model, card_description, card_task, split_card

SMALL_LINE = 1024 * 1024
# Small files read whole when a commit needs them (card, config).
SMALL_FILE = 1024 * 1024
DEFAULT_TASK = "unspecified"
_CONTENT_FIRST = re.compile(rb'\s*\{\s*"key"\s*:\s*"file"\s*,\s*"value"\s*:\s*\{\s*"content"\s*:\s*"')
_TASK_LINE = re.compile(r"^\s*task\s*:\s*(\S.*?)\s*$", re.I | re.M)
PICKLE_MESSAGE = (f"the weights are only in a pickled {PICKLE_FILE}, which can run code when loaded: this hub "
                  f"stores {WEIGHTS_FILE} only. Convert it first (`loramgr push --convert-pickle`, or PEFT's "
                  "save_pretrained(safe_serialization=True)) and upload that")


@dataclass(frozen=True)
class Operation:
    """One line of a commit. ``kind``: add | lfs | delete | delete_folder. An ``add`` of a file
    that is not kept has no ``digest`` (its bytes were not stored)."""

    kind: str
    path: str
    digest: str | None = None
    size: int | None = None


@dataclass
class CommitRequest:
    summary: str = ""
    description: str = ""
    parent_commit: str | None = None
    operations: list[Operation] = field(default_factory=list)


def kept_file(path: str) -> bool:
    """Whether a repo path is an adapter file this hub keeps (at the repo root, as a push keeps them)."""
    return path in ADAPTER_FILES


# -- reading the body ---------------------------------------------------------------------------

class _Stream:
    """Bytes from an iterator of chunks, with look-ahead."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self._ended = False

    def _fill(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._buffer += chunk
                return True
        self._ended = True
        return False

    def peek_line(self, limit: int) -> tuple[bytes, bool] | None:
        """``(line, True)`` for the next line (without its newline) when it is at most ``limit``
        bytes; ``(its first limit bytes, False)`` when it is longer; None at the end."""
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched)
            if 0 <= end <= limit:
                return bytes(self._buffer[:end]), True
            if len(self._buffer) > limit:
                return bytes(self._buffer[:limit]), False
            searched = len(self._buffer)
            if self._ended or not self._fill():
                return (bytes(self._buffer), True) if self._buffer else None

    def skip(self, count: int) -> None:
        del self._buffer[:count]

    def until(self, stop: bytes) -> Iterator[bytes]:
        """The bytes up to the next ``stop`` byte, in pieces; the ``stop`` byte is consumed too.
        Raises ``InvalidArgument`` when the body ends first."""
        while True:
            end = self._buffer.find(stop)
            if end >= 0:
                piece = bytes(self._buffer[:end])
                del self._buffer[:end + 1]
                if piece:
                    yield piece
                return
            if self._buffer:
                piece = bytes(self._buffer)
                self._buffer.clear()
                yield piece
            if not self._fill():
                raise InvalidArgument("the commit body ends in the middle of a file's content")


def _decode_base64(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("a file's content is not valid base64") from None


def _decoded(pieces: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """Base64 text arriving in pieces, decoded piece by piece. Raises ``PayloadTooLarge`` past
    ``limit`` decoded bytes, ``InvalidArgument`` for text that is not base64 (a JSON escape
    such as ``\\/`` included: huggingface_hub never writes one)."""
    rest, total = b"", 0
    for piece in pieces:
        data = rest + piece
        whole = len(data) - len(data) % 4
        rest = data[whole:]
        if whole:
            decoded = _decode_base64(data[:whole])
            total += len(decoded)
            if total > limit:
                raise PayloadTooLarge(f"a file over this hub's upload limit of {limit:,} bytes")
            yield decoded
    if rest:
        raise InvalidArgument("a file's content is not valid base64 (its length is not a multiple of 4)")


def _json_line(line: bytes) -> dict:
    try:
        item = json.loads(line)
    except ValueError as exc:
        raise InvalidArgument(f"a line of the commit is not JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise InvalidArgument("a line of the commit is nested too deeply") from None
    if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not isinstance(item.get("value"), dict):
        raise InvalidArgument('each line of the commit must be {"key": ..., "value": {...}}')
    return item


def _path(value: dict) -> str:
    path = value.get("path")
    if not isinstance(path, str) or not path.strip("/") or ".." in path.split("/") or "\x00" in path:
        raise InvalidArgument(f"invalid path in the commit: {path!r}")
    return path.strip("/")


def read_commit(chunks: Iterable[bytes], blobs, *, max_file_bytes: int) -> CommitRequest:
    """Parse a commit body as it streams in, storing the content of kept files in ``blobs``.

    Raises ``InvalidArgument`` for a malformed body, ``PayloadTooLarge`` for a file over
    ``max_file_bytes``. Blobs stored before a failure stay unreferenced until ``gc``, as those of
    a push that never commits.
    """
    stream, commit = _Stream(chunks), CommitRequest()
    while (peeked := stream.peek_line(SMALL_LINE)) is not None:
        line, whole = peeked
        if whole:
            stream.skip(len(line) + 1)
            if line.strip():
                _add_line(commit, _json_line(line), blobs, max_file_bytes)
            continue
        # A long line: a file whose base64 content is streamed into the store.
        match = _CONTENT_FIRST.match(line)
        if match is None:
            raise InvalidArgument(f"a commit line over {SMALL_LINE:,} bytes must be a file whose content comes "
                                  "first, as huggingface_hub sends it")
        stream.skip(match.end())
        digest, size = blobs.put_chunks(_decoded(stream.until(b'"'), max_file_bytes))
        rest, whole = stream.peek_line(SMALL_LINE) or (b"", True)
        if not whole:
            raise InvalidArgument("a file line of the commit goes on too long after its content")
        stream.skip(len(rest) + 1)
        value = _json_line(b'{"key": "file", "value": {"content": ""' + rest)["value"]
        if value.get("encoding", "base64") != "base64":
            raise InvalidArgument(f"unsupported encoding {value.get('encoding')!r}: base64 only")
        path = _path(value)
        commit.operations.append(Operation("add", path, digest, size) if kept_file(path) else Operation("add", path))
    return commit


def _add_line(commit: CommitRequest, item: dict, blobs, max_file_bytes: int) -> None:
    key, value = item["key"], item["value"]
    if key == "header":
        commit.summary = str(value.get("summary") or "")
        commit.description = str(value.get("description") or "")
        parent = value.get("parentCommit")
        commit.parent_commit = parent if isinstance(parent, str) and parent else None
    elif key == "file":
        path = _path(value)
        if value.get("encoding", "base64") != "base64" or not isinstance(value.get("content"), str):
            raise InvalidArgument(f"{path}: expected base64 content")
        if not kept_file(path):
            commit.operations.append(Operation("add", path))
            return
        data = _decode_base64(value["content"].encode("ascii", "replace"))
        if len(data) > max_file_bytes:
            raise PayloadTooLarge(f"{path} is over this hub's upload limit of {max_file_bytes:,} bytes")
        digest, size = blobs.put_chunks([data])
        commit.operations.append(Operation("add", path, digest, size))
    elif key == "lfsFile":
        oid = value.get("oid")
        if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str) or not is_sha256(oid.lower()):
            raise InvalidArgument("lfsFile entries need a sha256 oid (64 hex digits)")
        commit.operations.append(Operation("lfs", _path(value), oid.lower()))
    elif key in ("deletedFile", "deletedFolder"):
        path = value.get("path")
        folder = key == "deletedFolder"
        if folder and path in ("", "/", "."):
            commit.operations.append(Operation("delete_folder", ""))
        else:
            commit.operations.append(Operation("delete_folder" if folder else "delete", _path(value)))
    else:
        raise InvalidArgument(f"unsupported commit operation {key!r}: header, file, lfsFile, deletedFile, "
                              "deletedFolder")


def read_commit_draining(chunks: Iterable[bytes], blobs, *, max_file_bytes: int) -> CommitRequest:
    """``read_commit``, reading the rest of the body when it fails: a server that answers while
    the client is still sending gets its connection reset, and the client never sees why."""
    chunks = iter(chunks)
    try:
        return read_commit(chunks, blobs, max_file_bytes=max_file_bytes)
    except LoramgrError:
        try:
            for _ in chunks:
                pass
        except LoramgrError:
            pass  # over the body limit as well: the first problem is the one to report
        raise


# -- applying it --------------------------------------------------------------------------------

def apply_operations(files: dict[str, tuple[str, int]], operations: list[Operation], blobs
                     ) -> tuple[dict[str, tuple[str, int]], set[str]]:
    """The files (name -> (sha256, size)) after ``operations``, and the paths that were ignored.
    Raises ``AdapterNotFound`` (HF ``EntryNotFound``) for a deleted file that is not there,
    ``InvalidArgument`` for an ``lfsFile`` whose bytes this hub does not have."""
    files, ignored = dict(files), set()
    for op in operations:
        if op.kind == "add":
            if op.digest is None:
                ignored.add(op.path)
            else:
                files[op.path] = (op.digest, op.size)
        elif op.kind == "lfs":
            if not kept_file(op.path):
                ignored.add(op.path)
            elif not blobs.has(op.digest):
                raise InvalidArgument(f"{op.path}: this hub has no file with sha256 {op.digest[:16]}...: upload "
                                      "its content (this hub answers preupload with 'regular')")
            else:
                files[op.path] = (op.digest, blobs.size(op.digest))
        elif op.kind == "delete":
            if op.path not in files and op.path not in ignored:
                raise AdapterNotFound(f"cannot delete {op.path}: no such file", hf_code="EntryNotFound")
            files.pop(op.path, None)
        elif op.path == "":
            files.clear()
        else:
            files = {name: value for name, value in files.items() if not name.startswith(op.path + "/")}
    return files, ignored


def task_line(description: str) -> str | None:
    """The task a commit description names on a line ``task: NAME``, if any."""
    match = _TASK_LINE.search(description or "")
    return match[1] if match else None


def read_small(blobs, digest: str) -> bytes:
    return b"".join(blobs.read_chunks(digest, 0, SMALL_FILE))


@dataclass(frozen=True)
class PlannedVersion:
    """What a commit registers: files (name -> sha256) and the push arguments."""

    files: dict[str, str]
    task: str
    base: str | None
    description: str | None


def plan_version(files: dict[str, tuple[str, int]], ignored: set[str], commit: CommitRequest, parent, blobs,
                 name: str) -> PlannedVersion:
    """The push a commit amounts to, from the files it leaves (``apply_operations``).

    The task is the first of: a ``task: NAME`` line in the commit description; ``loramgr.task``
    in README.md's metadata; the parent version's task; ``"unspecified"``. The base model is
    the config's, else README.md's ``base_model``. Raises ``PickleRefused`` when the weights are
    only pickled, ``InvalidAdapter`` when there is no base model, ``InvalidArgument`` for
    malformed README.md metadata.
    """
    if WEIGHTS_FILE not in files and PICKLE_FILE in ignored:
        raise PickleRefused(f"{name}: {PICKLE_MESSAGE}")
    metadata = {}
    if "README.md" in files:
        metadata, _ = split_card(read_small(blobs, files["README.md"][0]).decode("utf-8", "replace"))
    base = None
    if CONFIG_FILE in files:
        try:
            config = json.loads(read_small(blobs, files[CONFIG_FILE][0]))
        except (ValueError, RecursionError):
            config = {}  # the push's validation names the problem
        if isinstance(config, dict) and not config.get("base_model_name_or_path"):
            base = card_base_model(metadata)
            if base is None:
                raise InvalidAdapter(f"{name}: adapter_config.json names no base model: set base_model_name_or_path "
                                     "in it, or base_model in README.md's metadata")
    task = (task_line(commit.description) or card_task(metadata) or (parent.task if parent else None)
            or DEFAULT_TASK)
    description = card_description(metadata) or (parent.description if parent else None)
    return PlannedVersion({n: digest for n, (digest, _) in files.items()}, task, base, description)


def commit_to_registry(registry, name: str, commit: CommitRequest, *, head: Callable, commit_id: Callable):
    """Register ``commit`` as the next version of ``name``; returns ``(version, created)``.

    ``head(registry, name)`` is the current latest version or None; ``commit_id(version)`` its
    commit id. A commit that leaves the files as they are registers nothing and answers the head
    (as the Hub skips an empty commit). Raises what ``plan_version`` and ``push_stored`` raise,
    and ``InvalidArgument`` when ``parentCommit`` is not the head.
    """
    parent = head(registry, name)
    if commit.parent_commit is not None and (parent is None or not commit_id(parent).startswith(commit.parent_commit)):
        raise InvalidArgument(f"a commit has happened since {commit.parent_commit}: the head of {name} is "
                              f"{commit_id(parent) if parent else 'empty'}; refresh and try again")
    parent_files = {f.name: (f.digest, f.size) for f in parent.files} if parent else {}
    files, ignored = apply_operations(parent_files, commit.operations, registry.blobs)
    files = {n: v for n, v in files.items() if kept_file(n)}
    if parent is not None and files == parent_files:
        return parent, False
    plan = plan_version(files, ignored, commit, parent, registry.blobs, name)
    version = registry.push_stored(plan.files, name=name, task=plan.task, base=plan.base,
                                   description=plan.description, source="pushed")
    return version, True
