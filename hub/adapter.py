"""Read, validate and describe a PEFT LoRA adapter folder; convert a pickled one to safetensors.

An adapter version is the files in ``ADAPTER_FILES``: ``adapter_config.json`` and
``adapter_model.safetensors`` (required), ``README.md`` and ``examples.jsonl`` (optional).
Validation reads the config and the safetensors header only, never tensor data, so it costs
the same for a 2 MB and a 2 GB adapter.
"""

from __future__ import annotations

import bisect
import re
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from .digests import sha256_file
from .errors import InvalidAdapter, InvalidArgument, PickleRefused
from .lora_config import (CONFIG_FILE, DEFAULT_ALPHA, DEFAULT_RANK, MAX_NAME_LENGTH,  # noqa: F401 (re-exported)
                          read_lora_config)
from .patterns import MATCH_BUDGET_S, PatternTable
from .safetensors_header import FLOAT_DTYPE_NAMES, SafetensorsHeader, TensorEntry, read_safetensors_header

WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE, "README.md", "examples.jsonl")
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE)

PEFT_PREFIX = "base_model.model."
# Bounds on tensor paths: real ones are under 150 characters and 15 levels.
MAX_TENSOR_NAME = 512
MAX_TENSOR_DEPTH = 64
# Characters a module path may not hold: the metadata store keeps target modules as ",a,b,".
_MODULE_FORBIDDEN = set(",") | {chr(c) for c in range(33)} | {"\x7f"}
# Layers PEFT saves whole next to the LoRA factors when embeddings are adapted or resized.
EMBEDDING_LAYER_NAMES = ("embed_tokens", "lm_head")

# Tensor keys PEFT writes for LoRA, after the prefix and the adapter name are stripped.
_LORA_KEY = re.compile(
    r"^(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_embedding_A|lora_embedding_B"
    r"|lora_magnitude_vector(?:\.weight)?|lora_B\.bias)$"
)
_PART_ROLE = {
    "lora_A.weight": "A", "lora_B.weight": "B", "lora_embedding_A": "A", "lora_embedding_B": "B",
    "lora_magnitude_vector": "magnitude", "lora_magnitude_vector.weight": "magnitude", "lora_B.bias": "bias",
}
# Per-module vectors stored beside the factors, shape (out,), allowed only when the config flag is on.
_VECTORS = (("magnitude", "lora_magnitude_vector", "use_dora"), ("bias", "lora_B.bias", "lora_bias"))


