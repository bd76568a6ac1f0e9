"""Import adapters from, and export them to, a Hugging Face Hub (huggingface.co, or any server
that speaks its API, such as ``loramgr serve``), with huggingface_hub.

- ``import_adapter``: ``snapshot_download`` of the adapter files of ``hf://org/repo[@rev]`` into a
  temp folder, then the registry's normal push (``source="imported"``). A repo whose weights
  are only a pickled ``adapter_model.bin`` follows the push rule: refused (before it is
  downloaded) unless ``convert_pickle``.
- ``export_adapter``: the pulled version, with a model card carrying the Hub's YAML metadata
  (``hf_card.export_card``), uploaded as one commit (``create_commit``).

The endpoint is an argument (the CLI takes ``--endpoint``, else ``HF_ENDPOINT``); None means
huggingface_hub's default. huggingface_hub's errors come back as ``LoramgrError`` subclasses
with one line saying what failed where.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .adapter import ADAPTER_FILES, CONFIG_FILE, PICKLE_FILE, WEIGHTS_FILE
from .errors import (AdapterNotFound, Forbidden, InvalidAdapter, InvalidArgument, LoramgrError, PickleRefused,
                     RemoteError, Unauthorized)
from .hf_card import card_base_model, export_card, split_card
from .records import AdapterVersion
from .refs import AdapterName

HF_SCHEME = "hf://"
DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class HfSource:
    """A model repo on a Hugging Face Hub, at a revision (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> "HfSource":
        """Parse ``hf://org/repo``, ``hf://org/repo@rev`` (``hf://models/org/repo`` too).
        Raises ``InvalidName``."""
        if not isinstance(text, str) or not text.startswith(HF_SCHEME):
            raise InvalidArgument(f"invalid source {text!r}: expected hf://ORG/REPO or hf://ORG/REPO@REVISION")
        repo, _, revision = text[len(HF_SCHEME):].partition("@")
        repo = repo.removeprefix("models/").strip("/")
        if repo.split("/", 1)[0] in ("datasets", "spaces", "buckets", "kernels"):
            raise InvalidArgument(f"{text}: only model repos hold adapters")
        AdapterName.parse(repo)  # the same rules as a name here: ORG/REPO, no path tricks
        if "@" in text and not revision:
            raise InvalidArgument(f"invalid source {text!r}: nothing after '@'")
        return cls(repo, revision or None)

    def __str__(self) -> str:
        return f"{HF_SCHEME}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class ExportResult:
    repo_id: str
    url: str
    commit: str
    ref: str

    def to_dict(self) -> dict:
        return asdict(self)


# -- errors -------------------------------------------------------------------------------------

def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _network_errors() -> tuple[type[BaseException], ...]:
    # huggingface_hub's HTTP library: requests (< 1.0, its errors are OSErrors), httpx (1.x), httpx2 (2.x).
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module).HTTPError)
        except ImportError:
            pass
    return tuple(errors)


@contextlib.contextmanager
def hf_errors(where: str) -> Iterator[None]:
    """Turn what huggingface_hub (any version from 0.23) raises into ``LoramgrError``
    subclasses naming ``where``."""
    from huggingface_hub import utils as hf  # where every version exports its errors

    try:
        yield
    except LoramgrError:
        raise
    except (hf.OfflineModeIsEnabled, hf.LocalEntryNotFoundError) as exc:
        hint = " (HF_HUB_OFFLINE is set: set HF_HUB_OFFLINE=0 to reach it)" if _offline() else ""
        raise RemoteError(f"cannot reach {where}{hint}: {_first_line(exc)}") from None
    except hf.RepositoryNotFoundError as exc:
        raise AdapterNotFound(f"{where}: no such model repo, or it is private and needs a token (--token)"
                              f"{_server_says(exc)}") from None
    except hf.RevisionNotFoundError as exc:
        raise AdapterNotFound(f"{where}: no such revision{_server_says(exc)}") from None
    except hf.EntryNotFoundError as exc:
        raise AdapterNotFound(f"{where}: no such file{_server_says(exc)}") from None
    except hf.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        message = f"{where}: HTTP {status}{_server_says(exc)}"
        cls = {400: InvalidArgument, 401: Unauthorized, 403: Forbidden, 422: InvalidAdapter}.get(status, RemoteError)
        raise cls(message) from None
    except _network_errors() as exc:
        raise RemoteError(f"cannot reach {where}: {_first_line(exc) or type(exc).__name__}") from None
    except ValueError as exc:  # huggingface_hub's argument and README checks
        raise InvalidArgument(f"{where}: {_first_line(exc)}") from None


def _server_says(exc) -> str:
    message = getattr(exc, "server_message", None)
    return f": {_first_line(message)}" if message else ""


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if enabled or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


# -- import -------------------------------------------------------------------------------------

