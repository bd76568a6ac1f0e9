"""Stable Diffusion LoRA files: diffusers' ``pytorch_lora_weights.safetensors`` and kohya-style files.

The two layouts, as their writers produce them:

- diffusers (``StableDiffusionPipeline.save_lora_weights`` and friends): keys start with the
  pipeline component, ``unet.`` / ``text_encoder.`` / ``text_encoder_2.`` / ``transformer.``,
  then the module path and PEFT's ``lora_A.weight`` / ``lora_B.weight`` (older diffusers wrote
  ``lora.down.weight`` / ``lora.up.weight``, and ``lora_linear_layer.down/up.weight`` for text
  encoders); an optional ``<module>.alpha`` holds the network alpha.
- kohya-style (sd-scripts and the trainers that copy it): ``lora_unet_<path with _>``,
  ``lora_te_`` (SD 1.x/2.x text encoder), ``lora_te1_`` / ``lora_te2_`` (SDXL's two) and
  ``lora_transformer_``, each with ``.lora_down.weight`` (r, in[, kh, kw]),
  ``.lora_up.weight`` (out, r[, 1, 1]) and a scalar ``.alpha``.

Only the safetensors header is read, plus the few bytes of each scalar alpha. A missing alpha
means alpha = rank (scaling 1), which is what both diffusers and kohya assume.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..adapter import AdapterFile, Manifest
from ..errors import InvalidAdapter
from ..safetensors_header import (FLOAT_DTYPE_NAMES, LENGTH_PREFIX_BYTES, SafetensorsHeader, TensorEntry,
                                  read_safetensors_header)
from . import CARD_FILE, DIFFUSERS, KOHYA

DIFFUSERS_COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "transformer")
KOHYA_COMPONENTS = {"unet": "unet", "te": "text_encoder", "te1": "text_encoder", "te2": "text_encoder_2",
                    "transformer": "transformer"}
_DIFFUSERS_KEY = re.compile(
    r"^(?P<component>unet|text_encoder|text_encoder_2|transformer)\.(?P<module>[A-Za-z0-9_.-]+?)\."
    r"(?P<part>lora_A\.weight|lora_B\.weight|lora\.down\.weight|lora\.up\.weight"
    r"|lora_linear_layer\.down\.weight|lora_linear_layer\.up\.weight|alpha)$")
# Module names are plain identifiers: the metadata store keeps targets as ",a,b," and they are shown.
_KOHYA_KEY = re.compile(r"^lora_(?P<component>unet|te1|te2|te|transformer)_(?P<module>[A-Za-z0-9_]+?)"
                        r"\.(?P<part>lora_down\.weight|lora_up\.weight|alpha)$")
_ROLE = {"lora_A.weight": "down", "lora.down.weight": "down", "lora_linear_layer.down.weight": "down",
         "lora_down.weight": "down", "lora_B.weight": "up", "lora.up.weight": "up",
         "lora_linear_layer.up.weight": "up", "lora_up.weight": "up", "alpha": "alpha"}
# Layers kohya-style names end with; the name is ambiguous once dots became underscores, so the
# target module (for search) is the longest of these that ends the name, else its last word.
KOHYA_TARGETS = ("to_q", "to_k", "to_v", "to_out_0", "proj_in", "proj_out", "ff_net_0_proj", "ff_net_2",
                 "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "conv_shortcut", "time_emb_proj",
                 "conv1", "conv2", "conv", "add_k_proj", "add_v_proj", "add_q_proj", "to_add_out", "proj_mlp")
# Tensor name parts the other LoRA-like systems write, so the refusal can name them.
_UNSUPPORTED = (("hada_w1_a", "LyCORIS LoHa"), ("lokr_w1", "LyCORIS LoKr"), ("dora_scale", "DoRA"),
                ("lora_magnitude_vector", "DoRA"), ("oft_blocks", "OFT"), ("diff", "a full weight difference"))
_SCALAR_FORMATS = {"F64": "<d", "F32": "<f", "F16": "<e"}


@dataclass
class _Module:
    parts: dict[str, tuple[str, TensorEntry]] = field(default_factory=dict)  # role -> (key, entry)
    component: str = ""


def read_sd_lora(weights: Path, *, card_folder: Path | None, digests: bool) -> Manifest:
    """Validate and describe one diffusers or kohya-style LoRA file (``card_folder``: the folder it
    was found in, whose ``README.md`` goes with it). Raises ``InvalidAdapter`` naming the file."""
    header = read_safetensors_header(weights)
    keys = list(header.tensors)
    if not keys:
        raise InvalidAdapter(f"{weights}: holds no tensors", path=str(weights))
    fmt = _format_of(weights, keys)
    modules = _group(weights, header, fmt)
    alphas = {m: _alpha(weights, header, mod) for m, mod in modules.items()}
    ranks = {m: mod.parts["down"][1].shape[0] for m, mod in modules.items()}
    top = max(ranks.values())
    alpha = next(alphas[m] for m in sorted(modules) if ranks[m] == top)
    files = [_describe(weights, digests)]
    if card_folder is not None and (card_folder / CARD_FILE).is_file():
        files.append(_describe(card_folder / CARD_FILE, digests))
    stored = {f.name for f in files}
    dtypes = {FLOAT_DTYPE_NAMES[e.dtype] for e in header.tensors.values()}
    return Manifest(
        base_model=None, task_type=None, peft_type="LORA", rank=top, alpha=alpha, use_rslora=False,
        rank_pattern={}, alpha_pattern={m: a for m, a in sorted(alphas.items()) if a != alpha},
        module_ranks=dict(sorted(ranks.items())),
        target_modules=sorted({_target(m, fmt) for m in modules}),
        modules=[(m, mod.parts["down"][1].shape, mod.parts["up"][1].shape) for m, mod in sorted(modules.items())],
        dtype=dtypes.pop() if len(dtypes) == 1 else "mixed",
        param_count=sum(e.numel for e in header.tensors.values()),
        byte_size=sum(f.size for f in files), files=sorted(files, key=lambda f: f.name),
        ignored_files=sorted(p.name for p in card_folder.iterdir() if p.name not in stored) if card_folder else [],
        metadata=header.metadata, format=fmt, components=sorted({mod.component for mod in modules.values()}),
    )


def _format_of(weights: Path, keys: list[str]) -> str:
    for marker, what in _UNSUPPORTED:
        found = next((k for k in keys if marker in k.split(".")), None)
        if found:
            raise InvalidAdapter(f"{weights}: tensor {found!r} is {what}, not LoRA; only LoRA files "
                                 "(diffusers or kohya-style) are supported", path=str(weights))
    if all(k.startswith("lora_") for k in keys):
        return KOHYA
    if all(k.split(".", 1)[0] in DIFFUSERS_COMPONENTS for k in keys):
        return DIFFUSERS
    sample = next(k for k in keys if not k.startswith("lora_") and k.split(".", 1)[0] not in DIFFUSERS_COMPONENTS)
    raise InvalidAdapter(
        f"{weights}: tensor {sample!r} is neither a PEFT adapter (no adapter_config.json), a diffusers LoRA "
        "(keys starting unet. / text_encoder. / text_encoder_2. / transformer.) nor a kohya-style LoRA "
        "(lora_unet_ / lora_te_ / lora_te1_ / lora_te2_ keys)", path=str(weights))


def _group(weights: Path, header: SafetensorsHeader, fmt: str) -> dict[str, _Module]:
    pattern = _KOHYA_KEY if fmt == KOHYA else _DIFFUSERS_KEY
    modules: dict[str, _Module] = {}
    for key, entry in header.tensors.items():
        match = pattern.match(key)
        if match is None:
            expected = (".lora_down.weight, .lora_up.weight or .alpha" if fmt == KOHYA
                        else ".lora_A.weight, .lora_B.weight (or lora.down/up.weight) or .alpha")
            raise InvalidAdapter(f"{weights}: tensor {key!r} is not a {fmt} LoRA tensor (expected "
                                 f"<component><module>{expected})", path=str(weights))
        component = match["component"]
        name = f"lora_{component}_{match['module']}" if fmt == KOHYA else f"{component}.{match['module']}"
        module = modules.setdefault(name, _Module(component=KOHYA_COMPONENTS.get(component, component)))
        role = _ROLE[match["part"]]
        if role in module.parts:
            raise InvalidAdapter(f"{weights}: module {name!r} has two {role} tensors ({module.parts[role][0]!r} "
                                 f"and {key!r})", path=str(weights))
        if entry.dtype not in FLOAT_DTYPE_NAMES:
            raise InvalidAdapter(f"{weights}: tensor {key!r} has dtype {entry.dtype}; LoRA weights must be "
                                 "floating point", path=str(weights))
        module.parts[role] = (key, entry)
    for name, module in sorted(modules.items()):
        _check_module(weights, name, module)
    return modules


def _check_module(weights: Path, name: str, module: _Module) -> None:
    def invalid(problem: str) -> InvalidAdapter:
        return InvalidAdapter(f"{weights}: module {name!r} {problem}", path=str(weights))

    lacking = [role for role in ("down", "up") if role not in module.parts]
    if lacking:
        raise invalid(f"has no {' or '.join(lacking)} factor")
    down, up = module.parts["down"][1], module.parts["up"][1]
    for role, entry in (("down", down), ("up", up)):
        if len(entry.shape) not in (2, 4):
            raise invalid(f"{role} factor has shape {list(entry.shape)}; expected 2-D (linear) or 4-D (conv)")
    if down.shape[0] != up.shape[1] or down.shape[0] < 1:
        raise invalid(f"down factor {list(down.shape)} and up factor {list(up.shape)} disagree on the rank")
    if "alpha" in module.parts and module.parts["alpha"][1].numel != 1:
        raise invalid(f"alpha has shape {list(module.parts['alpha'][1].shape)}; expected one number")


def _alpha(weights: Path, header: SafetensorsHeader, module: _Module) -> float:
    rank = module.parts["down"][1].shape[0]
    if "alpha" not in module.parts:
        return float(rank)
    _, entry = module.parts["alpha"]
    start = LENGTH_PREFIX_BYTES + header.header_bytes + entry.offsets[0]
    with open(weights, "rb") as f:
        f.seek(start)
        raw = f.read(entry.nbytes)
    if entry.dtype == "BF16":  # the top half of a float32
        value = struct.unpack("<f", b"\x00\x00" + raw)[0]
    elif entry.dtype in _SCALAR_FORMATS:
        value = struct.unpack(_SCALAR_FORMATS[entry.dtype], raw)[0]
    else:
        raise InvalidAdapter(f"{weights}: alpha of {module.parts['alpha'][0]!r} is {entry.dtype}; expected "
                             "float16, bfloat16, float32 or float64", path=str(weights))
    if not value == value or value in (float("inf"), float("-inf")):
        raise InvalidAdapter(f"{weights}: alpha {module.parts['alpha'][0]!r} is not a finite number",
                             path=str(weights))
    return float(value) if value != 0 else float(rank)  # kohya reads alpha 0 as "alpha = rank"


def _target(module: str, fmt: str) -> str:
    if fmt == KOHYA:
        return next((t for t in sorted(KOHYA_TARGETS, key=len, reverse=True) if module.endswith("_" + t)),
                    module.rsplit("_", 1)[-1])
    parts = module.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


def _describe(path: Path, digests: bool) -> AdapterFile:
    return AdapterFile(name=path.name, size=path.stat().st_size, sha256=_sha256(path) if digests else None)


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()
