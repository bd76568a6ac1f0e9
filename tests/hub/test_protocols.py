"""Every registry backend and blob store satisfies its protocol: each method exists and takes
the protocol's parameters (same names, kinds, order and defaults; extra ones only optional)."""

from __future__ import annotations

import inspect

import pytest

from loramgr.hub.blob_store import BlobStore
from loramgr.hub.blobs import LocalBlobStore
from loramgr.hub.blobs_s3 import S3BlobStore
from loramgr.hub.client import RemoteRegistry
from loramgr.hub.registry import Registry
from loramgr.hub.registry_backend import RegistryBackend

EMPTY = inspect.Parameter.empty
POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def protocol_methods(protocol) -> list[str]:
    return sorted(name for name, value in vars(protocol).items()
                  if inspect.isfunction(value) and not name.startswith("_"))


def signature_problems(protocol, cls) -> list[str]:
    """What keeps ``cls`` from satisfying ``protocol`` (empty when it does)."""
    problems = []
    for name in protocol_methods(protocol):
        method = getattr(cls, name, None)
        if not callable(method):
            problems.append(f"{cls.__name__} lacks {name}")
            continue
        where = f"{cls.__name__}.{name}"
        want = list(inspect.signature(getattr(protocol, name)).parameters.values())
        got = list(inspect.signature(method).parameters.values())
        got_positional = [p for p in got if p.kind in POSITIONAL]
        matched = set()
        for index, param in enumerate(want):
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:  # only the position counts, not the name
                other = got_positional[index] if index < len(got_positional) else None
            else:
                other = next((p for p in got if p.name == param.name and p.kind == param.kind), None)
                if other is not None and param.kind in POSITIONAL and got_positional.index(other) != index:
                    problems.append(f"{where}: {param.name} is not parameter {index}")
            if other is None:
                problems.append(f"{where}: parameter {param.name} missing or of another kind")
                continue
            matched.add(other.name)
            if param.default is not EMPTY and (other.default is EMPTY or (
                    param.default is not Ellipsis and other.default != param.default)):
                problems.append(f"{where}: {param.name} defaults to {other.default!r}, not {param.default!r}")
        problems += [f"{where}: extra parameter {p.name} has no default" for p in got
                     if p.name not in matched and p.default is EMPTY and p.kind not in VARIADIC]
    return problems


@pytest.mark.parametrize("protocol, cls", [
    (RegistryBackend, Registry), (RegistryBackend, RemoteRegistry),
    (BlobStore, LocalBlobStore), (BlobStore, S3BlobStore),
], ids=lambda x: x.__name__)
def test_every_implementation_satisfies_its_protocol(protocol, cls):
    assert protocol_methods(protocol)
    assert signature_problems(protocol, cls) == []


def test_a_store_missing_a_method_or_changing_a_default_is_caught(tmp_path):
    class Lacking(LocalBlobStore):
        verify = None

        def read_chunks(self, digest: str, start: int = 1, end: int | None = None):
            return iter(())

        def put_file(self, source, progress=None, required_flag=None, *, mode):
            return ("", 0)

    assert signature_problems(BlobStore, Lacking) == [
        "Lacking.put_file: extra parameter mode has no default",
        "Lacking.read_chunks: start defaults to 1, not 0",
        "Lacking lacks verify",
    ]
    assert isinstance(LocalBlobStore(tmp_path), BlobStore)
