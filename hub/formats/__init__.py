"""LoRA files that are not PEFT folders: Stable Diffusion LoRAs (diffusers' and kohya-style) and
loralib checkpoints.

``read_adapter`` hands a path here when it is a single file, or a folder without
``adapter_config.json``. Stable Diffusion LoRAs are stored as they are (the same bytes come
back on pull) and described by a ``Manifest`` whose ``format`` says which kind they are;
loralib checkpoints are pickles, so they are only ever converted into a PEFT folder
(``loralib_checkpoint.convert_loralib``), never stored.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import InvalidAdapter, PickleRefused

PEFT = "peft"
DIFFUSERS = "diffusers"
KOHYA = "kohya"
FORMATS = (PEFT, DIFFUSERS, KOHYA)
CARD_FILE = "README.md"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# A stored weights file keeps its own name (kohya files have any name); it must stay a plain
# file name on every system and in a URL.
_WEIGHTS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,126}\.safetensors$")


def is_weights_file_name(name: str) -> bool:
    """Whether ``name`` may be the weights file of a diffusers / kohya version."""
    return isinstance(name, str) and bool(_WEIGHTS_NAME.fullmatch(name)) and ".." not in name


def weights_file(path: str | Path) -> Path:
    """The one ``.safetensors`` file a push of ``path`` (a file, or a folder without
    ``adapter_config.json``) means.

    Raises ``PickleRefused`` for a pickled checkpoint (``.pt``, ``.bin``...), ``InvalidAdapter``
    for anything else that is not exactly one safetensors file.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            raise PickleRefused(
                f"{path}: a pickled checkpoint, which can run code when loaded; a loralib checkpoint is "
                "converted to a PEFT folder with --convert-pickle --base BASE --alpha ALPHA", path=str(path))
        if path.suffix != ".safetensors":
            raise InvalidAdapter(f"{path}: not a folder, nor a .safetensors LoRA file", path=str(path))
        return path
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix == ".safetensors")
    pickles = sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)
    if not found and pickles:
        raise PickleRefused(
            f"{path}: holds only pickled {', '.join(pickles)} and no adapter_config.json; a loralib checkpoint "
            "is converted with --convert-pickle --base BASE --alpha ALPHA", path=str(path))
    if not found:
        raise InvalidAdapter(f"{path}: adapter_config.json is missing (and there is no Stable Diffusion "
                             "LoRA .safetensors file either)", path=str(path))
    if len(found) > 1:
        raise InvalidAdapter(f"{path}: holds {len(found)} .safetensors files ({', '.join(p.name for p in found)}) "
                             "and no adapter_config.json; push the one LoRA file itself", path=str(path))
    return found[0]


def read_other_adapter(path: str | Path, *, digests: bool = True):
    """The ``Manifest`` of a Stable Diffusion LoRA: a ``.safetensors`` file, or a folder holding
    one (and maybe a ``README.md`` card). Raises ``InvalidAdapter``, ``PickleRefused``."""
    from .sd_lora import read_sd_lora

    return read_sd_lora(weights_file(path), card_folder=None if Path(path).is_file() else Path(path),
                        digests=digests)


def detect_format(path: str | Path) -> str | None:
    """``'peft'``, ``'diffusers'`` or ``'kohya'`` for an adapter folder or file; None when it is
    none of them (no exception: for messages that say what a thing is)."""
    path = Path(path)
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return PEFT
    try:
        return read_other_adapter(path, digests=False).format
    except (InvalidAdapter, PickleRefused, OSError):
        return None


def push_source(path: str | Path, scratch: Path, *, convert_pickle: bool, base: str | None,
                alpha: float | None) -> Path:
    """What a push of ``path`` reads: ``path`` itself, or, with ``convert_pickle``, the PEFT folder
    converted into ``scratch`` from the loralib checkpoint ``path`` is (or holds).
    Raises ``PickleRefused``, ``InvalidAdapter``, ``InvalidArgument`` (see ``convert_loralib``)."""
    from .loralib_checkpoint import convert_loralib, pickled_checkpoint

    checkpoint = pickled_checkpoint(path) if convert_pickle else None
    if checkpoint is None:
        return Path(path)
    return convert_loralib(checkpoint, Path(scratch) / "converted-loralib", base=base, alpha=alpha)


def files_root(path: str | Path) -> Path:
    """The folder the files of a ``Manifest`` read from ``path`` lie in."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def other_file_problem(names, adapter_files) -> str | None:
    """Why the file names of an uploaded version are not allowed, or None. Beside
    ``adapter_files`` a version may hold one Stable Diffusion LoRA ``.safetensors`` file, and then
    no ``adapter_config.json`` (a PEFT version cannot smuggle in a file nobody validated)."""
    others = sorted(n for n in names if n not in adapter_files)
    if not others:
        return None
    if len(others) == 1 and is_weights_file_name(others[0]) and "adapter_config.json" not in names:
        return None
    return (f"{others[0]!r} is not an adapter file: one of {', '.join(adapter_files)}, or a single "
            "Stable Diffusion LoRA .safetensors file without adapter_config.json")
