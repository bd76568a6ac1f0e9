"""Hostile adapter folders for the hostile-input tests: a small valid PEFT LoRA folder written
with numpy (no model needed), and ways to break it: raw config text, raw safetensors headers."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

BASE = "tiny/base"
MODULES = ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj")


def config(**fields) -> dict:
    data = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"],
            "base_model_name_or_path": BASE, "task_type": "CAUSAL_LM"}
    data.update(fields)
    return data


def lora_tensors(modules=MODULES, *, rank: int = 2, width: int = 4, ranks: dict | None = None) -> dict:
    tensors = {}
    for module in modules:
        r = (ranks or {}).get(module, rank)
        tensors[f"base_model.model.{module}.lora_A.weight"] = np.full((r, width), 0.5, dtype=np.float32)
        tensors[f"base_model.model.{module}.lora_B.weight"] = np.full((width, r), 0.25, dtype=np.float32)
    return tensors


def write_adapter(folder: Path, *, config_fields: dict | None = None, config_text: str | None = None,
                  tensors: dict | None = None, readme: str | None = None) -> Path:
    """A PEFT LoRA folder: ``config_text`` (raw) or ``config(**config_fields)``, ``tensors``
    (name -> numpy array; default: two rank-2 modules)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = config_text if config_text is not None else json.dumps(config(**(config_fields or {})))
    (folder / "adapter_config.json").write_text(text)
    save_file(tensors if tensors is not None else lora_tensors(), str(folder / "adapter_model.safetensors"))
    if readme is not None:
        (folder / "README.md").write_text(readme)
    return folder


def write_raw_header(path: Path, header_text: str | bytes, data: bytes = b"") -> Path:
    """A safetensors file with exactly this header text (no checks)."""
    raw = header_text.encode() if isinstance(header_text, str) else header_text
    Path(path).write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return Path(path)


def one_line(message: str) -> bool:
    return "\n" not in message and "Traceback" not in message and 0 < len(message) < 2000
