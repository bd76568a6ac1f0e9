"""Training a PEFT LoRA on the real base model, in a named prompt format.

The rows are ``prompt + answer + EOS`` with the loss on ``answer + EOS`` only, tokenised exactly
as the composer's objective tokenises few-shot examples (``composer.prompts.prompt_token_ids``),
so a module is trained on the text compose later scores it on. Deterministic for a seed on one
machine and thread count: PEFT's initial ``lora_A`` comes from torch's global generator, seeded
just before, and the batch order from a private generator.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from loramgr.composer.prompts import prompt_token_ids

from ..lab.train import save_adapter_stably, warmup_then_decay
from .sources import BASE_ID
from .tasks import TaskExample

IGNORE = -100
MODULE_TARGETS = ("q_proj", "v_proj")
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MAX_TOKENS = 320


@dataclass(frozen=True)
class Recipe:
    """How one LoRA is trained: rank, targets, steps of ``batch_size`` rows, Adam at ``lr``
    with a linear warm-up and a linear decay to zero."""

    rank: int = 8
    targets: tuple[str, ...] = MODULE_TARGETS
    steps: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    warmup: int = 3

    def to_dict(self) -> dict:
        return {"rank": self.rank, "targets": list(self.targets), "steps": self.steps,
                "batch_size": self.batch_size, "lr": self.lr, "warmup": self.warmup}


def encode(tokenizer, examples: Sequence[TaskExample], prompt_format: str) -> list[tuple[list[int], list[int]]]:
    """``(token ids, labels)`` per example; rows longer than ``MAX_TOKENS`` are cut from the left."""
    eos = [tokenizer.eos_token_id]
    rows = []
    for example in examples:
        prompt = prompt_token_ids(tokenizer, example.input, prompt_format)
        answer = tokenizer(example.output, add_special_tokens=False)["input_ids"] + eos
        ids, labels = prompt + answer, [IGNORE] * len(prompt) + answer
        rows.append((ids[-MAX_TOKENS:], labels[-MAX_TOKENS:]))
    return rows


def _batch(rows, pad: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)  # padded to this batch's longest row only
    return {"input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
            "labels": torch.tensor([labels + [IGNORE] * (width - len(labels)) for _, labels in rows])}


def fast_matmuls(device: torch.device):
    """bfloat16 autocast where the device multiplies in bfloat16 natively (GPUs; CPUs with
    AVX-512 BF16 or AMX run it about twice as fast as float32), else no autocast: a CPU without
    it emulates bfloat16 about six times slower than float32 (measured on an AVX2 EPYC, one
    576x1536 matmul of 512 rows: 79 ms against 12.7 ms). So the lab's numbers on such a CPU
    come from float32 matmuls."""
    native = device.type != "cpu" or torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16) if native else contextlib.nullcontext()


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy on the answer tokens, with matmuls in bfloat16 where that is fast (see
    ``fast_matmuls``; the LoRA weights and Adam stay float32), and the vocabulary-wide LM head
    applied only where a label is scored (a fifth of the compute of a forward on this model)."""
    labels = batch.pop("labels")
    device = next(model.parameters()).device
    with fast_matmuls(device):
        hidden = model.get_base_model().model(**{k: v.to(device) for k, v in batch.items()}).last_hidden_state
        targets = labels[:, 1:].to(device)
        scored = targets != IGNORE
        logits = model.get_base_model().lm_head(hidden[:, :-1][scored])
    return torch.nn.functional.cross_entropy(logits.float(), targets[scored])


def train_lora(base_model, tokenizer, examples: Sequence[TaskExample], recipe: Recipe, *, prompt_format: str,
               seed: int, step_done: Callable[[int, float], None] | None = None):
    """A ``PeftModel`` (over a copy of ``base_model``) trained on ``examples``; and the mean
    training loss of its last 10 steps."""
    from peft import LoraConfig, get_peft_model

    rows = encode(tokenizer, examples, prompt_format)
    config = LoraConfig(r=recipe.rank, lora_alpha=2 * recipe.rank, target_modules=list(recipe.targets),
                        lora_dropout=0.0, task_type="CAUSAL_LM")
    torch.manual_seed(seed)
    model = get_peft_model(copy.deepcopy(base_model), config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)

    schedule = warmup_then_decay(optimizer, recipe.steps, recipe.warmup)
    generator = torch.Generator().manual_seed(seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.train()
    recent: list[float] = []
    for step in range(recipe.steps):
        idx = torch.randint(len(rows), (recipe.batch_size,), generator=generator).tolist()
        loss = answer_loss(model, _batch([rows[i] for i in idx], pad))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        recent = (recent + [loss.item()])[-10:]
        if step_done is not None:
            step_done(step + 1, loss.item())
    model.eval()
    return model, sum(recent) / max(1, len(recent))


def save_lora(model, folder: Path, *, task: str, prompt_format: str, recipe: Recipe) -> Path:
    """Save the adapter byte-stably (the Hub id as base, sorted targets, our own card)."""
    return save_adapter_stably(
        model, folder, base_id=BASE_ID, tag="loramgr-reallab",
        card=f"A LoRA module trained on the BIG-bench task `{task}` (prompt format `{prompt_format}`, "
             f"rank {recipe.rank}, {recipe.steps} steps of {recipe.batch_size}).")