def _base_from_card(folder: Path) -> str | None:
    """README.md's ``base_model``, when adapter_config.json names none (else None: the config wins)."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None  # the push's validation names the problem
    if not isinstance(config, dict) or config.get("base_model_name_or_path") or not (folder / "README.md").is_file():
        return None
    try:
        return card_base_model(split_card((folder / "README.md").read_text(errors="replace"))[0])
    except InvalidArgument:
        return None


def push_snapshot(registry, folder: Path, *, label: str, name: str, task: str, base: str | None = None,
                  tags: Sequence[str] = (), description: str | None = None,
                  convert_pickle: bool = False) -> AdapterVersion:
    """Push a downloaded repo folder as an ``imported`` version, messages naming ``label``.
    Raises what ``push`` raises (``PickleRefused`` for pickled weights without
    ``convert_pickle``, ``InvalidAdapter``, ...)."""
    return registry.push(folder, name=name, task=task, base=base or _base_from_card(folder), tags=tags,
                         description=description, convert_pickle=convert_pickle, source="imported", label=label)


def import_adapter(registry, source: str, *, name: str, task: str, endpoint: str | None = None,
                   token: str | None = None, base: str | None = None, tags: Sequence[str] = (),
                   description: str | None = None, convert_pickle: bool = False,
                   progress: bool = True) -> AdapterVersion:
    """Import the adapter at ``source`` (``hf://org/repo[@rev]``) as the next version of ``name``.

    Only the adapter files are downloaded (``adapter_model.bin`` only when there are no
    safetensors weights, and only with ``convert_pickle``), at the commit the revision names.
    The description defaults to where it came from. Raises ``InvalidArgument``/``InvalidName``
    for a bad source, ``AdapterNotFound`` for a missing repo or revision, ``PickleRefused``,
    ``InvalidAdapter``, ``Unauthorized``, ``Forbidden``, ``RemoteError``.
    """
    from huggingface_hub import HfApi, snapshot_download

    hf_source = HfSource.parse(source)
    where = f"{(endpoint or _default_endpoint()).rstrip('/')}/{hf_source.repo_id}"
    AdapterName.parse(name)  # before any download
    with hf_errors(where), _progress_bars(progress):
        info = HfApi(endpoint=endpoint, token=token).model_info(hf_source.repo_id, revision=hf_source.revision)
        present = {s.rfilename for s in info.siblings or []}
        wanted = [f for f in ADAPTER_FILES if f in present]
        if WEIGHTS_FILE not in present and PICKLE_FILE in present:
            if not convert_pickle:
                raise PickleRefused(f"{source}: the weights are in pickled {PICKLE_FILE}, which can run code when "
                                    f"loaded; re-run with --convert-pickle to convert them to {WEIGHTS_FILE}")
            wanted.append(PICKLE_FILE)
        if CONFIG_FILE not in present:
            raise InvalidAdapter(f"{source}: the repo has no {CONFIG_FILE}: not a PEFT adapter")
        with tempfile.TemporaryDirectory(prefix="loramgr-hf-") as scratch:
            folder = Path(snapshot_download(hf_source.repo_id, revision=info.sha, endpoint=endpoint, token=token,
                                            local_dir=Path(scratch) / "snapshot", allow_patterns=wanted))
            return push_snapshot(registry, folder, label=str(source), name=name, task=task, base=base, tags=tags,
                                 description=description or f"Imported from {where} at {info.sha}",
                                 convert_pickle=convert_pickle)


def _default_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT or DEFAULT_ENDPOINT


# -- export -------------------------------------------------------------------------------------

def export_adapter(registry, ref: str, repo_id: str, *, endpoint: str | None = None, token: str | None = None,
                   private: bool | None = None, progress: bool = True) -> ExportResult:
    """Upload the version ``ref`` to the model repo ``repo_id`` as one commit (the repo is
    created when missing): its files, with README.md replaced by ``hf_card.export_card``.
    The commit description carries ``task: NAME``, which a loramgr hub reads back. Raises
    ``AdapterNotFound``, ``Unauthorized``, ``Forbidden``, ``InvalidAdapter`` (the hub refused
    the files), ``InvalidArgument``, ``RemoteError``."""
    from huggingface_hub import CommitOperationAdd, HfApi

    AdapterName.parse(repo_id)
    version = registry.show(ref)
    where = f"{(endpoint or _default_endpoint()).rstrip('/')}/{repo_id}"
    with tempfile.TemporaryDirectory(prefix="loramgr-hf-") as scratch:
        folder = registry.pull(version.ref, output=Path(scratch) / "adapter")
        card = folder / "README.md"
        card.write_text(export_card(version, repo_id, card.read_text(errors="replace") if card.is_file() else None))
        api = HfApi(endpoint=endpoint, token=token)
        # create_commit, not upload_folder: with hf_xet installed, upload_folder may split a large
        # upload into several commits, and on a loramgr hub each commit is a version.
        additions = [CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path))
                     for path in sorted(folder.iterdir()) if path.is_file()]
        with hf_errors(where), _progress_bars(progress):
            url = api.create_repo(repo_id, exist_ok=True, private=private)
            info = api.create_commit(repo_id, additions, commit_message=f"Export {version.ref} from loramgr",
                                     commit_description=f"task: {version.task}\nloramgr-ref: {version.ref}")
    return ExportResult(repo_id=repo_id, url=str(url), commit=info.oid, ref=version.ref)
