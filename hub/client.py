"""``RemoteRegistry``: the registry of a team hub (``loramgr serve``) over HTTP.

Same methods, arguments, return types and exceptions as ``Registry``, so every command works
unchanged with ``LORAMGR_REMOTE`` set. The server's JSON errors come back as the exception the
server raised (``error_from_code``); a hub that cannot be reached is ``RemoteError``.

Transfers: a push hashes each file, skips the blobs the hub already has (HEAD), streams the
rest (the hub re-hashes them on arrival), then commits the version in one request. A pull
streams each blob into a temp file while hashing it, resumes with ``Range`` after a cut, and
keeps the file only if its sha256 matches. Connection failures are retried with back-off where
repeating the request is safe.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable, Iterator, Sequence
from urllib.parse import quote, urlsplit

import httpx

from .digests import new_sha256, sha256_bytes, sha256_file
from .errors import (AdapterNotFound, Forbidden, IntegrityError, InvalidArgument, PayloadTooLarge, RemoteError,
                     Unauthorized, error_from_code)
from .records import AdapterVersion, GcReport, Lineage, VerifyReport, VersionFileInfo
from .refs import AdapterName, AdapterRef
from .push_preparation import check_push_arguments, prepare_push
from .registry import GC_GRACE_SECONDS
from .settings import Settings
from .snapshots import materialise, remove_snapshot, snapshot_dir

Progress = Callable[[int], None]
CHUNK = 1024 * 1024
_COMMIT_TRIES = 3
# Errors for answers without a JSON body (HEAD requests, proxies).
_STATUS_ERRORS = {401: Unauthorized, 403: Forbidden, 404: AdapterNotFound, 413: PayloadTooLarge}


def _client_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loramgr")
    except PackageNotFoundError:
        return "dev"


class _Attempts:
    """Back-off between retries of one operation: ``backoff * 2**n`` seconds, ``retries`` times."""

    def __init__(self, retries: int, backoff: float):
        self.retries, self.backoff, self.failures = retries, backoff, 0

    def failed(self) -> bool:
        """Record a failure; sleep and return True if another try is allowed."""
        self.failures += 1
        if self.failures > self.retries:
            return False
        time.sleep(self.backoff * 2 ** (self.failures - 1))
        return True

    def progressed(self) -> None:
        self.failures = 0


class RemoteRegistry:
    """The registry served at ``settings.remote``, authenticated with ``settings.token``.

    ``retries`` / ``backoff``: how often and how patiently a request is repeated after a
    connection failure (``backoff``, then twice that, ...). ``timeout``: seconds a single read
    or write may stall.
    """

    def __init__(self, settings: Settings, *, retries: int = 4, backoff: float = 0.5, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None):
        if not settings.remote:
            raise InvalidArgument("no remote hub configured: set LORAMGR_REMOTE or pass --remote")
        self.settings = settings
        self.url = settings.remote.rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgument(f"invalid remote {self.url!r}: expected http(s)://HOST:PORT")
        self.retries, self.backoff = retries, backoff
        headers = {"User-Agent": f"loramgr/{_client_version()}"}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        self.http = httpx.Client(base_url=self.url, headers=headers, transport=transport,
                                 timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
        self._info: dict | None = None

    def close(self) -> None:
        self.http.close()

    def __repr__(self) -> str:
        return f"RemoteRegistry({self.url!r})"

    # -- requests --------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, idempotent: bool = True, content_factory=None,
                 accept: tuple[int, ...] = (), **kwargs) -> httpx.Response:
        """One request, retried after connection failures: any of them when ``idempotent``,
        otherwise only those where the request cannot have reached the hub. Raises the hub's
        error for an error answer (unless its status is in ``accept``), ``RemoteError`` when
        the hub cannot be reached."""
        attempts = _Attempts(self.retries, self.backoff)
        while True:
            try:
                if content_factory is not None:
                    kwargs["content"] = content_factory()
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if sent and not idempotent:
                    raise RemoteError(f"the connection to {self.url} broke during {method} {path} ({exc}); "
                                      "it may or may not have taken effect: check before repeating it") from None
                if not attempts.failed():
                    raise RemoteError(f"cannot reach the hub at {self.url}: {exc or type(exc).__name__} "
                                      f"(tried {attempts.failures} times)") from None
                continue
            if response.status_code not in accept:
                self._raise_for_error(response)
            return response

    def _raise_for_error(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        response.read()
        request = f"{response.request.method} {response.request.url.path}"
        try:
            error = response.json()["error"]
            code, message, details = error["code"], error["message"], error.get("details")
            if not isinstance(details, dict):
                details = {}  # an older hub sends none
        except (ValueError, KeyError, TypeError, AttributeError):
            # No JSON error body: a HEAD request (the hub sends its error in headers then), or
            # something between us and the hub.
            code, message = (response.headers.get(f"X-Loramgr-Error-{part}") for part in ("Code", "Message"))
            if code and message:
                raise error_from_code(code, message, {}) from None
            cls = _STATUS_ERRORS.get(response.status_code, RemoteError)
            raise cls(f"{self.url} answered {request} with HTTP {response.status_code}"
                      + (f": {response.text[:200]!r}" if response.text else "")) from None
        raise error_from_code(code, message, details)

    def _json(self, method: str, path: str, **kwargs):
        return self._request(method, path, **kwargs).json()

    def _versions(self, path: str, **kwargs) -> list[AdapterVersion]:
        return [AdapterVersion.from_dict(v) for v in self._json("GET", path, **kwargs)["versions"]]

    def info(self) -> dict:
        """The hub's version, access mode and limits (``GET /api/info``)."""
        if self._info is None:
            self._info = self._json("GET", "/api/info")
        return self._info

    @staticmethod
    def _ref_path(ref: str) -> str:
        return quote(str(AdapterRef.parse(ref)), safe="/@:")

    # -- reading -------------------------------------------------------------------------------

    def show(self, ref: str) -> AdapterVersion:
        """The version ``ref`` names. Raises ``AdapterNotFound``, ``InvalidName``."""
        return AdapterVersion.from_dict(self._json("GET", f"/api/versions/{self._ref_path(ref)}"))

    def versions(self, name: str) -> list[AdapterVersion]:
        """Every version of one adapter, newest first."""
        adapter = AdapterName.parse(name)
        return self._versions(f"/api/adapters/{adapter.namespace}/{adapter.name}/versions")

    def search(self, *, base: str | None = None, task: str | Sequence[str] | None = None,
               rank: int | None = None, min_rank: int | None = None, max_rank: int | None = None,
               target: str | None = None, query: str | None = None, source: str | None = None,
               all_versions: bool = False, limit: int | None = 100, offset: int = 0) -> list[AdapterVersion]:
        """Versions matching every given filter, newest first (as ``Registry.search``)."""
        params: list[tuple[str, str]] = []
        for key, value in (("base", base), ("rank", rank), ("min_rank", min_rank), ("max_rank", max_rank),
                           ("target", target), ("query", query), ("source", source)):
            if value is not None:
                params.append((key, str(value)))
        if task:
            params += [("task", t) for t in ([task] if isinstance(task, str) else task)]
        params.append(("all_versions", "true" if all_versions else "false"))
        params.append(("limit", "none" if limit is None else str(limit)))
        if offset:
            params.append(("offset", str(offset)))
        return self._versions("/api/search", params=params)

    def ls(self, namespace: str | None = None) -> list[AdapterVersion]:
        """The latest version of every adapter, by name."""
        return self._versions("/api/adapters", params={"namespace": namespace} if namespace else None)

    def read_file(self, ref: str, filename: str) -> bytes | None:
        """The bytes of one small file of a version (e.g. ``examples.jsonl``), None if absent.
        Raises ``IntegrityError`` when they do not match their digest."""
        for file in self.show(ref).files:
            if file.name == filename:
                data = self._request("GET", f"/api/blobs/{file.digest}").content
                if sha256_bytes(data) != file.digest:
                    raise IntegrityError(f"{filename} from {self.url} does not match its sha256",
                                         digest=file.digest)
                return data
        return None

    def verify(self, ref: str | None = None) -> VerifyReport:
        """Have the hub re-hash the blobs of one version (or of all: that needs a write token
        for '*'). Raises ``AdapterNotFound``, ``Unauthorized``, ``Forbidden``."""
        data = self._json("GET", "/api/verify", params={"ref": ref} if ref else None)
        return VerifyReport(**{f.name: data[f.name] for f in fields(VerifyReport)})

    # -- writing -------------------------------------------------------------------------------

    def push(self, path: str | Path, *, name: str, task: str, base: str | None = None,
             tags: Sequence[str] = (), description: str | None = None, examples: str | Path | None = None,
             convert_pickle: bool = False, source: str = "pushed", lineage: Lineage | None = None,
             progress: Progress | None = None, label: str | None = None,
             alpha: float | None = None) -> AdapterVersion:
        """Upload the adapter folder at ``path`` as the next version of ``name``.

        Checked here first (as a local push), uploaded blob by blob (skipping what the hub has),
        then committed in one request, which the hub validates again. Raises what
        ``Registry.push`` raises, plus ``PayloadTooLarge``, ``Unauthorized``, ``Forbidden``,
        ``RemoteError``. A push cut off before its commit registers nothing.
        """
        adapter_name, task, tags = check_push_arguments(name, task, tags, source)
        with tempfile.TemporaryDirectory(prefix="loramgr-push-") as scratch:
            manifest, base_model, sources = prepare_push(path, Path(scratch), base=base, examples=examples,
                                                         convert_pickle=convert_pickle, label=label,
                                                         alpha=alpha)
            limit = self.info()["max_upload_bytes"]
            for filename, file_path in sorted(sources.items()):
                if file_path.stat().st_size > limit:
                    raise PayloadTooLarge(f"{filename} ({file_path.stat().st_size:,} bytes) is over the hub's "
                                          f"upload limit of {limit:,} bytes (`loramgr serve --max-upload-mb`)")
            files = {filename: self._upload(file_path, progress)
                     for filename, file_path in sorted(sources.items())}
            commit = {"task": task, "base": base_model, "tags": tags, "description": description, "files": files,
                      "source": source, "lineage": asdict(lineage) if lineage is not None else None}
            for attempt in range(_COMMIT_TRIES):
                try:
                    data = self._json("POST", f"/api/adapters/{adapter_name.namespace}/{adapter_name.name}/versions",
                                      json=commit, idempotent=False)
                    return AdapterVersion.from_dict(data)
                except InvalidArgument as error:
                    # The hub's gc removed an uploaded blob before the commit (which then
                    # registered nothing; ``details["blobs_removed"]``): upload again, commit again.
                    if not error.details.get("blobs_removed") or attempt == _COMMIT_TRIES - 1:
                        raise
                    for file_path in sources.values():
                        self._upload(file_path, None)
        raise AssertionError("unreachable")

    def _upload(self, path: Path, progress: Progress | None) -> str:
        """Store one file on the hub unless it has it; returns its sha256."""
        digest, size = sha256_file(path), path.stat().st_size
        if self._request("HEAD", f"/api/blobs/{digest}", accept=(404,)).status_code == 200:
            if progress:
                progress(size)
            return digest
        reported = 0  # a retried upload reports only bytes beyond what the last try reported

        def body() -> Iterator[bytes]:
            nonlocal reported
            sent = 0
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    sent += len(chunk)
                    if progress and sent > reported:
                        progress(sent - reported)
                        reported = sent
                    yield chunk

        # PUT of content-addressed bytes is idempotent: repeating it after a cut is safe.
        self._request("PUT", f"/api/blobs/{digest}", content_factory=body,
                      headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
        return digest

    def tag(self, ref: str, tag: str) -> AdapterVersion:
        """Point ``tag`` at the version ``ref`` resolves to. Raises ``AdapterNotFound``, ``InvalidName``."""
        return AdapterVersion.from_dict(self._json("POST", f"/api/versions/{self._ref_path(ref)}/tags",
                                                   json={"tag": tag}))

    def rm(self, ref: str) -> AdapterVersion:
        """Remove one version. Raises ``AdapterNotFound``. Not retried after a broken connection
        (repeating ``rm NS/NAME`` would remove the next-newest version too)."""
        removed = AdapterVersion.from_dict(self._json("DELETE", f"/api/versions/{self._ref_path(ref)}",
                                                      idempotent=False))
        remove_snapshot(self.snapshot_dir(removed))  # this client's cached copy of it
        return removed

    def gc(self, *, grace_seconds: float = GC_GRACE_SECONDS, dry_run: bool = False) -> GcReport:
        """Have the hub remove unreferenced blobs (needs a write token for '*')."""
        data = self._json("POST", "/api/gc", json={"grace_seconds": grace_seconds, "dry_run": dry_run})
        return GcReport(**{f.name: data[f.name] for f in fields(GcReport) if f.name in data})

    # -- pulling -------------------------------------------------------------------------------

    def snapshot_dir(self, version: AdapterVersion) -> Path:
        """Where pulls without ``output`` go: per hub, so two hubs' ``acme/x@1`` never mix."""
        hub = re.sub(r"[^A-Za-z0-9._-]", "_", urlsplit(self.url).netloc)
        return snapshot_dir(self.settings.home / "remote-snapshots" / hub, version)

    def pull(self, ref: str, *, output: str | Path | None = None, force: bool = False,
             progress: Progress | None = None) -> Path:
        """Download a version as a PEFT folder and return its path (as ``Registry.pull``).

        Each file is verified against its sha256 while it streams; a corrupt one raises
        ``IntegrityError`` and is not left behind. Raises ``AdapterNotFound``,
        ``DestinationNotEmpty``, ``RemoteError``.
        """
        version = self.show(ref)
        return materialise(version, output, self.snapshot_dir(version),
                           lambda f, dest: self._download(f, dest, progress), force=force)

    def _download(self, file: VersionFileInfo, destination: Path, progress: Progress | None) -> None:
        """Stream one blob into ``destination``, hashing as it arrives. After a cut, ask for the
        rest (``Range`` + ``If-Range``: only if the blob is still the same); a hub that sends it
        all again restarts the file. Raises ``IntegrityError`` for bytes that do not match."""
        hasher, received = new_sha256(), 0
        attempts = _Attempts(self.retries, self.backoff)
        with open(destination, "wb") as out:
            while True:
                if received and received >= file.size:
                    break  # cut after the last byte: nothing left to ask for (and 416 if we did)
                headers = {"Range": f"bytes={received}-", "If-Range": f'"{file.digest}"'} if received else {}
                try:
                    with self.http.stream("GET", f"/api/blobs/{file.digest}", headers=headers) as response:
                        self._raise_for_error(response)
                        if received and response.status_code != 206:
                            out.seek(0)
                            out.truncate()
                            hasher, received = new_sha256(), 0
                        for chunk in response.iter_raw(CHUNK):
                            out.write(chunk)
                            hasher.update(chunk)
                            received += len(chunk)
                            attempts.progressed()
                            if progress:
                                progress(len(chunk))
                    break
                except httpx.TransportError as exc:
                    if not attempts.failed():
                        raise RemoteError(f"pulling {file.name} from {self.url} broke off after {received:,} of "
                                          f"{file.size:,} bytes: {exc or type(exc).__name__}") from None
        if received != file.size or hasher.hexdigest() != file.digest:
            raise IntegrityError(f"{file.name} from {self.url} is corrupt ({received:,} bytes, sha256 "
                                 f"{hasher.hexdigest()[:16]}..., expected {file.digest[:16]}...); it was not kept",
                                 digest=file.digest)
