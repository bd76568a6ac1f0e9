"""Read and check ``adapter_config.json`` without trusting it.

The file comes from whoever pushes, and its values end up in the metadata store, in every JSON
answer that shows the version, and in the regular-expression engine (``rank_pattern``): so its
size, nesting, entry counts and numbers are bounded here, once, before anything relies on them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .bounds import is_finite_number
from .errors import InvalidAdapter
from .patterns import MATCH_BUDGET_S, PatternTable

CONFIG_FILE = "adapter_config.json"
# PEFT's own defaults, used when a (hand-written) config leaves a field out.
DEFAULT_RANK = 8
DEFAULT_ALPHA = 8

# A real adapter_config.json is a few KB, even with one rank_pattern entry per module.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_RANK = 65536
MAX_LIST_ENTRIES = 4096  # target_modules, modules_to_save
MAX_NAME_LENGTH = 256  # one entry of target_modules / modules_to_save


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_lora_config(folder: str | Path) -> dict:
    """Read ``adapter_config.json`` from ``folder``, check it is a LoRA config, fill PEFT's defaults.

    Raises ``InvalidAdapter`` when the file is missing, over ``MAX_CONFIG_BYTES``, not a JSON
    object (``NaN`` / ``Infinity`` are not JSON), nested too deeply, for another PEFT type, or
    holds a field of the wrong type or out of bounds.
    """
    config_path = Path(folder) / CONFIG_FILE
    try:
        size = config_path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise InvalidAdapter(f"{config_path}: is {size:,} bytes; an adapter config may be at most "
                                 f"{MAX_CONFIG_BYTES:,} bytes", path=str(config_path))
        config = json.loads(config_path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except FileNotFoundError:
        raise InvalidAdapter(f"{folder}: {CONFIG_FILE} is missing", path=str(folder)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidAdapter(f"{config_path}: cannot be read ({exc})", path=str(config_path)) from None
    except RecursionError:
        raise InvalidAdapter(f"{config_path}: nested too deeply to be an adapter config",
                             path=str(config_path)) from None
    except ValueError as exc:  # json.JSONDecodeError, and NaN / Infinity refused above
        raise InvalidAdapter(f"{config_path}: not valid JSON ({exc})", path=str(config_path)) from None
    if not isinstance(config, dict):
        raise InvalidAdapter(f"{config_path}: must be a JSON object, not a {type(config).__name__}",
                             path=str(config_path))
    return check_lora_config(config_path, config)


def check_lora_config(config_path: Path, config: dict) -> dict:
    """``config`` checked and completed with PEFT's defaults (a new dict); see ``read_lora_config``."""
    def invalid(problem: str) -> InvalidAdapter:
        return InvalidAdapter(f"{config_path}: {problem}", path=str(config_path))

    peft_type = config.get("peft_type")
    if peft_type is None:
        raise invalid("no peft_type; not a PEFT adapter config")
    if peft_type != "LORA":
        raise invalid(f"peft_type is {_short(peft_type)}; only LoRA adapters (peft_type 'LORA') are supported")
    config = dict(config)
    for name, default in (("r", DEFAULT_RANK), ("lora_alpha", DEFAULT_ALPHA)):
        config[name] = default if config.get(name) is None else config[name]
    if not _is_rank(config["r"]):
        raise invalid(f"r must be a positive integer (at most {MAX_RANK}), not {_short(config['r'])}")
    if not is_finite_number(config["lora_alpha"]):
        raise invalid(f"lora_alpha must be a number, and finite, not {_short(config['lora_alpha'])}")
    deadline = time.thread_time() + MATCH_BUDGET_S
    for name, is_value, values in (("rank_pattern", _is_rank, f"ranks (1 to {MAX_RANK})"),
                                   ("alpha_pattern", is_finite_number, "finite numbers")):
        pattern = config[name] = config.get(name) or {}
        if not isinstance(pattern, dict) or not all(isinstance(k, str) and is_value(v) for k, v in pattern.items()):
            raise invalid(f"{name} must map module names to {values}")
        PatternTable(list(pattern), name, invalid, deadline=deadline)  # refuses keys that are unsafe to match
    for name in ("use_rslora", "use_dora", "lora_bias"):
        config[name] = config.get(name) or False
        if not isinstance(config[name], bool):
            raise invalid(f"{name} must be true or false, not {_short(config[name])}")
    modules_to_save = config["modules_to_save"] = config.get("modules_to_save") or []
    if not _is_name_list(modules_to_save):
        raise invalid(f"modules_to_save must be a list of at most {MAX_LIST_ENTRIES} module names "
                      f"(each 1-{MAX_NAME_LENGTH} characters)")
    targets = config.get("target_modules")
    # PEFT takes a list of module names, or one string (a regular expression or a name).
    if targets is not None and not (isinstance(targets, str) and len(targets) <= MAX_NAME_LENGTH * 4) \
            and not _is_name_list(targets):
        raise invalid(f"target_modules must be a list of module names or one string, not {_short(targets)}; "
                      "PEFT cannot load this config")
    for name in ("base_model_name_or_path", "task_type"):
        if config.get(name) is not None and not isinstance(config[name], str):
            raise invalid(f"{name} must be a string, not {_short(config[name])}")
    return config


def _is_rank(value) -> bool:
    return is_int(value) and 1 <= value <= MAX_RANK


def _is_name_list(value) -> bool:
    return isinstance(value, list) and len(value) <= MAX_LIST_ENTRIES and all(
        isinstance(v, str) and 0 < len(v) <= MAX_NAME_LENGTH for v in value)


def _short(value) -> str:
    """``repr(value)``, cut to one short line (a hostile config can hold megabytes in one field)."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"a {type(value).__name__}"
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."
