"""LoRA adapters as factors in memory: the common currency of the composer.

A module's update is ``delta = scaling * B @ A`` with ``A`` of shape ``(r, in)`` and ``B`` of
shape ``(out, r)``. Every combine method, the objective and the export work on these factors;
nothing here materialises an ``out x in`` matrix unless asked with ``delta()``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from .errors import UnsupportedAdapter

PEFT_PREFIX = "base_model.model."
_FACTOR_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$")


@dataclass(frozen=True)
class LoraFactors:
    """One module's low-rank update."""

    A: torch.Tensor
    B: torch.Tensor
    scaling: float = 1.0

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def delta(self) -> torch.Tensor:
        """The dense ``out x in`` update; for tests and small shapes only."""
        return self.scaling * (self.B.double() @ self.A.double())


@dataclass
class LoraWeights:
    """A whole adapter: its PEFT config and its factors keyed by module path.

    Module paths are as in the base model (``model.layers.0.self_attn.q_proj``), without
    PEFT's ``base_model.model.`` prefix.
    """

    config: dict
    modules: dict[str, LoraFactors]
    label: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")


def pattern_value(pattern: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: a key matches a suffix of the module path."""
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def module_scaling(config: dict, module: str, rank: int) -> float:
    """The scaling PEFT applies to ``module``: alpha / r, or alpha / sqrt(r) with rslora."""
    alpha = pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8))
    if config.get("use_rslora"):
        return alpha / math.sqrt(rank)
    return alpha / rank


def load_lora(path: str | Path, *, dtype: torch.dtype = torch.float32, device="cpu", label: str = "") -> LoraWeights:
    """Read a PEFT LoRA folder into factors, one tensor at a time.

    Raises ``UnsupportedAdapter`` for what cannot be combined as factors (DoRA, LoRA on
    embeddings, ``modules_to_save``). The folder is assumed valid otherwise: the hub validates
    adapters when they are pushed.
    """
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        _refuse_other_format(path, label)
    config = json.loads((path / "adapter_config.json").read_text())
    if config.get("use_dora"):
        raise UnsupportedAdapter(f"{label or path}: DoRA adapters cannot be combined (use_dora=true)")
    factors: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(path / "adapter_model.safetensors"), framework="pt", device="cpu") as f:
        for key in f.keys():
            match = _FACTOR_KEY.match(key)
            if match is None:
                what = "LoRA on embeddings" if "lora_embedding" in key else "modules_to_save or other non-LoRA tensors"
                raise UnsupportedAdapter(f"{label or path}: {what} cannot be combined (tensor {key})")
            tensor = f.get_tensor(key).to(device=device, dtype=dtype)
            factors.setdefault(match["module"], {})[match["factor"]] = tensor
    modules = {
        module: LoraFactors(ab["A"], ab["B"], module_scaling(config, module, ab["A"].shape[0]))
        for module, ab in sorted(factors.items())
    }
    return LoraWeights(config=config, modules=modules, label=label or path.name)


def _refuse_other_format(path: Path, label: str) -> None:
    """Raise ``UnsupportedAdapter`` for a folder that is not a PEFT adapter, saying what it is."""
    from loramgr.hub.formats import detect_format

    kind = detect_format(path)
    if kind is not None:
        raise UnsupportedAdapter(f"{label or path}: a Stable Diffusion LoRA ({kind} format) cannot be composed or "
                                 "merged yet: the composer scores language models only; pull it and load it with "
                                 "diffusers' load_lora_weights")
    raise UnsupportedAdapter(f"{label or path}: not a PEFT adapter (no adapter_config.json)")
