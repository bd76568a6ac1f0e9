"""loralib checkpoints (``torch.save(lora.lora_state_dict(model), PATH)``) into PEFT folders.

A loralib checkpoint is a pickle of ``{<module path>.lora_A: (r, in), <module path>.lora_B:
(out, r)}``. It does not say which base model it belongs to nor the ``lora_alpha`` it was
trained with (loralib scales by ``lora_alpha / r`` at run time), so it is converted only when
the user names both; it is unpickled only by ``torch.load(weights_only=True)``, which refuses
anything but tensors and plain containers. The module paths are kept as they are: they are the
paths of the user's model, which PEFT then wraps by full name.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

from ..errors import InvalidAdapter, InvalidArgument, PickleRefused
from . import PICKLE_SUFFIXES

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])$")


def pickled_checkpoint(path: str | Path) -> Path | None:
    """The pickled checkpoint a push of ``path`` means (the file itself, or the one pickle in a
    folder without ``adapter_config.json``), or None when ``path`` is not one."""
    path = Path(path)
    if path.is_file():
        return path if path.suffix in PICKLE_SUFFIXES else None
    if not path.is_dir() or (path / CONFIG_FILE).exists():
        return None
    pickles = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)
    safetensors = [p for p in path.iterdir() if p.suffix == ".safetensors"]
    return pickles[0] if len(pickles) == 1 and not safetensors else None


def convert_loralib(checkpoint: str | Path, destination: str | Path, *, base: str | None,
                    alpha: float | None) -> Path:
    """Write the loralib checkpoint as a PEFT adapter folder at ``destination`` and return it.

    Raises ``PickleRefused`` when ``base`` or ``alpha`` is missing (before anything is
    unpickled), ``InvalidArgument`` for a bad alpha, ``InvalidAdapter`` when the pickle is
    refused or is not a loralib state dict of 2-D ``lora_A`` / ``lora_B`` pairs.
    """
    checkpoint = Path(checkpoint)
    if not base or alpha is None:
        missing = " and ".join(flag for flag, value in (("--base BASE", base), ("--alpha ALPHA", alpha))
                               if value in (None, ""))
        raise PickleRefused(f"{checkpoint}: a loralib checkpoint records neither its base model nor its lora_alpha; "
                            f"pass {missing} (the lora_alpha it was trained with) to convert it", path=str(checkpoint))
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise InvalidArgument(f"--alpha must be a positive number, got {alpha!r}")
    state = _load_tensors(checkpoint)
    modules = _pairs(checkpoint, state)
    ranks = {m: a.shape[0] for m, (a, _) in modules.items()}
    counts = Counter(ranks.values())
    rank = max(counts, key=lambda r: (counts[r], r))  # the most common rank; the larger one on a tie
    config = {
        "peft_type": "LORA", "base_model_name_or_path": base, "task_type": None, "r": rank,
        "lora_alpha": alpha, "target_modules": sorted(modules), "lora_dropout": 0.0, "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "use_rslora": False,
        # loralib scales every module by lora_alpha / its own r: the same alpha, per-module ranks.
        "rank_pattern": {re.escape(m): r for m, r in sorted(ranks.items()) if r != rank},
        "alpha_pattern": {},
    }
    from safetensors.torch import save_file

    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for module, (a, b) in sorted(modules.items()):
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.detach().clone().contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.detach().clone().contiguous()
    save_file(tensors, str(destination / WEIGHTS_FILE), metadata={"format": "pt", "converted_from": "loralib"})
    (destination / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return destination


def _load_tensors(checkpoint: Path) -> dict:
    import torch  # only here: listing and reading adapters must not pay for it

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an untrusted file: any failure to unpickle is a refusal
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        reason = next((line for line in lines if "unsupported global" in line.lower()), lines[0])
        raise InvalidAdapter(f"{checkpoint}: refused to load ({reason})", path=str(checkpoint)) from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise InvalidAdapter(f"{checkpoint}: does not hold a dict of named tensors (lora.lora_state_dict(model))",
                             path=str(checkpoint))
    return state


def _pairs(checkpoint: Path, state: dict) -> dict:
    def invalid(problem: str) -> InvalidAdapter:
        return InvalidAdapter(f"{checkpoint}: {problem}", path=str(checkpoint))

    if not state:
        raise invalid("holds no tensors")
    found: dict[str, dict] = {}
    for key, tensor in state.items():
        match = _KEY.match(key)
        if match is None:
            raise invalid(f"tensor {key!r} is not a loralib lora_A / lora_B factor (save lora.lora_state_dict(model) "
                          "with bias='none')")
        if not tensor.is_floating_point():
            raise invalid(f"tensor {key!r} has dtype {tensor.dtype}; LoRA factors must be floating point")
        found.setdefault(match["module"], {})[match["factor"]] = tensor
    modules = {}
    for module, factors in sorted(found.items()):
        if set(factors) != {"A", "B"}:
            have, lacking = "".join(factors), "B" if "A" in factors else "A"
            raise invalid(f"module {module!r} has lora_{have} but not lora_{lacking}")
        a, b = factors["A"], factors["B"]
        if a.ndim != 2 or b.ndim != 2:
            raise invalid(f"module {module!r} has lora_A {list(a.shape)} / lora_B {list(b.shape)}; only loralib.Linear "
                          "layers (2-D factors) convert (MergedLinear and Conv layers do not)")
        if a.shape[0] != b.shape[1]:
            raise invalid(f"module {module!r}: lora_A {list(a.shape)} and lora_B {list(b.shape)} disagree on the rank")
        modules[module] = (a, b)
    return modules
