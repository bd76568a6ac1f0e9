"""Training for the lab: encode examples, pre-train a base model, train and save a LoRA module.

Everything is deterministic for a seed: the model's initial weights, PEFT's LoRA initialisation
(drawn from torch's global generator, seeded just before) and the batch order (a private
`torch.Generator`). On one machine and one thread count, two runs give the same bytes.

Example formats, shared with `evaluate.py` and expected from the composer's objective:
- seq2seq (t5): encoder ``input </s>``, labels ``output </s>``;
- causal (llama): ``input </s> output </s>`` with the loss on ``output </s>`` only.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .models import BASE_IDS, task_type
from .tokenizer import PAD_ID

IGNORE = -100


@dataclass(frozen=True)
class Schedule:
    """How long and how fast to train: Adam, linear warm-up then linear decay to zero."""

    steps: int
    lr: float
    batch_size: int = 32
    warmup: int = 20


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def encode_seq2seq(tokenizer, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded encoder inputs and labels (``-100`` on padding) for a seq2seq model."""
    inputs = [tokenizer(i)["input_ids"] for i, _ in pairs]
    outputs = [tokenizer(o)["input_ids"] for _, o in pairs]
    ids = _pad(inputs, PAD_ID)
    return {"input_ids": ids, "attention_mask": (ids != PAD_ID).long(), "labels": _pad(outputs, IGNORE)}


def encode_causal(tokenizer, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded ``input </s> output </s>`` rows, labels only on the output part."""
    rows, labels = [], []
    for i, o in pairs:
        prompt, target = tokenizer(i)["input_ids"], tokenizer(o)["input_ids"]
        rows.append(prompt + target)
        labels.append([IGNORE] * len(prompt) + target)
    ids = _pad(rows, PAD_ID)
    mask = _pad([[1] * len(r) for r in rows], 0)
    return {"input_ids": ids, "attention_mask": mask, "labels": _pad(labels, IGNORE)}


def encode(family: str, tokenizer, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """`encode_seq2seq` or `encode_causal`, by family."""
    return (encode_seq2seq if family == "t5" else encode_causal)(tokenizer, pairs)


def _lora_outputs(model) -> tuple[list[torch.Tensor], list]:
    """Forward hooks that collect every LoRA branch's output (``B @ A @ x``) on each forward."""
    outputs: list[torch.Tensor] = []
    handles = [module.register_forward_hook(lambda _m, _i, out: outputs.append(out))
               for name, module in model.named_modules() if name.endswith("lora_B.default")]
    return outputs, handles


def warmup_then_decay(optimizer, steps: int, warmup: int):
    """A linear warm-up over ``warmup`` steps, then a linear decay to zero at ``steps``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(model, data: dict[str, torch.Tensor], schedule: Schedule, seed: int, locality: float = 0.0) -> float:
    """Train ``model``'s trainable parameters on ``data``; returns the mean loss of the last 20 steps.

    With ``locality`` > 0 and a boolean ``data["replay"]`` row mask, the squared output of every
    LoRA branch on the replay rows is penalised: the module learns to leave the hidden states of
    other tasks' inputs alone, not only their outputs.
    """
    data = dict(data)
    replay = data.pop("replay", None)
    outputs, handles = _lora_outputs(model) if locality and replay is not None else ([], [])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=schedule.lr)

    lr_schedule = warmup_then_decay(optimizer, schedule.steps, schedule.warmup)
    generator = torch.Generator().manual_seed(seed)
    n = data["input_ids"].shape[0]
    model.train()
    recent: list[float] = []
    for _ in range(schedule.steps):
        idx = torch.randint(n, (schedule.batch_size,), generator=generator)
        outputs.clear()
        loss = model(**{k: v[idx] for k, v in data.items()}).loss
        if outputs:
            rows = replay[idx]
            loss = loss + locality * sum(out[rows].pow(2).mean() for out in outputs if rows.any())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lr_schedule.step()
        recent = (recent + [loss.item()])[-20:]
    for handle in handles:
        handle.remove()
    model.eval()
    return sum(recent) / len(recent)


@torch.no_grad()
def mean_loss(model, data: dict[str, torch.Tensor], batch_size: int = 256) -> float:
    """Mean per-token cross-entropy of ``model`` on ``data`` (labelled tokens only)."""
    total, count = 0.0, 0
    for start in range(0, data["input_ids"].shape[0], batch_size):
        batch = {k: v[start:start + batch_size] for k, v in data.items()}
        tokens = int((batch["labels"] != IGNORE).sum())
        # Causal models shift labels by one, so one token per row is not scored; close enough
        # for a comparison between models on the same data.
        total += model(**batch).loss.item() * tokens
        count += tokens
    return total / max(count, 1)


def train_lora(base_model, family: str, data: dict[str, torch.Tensor], *, rank: int, targets: Sequence[str],
               schedule: Schedule, seed: int, locality: float = 0.0):
    """A PEFT LoRA (``alpha = 2 * rank``) trained on ``data`` over a copy of ``base_model``."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets), lora_dropout=0.0,
                        task_type=task_type(family))
    torch.manual_seed(seed)  # PEFT draws lora_A's initial values from the global generator
    model = get_peft_model(copy.deepcopy(base_model), config)
    fit(model, data, schedule, seed, locality)
    return model


def save_lora(model, family: str, folder: Path, card: str = "") -> Path:
    """Save a PEFT model's adapter, byte-stable: the family's base id (not a local folder) as
    ``base_model_name_or_path``, sorted ``target_modules`` (PEFT writes a set, whose order varies
    between processes) and a short model card of our own (PEFT's names the local base folder)."""
    return save_adapter_stably(model, folder, base_id=BASE_IDS[family], tag="loramgr-lab",
                               card=card or "A loramgr lab LoRA module.")


def save_adapter_stably(model, folder: Path, *, base_id: str, tag: str, card: str) -> Path:
    """``save_lora`` for any lab: ``base_id`` as the base, sorted targets, a card tagged ``tag``."""
    config = model.peft_config["default"]
    config.base_model_name_or_path = base_id
    folder = Path(folder)
    model.save_pretrained(folder)
    config_path = folder / "adapter_config.json"
    data = json.loads(config_path.read_text())
    data["target_modules"] = sorted(data["target_modules"])
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").write_text(f"---\nbase_model: {base_id}\nlibrary_name: peft\ntags:\n- lora\n"
                                      f"- {tag}\n---\n\n{card}\n")
    return folder
