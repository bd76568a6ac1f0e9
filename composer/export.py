"""Writing a combined LoRA as an ordinary PEFT adapter folder.

The folder holds ``adapter_model.safetensors`` (``base_model.model.<module>.lora_A.weight`` /
``lora_B.weight``), ``adapter_config.json`` (built by PEFT's own ``LoraConfig``: ``r`` is the
combined rank and ``lora_alpha = r`` so PEFT's and vLLM's scaling is exactly 1, no rsLoRA, no
patterns, ``target_modules`` = the full module paths) and a ``README.md`` model card.

Same inputs give the same bytes: no timestamps, sorted keys and lists (PEFT's own
``save_pretrained`` writes ``target_modules`` from a set, whose order changes between
processes, so the config is serialised here). The folder appears whole or not at all: it is
written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import save_file

from loramgr.hub.errors import DestinationNotEmpty, InvalidArgument

from .align import CombinedLora
from .lora import PEFT_PREFIX

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
CARD_NAME = "README.md"

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def export_adapter(combined: CombinedLora, folder: str | Path, *, base_model: str, task_type: str | None,
                   target_modules: Sequence[str] | str | None = None, card: dict[str, Any] | None = None,
                   dtype: torch.dtype | str = torch.float32, overwrite: bool = False) -> Path:
    """Write ``combined`` to ``folder`` as a PEFT LoRA adapter and return the folder's path.

    ``target_modules`` defaults to the full paths of the combined modules, so PEFT wraps exactly
    those; if given (a list, or a regex string as PEFT takes it) it must match every module.
    ``card`` feeds the model card: ``name``, ``description``, ``sources``, ``weights``, ``mode``,
    ``score``, ``objective``, ``seed`` (the last four default to what ``combined`` recorded);
    other keys are listed as they are. ``dtype``: float32 (default), float16 or bfloat16.

    Raises ``InvalidArgument`` (unknown dtype or task type, target_modules that miss a module),
    ``DestinationNotEmpty`` (``folder`` has files and ``overwrite`` is false).
    """
    folder = Path(folder)
    dtype = _resolve_dtype(dtype)
    targets = _check_targets(sorted(combined.modules), target_modules)
    config = adapter_config(combined.rank, targets, base_model=base_model, task_type=task_type)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise DestinationNotEmpty(f"{folder} is not empty; choose another folder or pass overwrite", path=str(folder))

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_file(adapter_tensors(combined, dtype), str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (staging / CARD_NAME).write_text(model_card(combined, base_model, dtype, card or {}))
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the adapter is an ordinary folder
        _move_into_place(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def adapter_tensors(combined: CombinedLora, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """PEFT's state dict for the combined factors, keys sorted, tensors contiguous on CPU."""
    tensors = {}
    for module in sorted(combined.modules):
        f = combined.modules[module]
        # Scaling is 1.0 by construction (lora_alpha = r); fold anything else in to stay exact.
        tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = f.A.detach().to("cpu", dtype).contiguous()
        tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = (f.scaling * f.B).detach().to("cpu", dtype).contiguous()
    return tensors


def adapter_config(rank: int, targets: list[str] | str, *, base_model: str, task_type: str | None) -> dict:
    """The adapter_config.json contents, from PEFT's ``LoraConfig`` with sets made sorted lists.

    Raises ``InvalidArgument`` for a task type PEFT does not know.
    """
    from peft import LoraConfig

    try:
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, lora_dropout=0.0, bias="none",
                            use_rslora=False, rank_pattern={}, alpha_pattern={}, task_type=task_type,
                            base_model_name_or_path=base_model, inference_mode=True)
    except ValueError as exc:
        raise InvalidArgument(f"cannot build the adapter config: {exc}") from None
    as_dict = config.to_dict()
    return {key: sorted(value) if isinstance(value, set) else value for key, value in as_dict.items()}


def model_card(combined: CombinedLora, base_model: str, dtype: torch.dtype, card: dict[str, Any]) -> str:
    """README.md: YAML front matter for the Hub, then what was combined, how, and how well."""
    card = dict(card)
    name = card.pop("name", None) or "Composed LoRA adapter"
    description = card.pop("description", None)
    sources = list(card.pop("sources", combined.sources))
    weights = list(card.pop("weights", combined.weights))
    mode = card.pop("mode", combined.method)
    seed = card.pop("seed", combined.seed)
    score = card.pop("score", None)
    objective = card.pop("objective", None)
    if len(sources) != len(weights):
        raise InvalidArgument(f"card has {len(sources)} sources but {len(weights)} weights")

    lines = ["---", f"base_model: {json.dumps(base_model)}", "library_name: peft", "tags:",
             "- lora", "- loramgr", f"- {json.dumps(str(mode))}", "---", "", f"# {name}", ""]
    if description:
        lines += [str(description), ""]
    lines += [f"A LoRA adapter for `{base_model}` composed by loramgr from {len(sources)} adapters "
              f"with mode `{mode}`.", "", "| Source | Weight |", "| --- | --- |"]
    lines += [f"| {source} | {float(weight)!r} |" for source, weight in zip(sources, weights)]
    lines += ["", f"- Base model: `{base_model}`", f"- Mode: `{mode}`"]
    if combined.params:
        lines.append("- Parameters: " + ", ".join(f"{k}={v!r}" for k, v in sorted(combined.params.items())))
    lines += [f"- Rank: {combined.rank} (lora_alpha = r, so scaling is 1.0)", f"- Seed: {seed}"]
    if score is not None:
        lines.append(f"- Score: {score!r}" + (f" ({objective})" if objective else ""))
    error = combined.truncation_error
    lines.append("- Truncation error: " + ("none (exact)" if error is None else f"{error:.3e} (relative Frobenius)"))
    lines.append(f"- Tensor dtype: {str(dtype).removeprefix('torch.')}")
    lines += [f"- {key}: {value}" for key, value in sorted(card.items())]
    return "\n".join(lines) + "\n"


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    resolved = DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if resolved not in (torch.float32, torch.float16, torch.bfloat16):
        raise InvalidArgument(f"export dtype must be float32, float16 or bfloat16, got {dtype!r}")
    return resolved


def _check_targets(modules: list[str], target_modules) -> list[str] | str:
    """Default to the full module paths; otherwise check every module matches, by PEFT's rule
    (a regex string must match the whole path; a list entry the path or a ``.``-suffix of it)."""
    if target_modules is None:
        return modules
    if isinstance(target_modules, str):
        missed = [m for m in modules if not re.fullmatch(target_modules, m)]
        targets: list[str] | str = target_modules
    else:
        targets = sorted(target_modules)
        missed = [m for m in modules if not any(m == t or m.endswith("." + t) for t in targets)]
    if missed:
        raise InvalidArgument(f"target_modules {target_modules!r} do not match {', '.join(missed[:3])}"
                              + (f" and {len(missed) - 3} more" if len(missed) > 3 else ""))
    return targets


def _move_into_place(staging: Path, folder: Path) -> None:
    """Rename ``staging`` to ``folder``; an existing folder (empty, or allowed to be overwritten)
    is moved aside first and removed only once the new one is in place."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
    os.replace(folder, aside / "old")
    try:
        os.replace(staging, folder)
    except OSError:
        os.replace(aside / "old", folder)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