@dataclass(frozen=True)
class AdapterFile:
    """One file of a version; ``sha256`` is None when digests were not asked for."""

    name: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class Manifest:
    """What an adapter version is, as read from its folder. ``to_dict()`` is JSON-able.

    Module paths are as in the base model, without PEFT's ``base_model.model.`` prefix.
    ``modules`` holds ``(module path, lora_A shape, lora_B shape)`` for every LoRA module,
    embeddings included; ``full_weights`` holds ``(tensor name, shape)`` for weights stored
    whole rather than factored (``modules_to_save`` copies, saved embedding layers).
    """

    base_model: str | None
    task_type: str | None
    peft_type: str
    rank: int
    alpha: float
    use_rslora: bool
    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]
    module_ranks: dict[str, int]
    target_modules: list[str]
    modules: list[tuple[str, tuple[int, int], tuple[int, int]]]
    dtype: str
    param_count: int
    byte_size: int
    files: list[AdapterFile]
    use_dora: bool = False
    lora_bias: bool = False
    has_embeddings: bool = False
    modules_to_save: list[str] = field(default_factory=list)
    full_weights: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    # "peft", or the Stable Diffusion LoRA layout (hub/formats): "diffusers" or "kohya".
    format: str = "peft"
    components: list[str] = field(default_factory=list)  # pipeline parts a diffusers/kohya LoRA adapts

    def to_dict(self) -> dict:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["modules"] = [[path, list(a), list(b)] for path, a, b in self.modules]
        data["full_weights"] = [[name, list(shape)] for name, shape in self.full_weights]
        data["files"] = [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        """The inverse of ``to_dict()``, e.g. for a manifest stored as JSON."""
        data = dict(data)
        data["modules"] = [(path, tuple(a), tuple(b)) for path, a, b in data["modules"]]
        data["full_weights"] = [(name, tuple(shape)) for name, shape in data.get("full_weights", [])]
        data["files"] = [AdapterFile(**f) for f in data["files"]]
        return cls(**data)


@dataclass
class _Module:
    """The tensors found for one LoRA module while reading the header."""

    parts: dict[str, tuple[str, TensorEntry]] = field(default_factory=dict)  # role -> (key, entry)
    embedding: bool = False


def read_adapter(path: str | Path, *, digests: bool = True, label: str | None = None) -> Manifest:
    """Validate the PEFT LoRA adapter folder at ``path`` and describe it.

    Only the config and the safetensors header are read; with ``digests`` (the default) each
    version file is also hashed (sha256) for ``Manifest.files``. Errors name ``label`` in place
    of the folder (message and ``path`` detail): what the user named when ``path`` is a scratch
    copy.

    Raises ``PickleRefused`` when the weights are only in a pickled ``adapter_model.bin``, and
    ``InvalidAdapter`` (one line naming the file and the problem) when the folder or
    ``adapter_config.json`` is missing, the config is not a LoRA config, the safetensors header
    is corrupt, a tensor is not a LoRA / DoRA / modules_to_save tensor, a factor lacks its
    partner, shapes disagree with the configured rank, or a dtype is not floating point.
    """
    try:
        return _read_adapter(Path(path), digests)
    except (InvalidAdapter, PickleRefused) as error:
        if not label:
            raise
        raise error.naming(Path(path), label) from None


def _read_adapter(folder: Path, digests: bool) -> Manifest:
    if _is_other_format(folder):
        from .formats import read_other_adapter  # diffusers / kohya-style files; loralib pickles refused

        return read_other_adapter(folder, digests=digests)
    if not folder.is_dir():
        raise InvalidAdapter(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}", path=str(folder))
    config = read_lora_config(folder)
    header = _read_weights_header(folder)
    _check_dtypes(folder / WEIGHTS_FILE, header)
    lora_modules, full_weights = _group_tensors(folder / WEIGHTS_FILE, header, config)
    _check_modules(folder / WEIGHTS_FILE, lora_modules, config)

    files = [_describe_file(folder / name, digests) for name in sorted(ADAPTER_FILES) if (folder / name).is_file()]
    version_files = {f.name for f in files}
    tensors = header.tensors.values()
    dtypes = {FLOAT_DTYPE_NAMES[t.dtype] for t in tensors}
    return Manifest(
        base_model=config.get("base_model_name_or_path"),
        task_type=config.get("task_type"),
        peft_type=config["peft_type"],
        rank=config["r"],
        alpha=config["lora_alpha"],
        use_rslora=config["use_rslora"],
        rank_pattern=config["rank_pattern"],
        alpha_pattern=config["alpha_pattern"],
        module_ranks={m: mod.parts["A"][1].shape[0] for m, mod in sorted(lora_modules.items())},
        target_modules=sorted({m.rsplit(".", 1)[-1] for m in lora_modules}),
        modules=[(m, mod.parts["A"][1].shape, mod.parts["B"][1].shape) for m, mod in sorted(lora_modules.items())],
        dtype=dtypes.pop() if len(dtypes) == 1 else "mixed",
        param_count=sum(t.numel for t in tensors),
        byte_size=sum(f.size for f in files),
        files=files,
        use_dora=config["use_dora"],
        lora_bias=config["lora_bias"],
        has_embeddings=any(mod.embedding for mod in lora_modules.values()),
        modules_to_save=sorted(config["modules_to_save"]),
        full_weights=sorted(full_weights.items()),
        ignored_files=sorted(p.name for p in folder.iterdir() if p.name not in version_files),
        metadata=header.metadata,
    )


def _is_other_format(path: Path) -> bool:
    # A single file, or a folder with neither a config nor PEFT's weight file names.
    if path.is_file():
        return True
    return path.is_dir() and not any((path / name).exists() for name in (CONFIG_FILE, WEIGHTS_FILE, PICKLE_FILE))


def _read_weights_header(folder: Path) -> SafetensorsHeader:
    weights = folder / WEIGHTS_FILE
    if not weights.exists() and (folder / PICKLE_FILE).is_file():
        raise PickleRefused(
            f"{folder}: weights are in pickled {PICKLE_FILE}, which can run code when loaded; "
            f"re-run with --convert-pickle to convert them to {WEIGHTS_FILE}",
            path=str(folder),
        )
    if not weights.exists():
        raise InvalidAdapter(f"{folder}: {WEIGHTS_FILE} is missing", path=str(folder))
    header = read_safetensors_header(weights)
    if not header.tensors:
        raise InvalidAdapter(f"{weights}: holds no tensors", path=str(weights))
    return header


def _group_tensors(weights: Path, header: SafetensorsHeader, config: dict):
    """Sort tensor keys into LoRA modules and whole weights; reject anything unrecognised."""
    lora_modules: dict[str, _Module] = {}
    others: dict[str, TensorEntry] = {}
    for key, entry in header.tensors.items():
        if len(key) > MAX_TENSOR_NAME or key.count(".") > MAX_TENSOR_DEPTH:
            raise InvalidAdapter(f"{weights}: tensor {key[:80]!r}... has a path over {MAX_TENSOR_NAME} characters "
                                 f"or {MAX_TENSOR_DEPTH} levels", path=str(weights))
        name = key.removeprefix(PEFT_PREFIX)
        match = _LORA_KEY.match(name)
        if match is None:
            others[name] = entry
            continue
        role = _PART_ROLE[match["part"]]
        if not _MODULE_FORBIDDEN.isdisjoint(match["module"]):
            raise InvalidAdapter(f"{weights}: tensor {key!r}: a module path may not hold ',', spaces or control "
                                 "characters", path=str(weights))
        module = lora_modules.setdefault(match["module"], _Module())
        if role in module.parts:
            raise InvalidAdapter(f"{weights}: module {match['module']!r} has two {role} tensors "
                                 f"({module.parts[role][0]!r} and {key!r})", path=str(weights))
        embedding = match["part"].startswith("lora_embedding")
        if role in ("A", "B") and module.parts.keys() & {"A", "B"} and embedding != module.embedding:
            raise InvalidAdapter(f"{weights}: module {match['module']!r} mixes lora_A/B and lora_embedding_A/B "
                                 "tensors", path=str(weights))
        module.parts[role] = (key, entry)
        module.embedding = module.embedding or embedding
    embedding_modules = {m for m, mod in lora_modules.items() if mod.embedding}
    full_weights = {}
    modules_to_save = _ModulesToSave(config["modules_to_save"])
    for name, entry in others.items():
        if not (modules_to_save.holds(name) or _is_embedding_layer(name, embedding_modules)):
            raise InvalidAdapter(f"{weights}: tensor {PEFT_PREFIX + name!r} is not a LoRA, DoRA or "
                                 "modules_to_save tensor", path=str(weights))
        full_weights[name] = entry.shape
    if not lora_modules:
        raise InvalidAdapter(f"{weights}: holds no LoRA tensors (lora_A / lora_B)", path=str(weights))
    return lora_modules, full_weights


class _ModulesToSave:
    """PEFT saves a whole copy of each ``modules_to_save`` module: a tensor belongs to one when
    the module's name appears in its path starting at a component and ending before a ``.``.
    Looked up in a set for each (component start, dot) pair of the tensor's path: linear in the
    tensors whatever the number of names (a regex per pair was quadratic, and thrashed ``re``'s
    cache past 512 names)."""

    def __init__(self, names: list[str]):
        self.names = set(names)
        self.longest = max(map(len, names), default=0)

    def holds(self, tensor: str) -> bool:
        if not self.names:
            return False
        dots = [i for i, c in enumerate(tensor) if c == "."]
        for start in [0] + [d + 1 for d in dots]:
            for end in dots[bisect.bisect_left(dots, start + 1):]:
                if end - start > self.longest:
                    break
                if tensor[start:end] in self.names:
                    return True
        return False


def _is_embedding_layer(name: str, embedding_modules: set[str]) -> bool:
    # With save_embedding_layers, PEFT stores the adapted (or resized) embedding weights whole.
    module = re.sub(r"(\.base_layer)?\.weight$", "", name)
    return module != name and (module in embedding_modules or module.rsplit(".", 1)[-1] in EMBEDDING_LAYER_NAMES)


def _check_modules(weights: Path, lora_modules: dict[str, _Module], config: dict) -> None:
    def invalid(module: str, problem: str) -> InvalidAdapter:
        return InvalidAdapter(f"{weights}: module {module!r} {problem}", path=str(weights))

    def config_invalid(problem: str) -> InvalidAdapter:
        return InvalidAdapter(f"{weights.parent / CONFIG_FILE}: {problem}", path=str(weights.parent / CONFIG_FILE))

    ranks = PatternTable(list(config["rank_pattern"]), "rank_pattern", config_invalid,
                         deadline=time.thread_time() + MATCH_BUDGET_S)
    for module, found in sorted(lora_modules.items()):
        a_name, b_name = ("lora_embedding_A", "lora_embedding_B") if found.embedding else ("lora_A", "lora_B")
        lacking = [name for role, name in (("A", a_name), ("B", b_name)) if role not in found.parts]
        if lacking:
            have = [key.removeprefix(PEFT_PREFIX).removeprefix(module + ".") for key, _ in found.parts.values()]
            raise invalid(module, f"has {' and '.join(have)} but no {' or '.join(lacking)}")
        a, b = found.parts["A"][1], found.parts["B"][1]
        for factor, entry, layout in ((a_name, a, "(r, in)"), (b_name, b, "(out, r)")):
            if len(entry.shape) != 2:
                hint = "; convolution LoRA is not supported" if len(entry.shape) > 2 else ""
                raise invalid(module, f"{factor} has shape {list(entry.shape)}, expected 2-D {layout}{hint}")

        if a.shape[0] != b.shape[1]:
            raise invalid(module, f"{a_name} has rank {a.shape[0]} {list(a.shape)} but {b_name} has rank "
                                  f"{b.shape[1]} {list(b.shape)}")
        expected, source = _configured_rank(module, config, ranks)
        if a.shape[0] != expected:
            raise invalid(module, f"has rank {a.shape[0]} ({a_name} {list(a.shape)}, {b_name} {list(b.shape)}) "
                                  f"but {source} in {CONFIG_FILE}")
        for role, label, flag in _VECTORS:
            if role not in found.parts:
                continue
            if not config[flag]:
                raise invalid(module, f"has {label} but {flag} is not true in {CONFIG_FILE}")
            if found.parts[role][1].shape != (b.shape[0],):
                raise invalid(module, f"{label} has shape {list(found.parts[role][1].shape)}, expected "
                                      f"[{b.shape[0]}] (out features)")
        if config["use_dora"] and "magnitude" not in found.parts:
            raise invalid(module, f"has no lora_magnitude_vector but use_dora is true in {CONFIG_FILE}")


def _configured_rank(module: str, config: dict, ranks: PatternTable) -> tuple[int, str]:
    """The rank PEFT builds for ``module``, and where it comes from (for messages)."""
    # PEFT's rule (peft.utils.other.get_pattern_key): a key matches a suffix of the path.
    key = ranks.key_for(module)
    if key is not None:
        rank = config["rank_pattern"][key]
        return rank, f"rank_pattern[{key!r}] is {rank}"
    return config["r"], f"r is {config['r']}"


def _check_dtypes(weights: Path, header: SafetensorsHeader) -> None:
    for key, entry in header.tensors.items():
        if entry.dtype not in FLOAT_DTYPE_NAMES:
            raise InvalidAdapter(f"{weights}: tensor {key!r} has dtype {entry.dtype}; adapter weights must be "
                                 "floating point", path=str(weights))
        if 0 in entry.shape:
            raise InvalidAdapter(f"{weights}: tensor {key!r} has shape {list(entry.shape)}: zero-size tensors "
                                 "are refused (PEFT cannot load them)", path=str(weights))


def check_regular_files(folder: str | Path, names=None) -> None:
    """Raise ``InvalidAdapter`` unless each of ``names`` in ``folder`` that exists (default: the
    version files and a pickled ``adapter_model.bin``) is a regular file: a symbolic link (to
    ``/etc/passwd``, say) or a device, pipe or ``/proc`` entry would publish what it points at,
    or block the push, so a push refuses them."""
    folder = Path(folder)
    for name in (names if names is not None else (*ADAPTER_FILES, PICKLE_FILE)):
        path = folder / name
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise InvalidAdapter(f"{path}: cannot be read ({exc.strerror or exc})", path=str(path)) from None
        if stat.S_ISLNK(mode):
            raise InvalidAdapter(f"{path} is a symbolic link: a push stores regular files only (copy the file "
                                 "into the folder instead)", path=str(path))
        if not stat.S_ISREG(mode):
            raise InvalidAdapter(f"{path} is not a regular file: a push stores regular files only",
                                 path=str(path))


def _describe_file(path: Path, digest: bool) -> AdapterFile:
    return AdapterFile(name=path.name, size=path.stat().st_size, sha256=sha256_file(path) if digest else None)


def convert_pickled_adapter(src_dir: str | Path, dst_dir: str | Path) -> Path:
    """Convert the pickled ``adapter_model.bin`` in ``src_dir`` into a safetensors adapter in ``dst_dir``.

    The pickle is loaded only with ``torch.load(..., weights_only=True)``, which refuses any
    object other than tensors and plain containers, so a malicious pickle cannot run code.
    ``adapter_model.safetensors`` is written to ``dst_dir`` with the other version files copied
    beside it, and the result is validated like any adapter. Returns ``dst_dir``.

    Raises ``InvalidAdapter`` when the config is not LoRA, there is no ``adapter_model.bin``,
    the pickle is refused or does not hold a dict of tensors, or the converted adapter is
    invalid; ``InvalidArgument`` when ``dst_dir`` is ``src_dir`` (the user's folder is never
    written to).
    """
    src, dst = Path(src_dir), Path(dst_dir)
    if not src.is_dir():
        raise InvalidAdapter(f"{src}: no such folder", path=str(src))
    read_lora_config(src)  # refuse a non-LoRA folder before unpickling anything
    pickle_path = src / PICKLE_FILE
    if not pickle_path.is_file():
        raise InvalidAdapter(f"{src}: no {PICKLE_FILE} to convert", path=str(src))
    if dst.resolve() == src.resolve():
        raise InvalidArgument(f"{dst}: convert into another folder, not the adapter's own")
    state = _load_pickled_tensors(pickle_path)

    from safetensors.torch import save_file

    dst.mkdir(parents=True, exist_ok=True)
    # clone: tensors that share storage (tied weights, views) cannot be saved to safetensors.
    save_file({key: tensor.detach().clone().contiguous() for key, tensor in state.items()},
              str(dst / WEIGHTS_FILE), metadata={"format": "pt"})
    for name in ADAPTER_FILES:
        if name != WEIGHTS_FILE and (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    read_adapter(dst, digests=False)
    return dst


def _load_pickled_tensors(pickle_path: Path) -> dict:
    # torch is imported here, not at the top: reading and listing adapters must not pay for it.
    import torch

    try:
        state = torch.load(pickle_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an untrusted file: any failure to unpickle is a refusal
        raise InvalidAdapter(f"{pickle_path}: refused to load ({_one_line(exc)})", path=str(pickle_path)) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) and v.layout == torch.strided for k, v in state.items()
    ):
        raise InvalidAdapter(f"{pickle_path}: does not hold a dict of named dense tensors", path=str(pickle_path))
    return state


def _one_line(exc: Exception) -> str:
    # weights_only errors span many lines; the one naming the refused global is the useful one.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return next((line for line in lines if "unsupported global" in line.lower()), lines[0])
