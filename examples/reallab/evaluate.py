"""Evaluation as LoraHub reports it: exact match of the greedy answer on unseen examples, and,
for multiple-choice tasks, the accuracy of picking the option the model finds most likely.

Both take the prompt format and optional in-context ``shots`` (shown before each question).
"""

from __future__ import annotations

from typing import Sequence

import torch

from loramgr.composer.prompts import prompt_token_ids

from .tasks import TaskExample


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().split()).rstrip(".")


def _prompts(tokenizer, examples, prompt_format, shots) -> list[list[int]]:
    pairs = [(s.input, s.output) for s in shots]
    return [prompt_token_ids(tokenizer, e.input, prompt_format, shots=pairs) for e in examples]


@torch.inference_mode()
def generate_answers(model, tokenizer, examples: Sequence[TaskExample], *, prompt_format: str,
                     shots: Sequence[TaskExample] = (), batch_size: int = 16) -> list[str]:
    """Greedy answers (decoded, special tokens dropped, stripped), left-padded batches."""
    prompts = _prompts(tokenizer, examples, prompt_format, shots)
    longest = max(len(tokenizer(e.output, add_special_tokens=False)["input_ids"]) for e in examples)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    answers = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1,
                             max_new_tokens=longest + 2, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        answers += [t.strip() for t in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]
    return answers


def exact_match(model, tokenizer, examples: Sequence[TaskExample], *, prompt_format: str,
                shots: Sequence[TaskExample] = ()) -> float:
    """Share of ``examples`` whose greedy answer equals the expected one (case, spacing and a
    final period aside)."""
    answers = generate_answers(model, tokenizer, examples, prompt_format=prompt_format, shots=shots)
    return sum(_normalise(a) == _normalise(e.output) for a, e in zip(answers, examples)) / len(examples)


@torch.inference_mode()
def option_accuracy(model, tokenizer, examples: Sequence[TaskExample], *, prompt_format: str,
                    shots: Sequence[TaskExample] = (), batch_size: int = 16) -> float | None:
    """Share of multiple-choice ``examples`` where the expected option has the highest summed
    log-likelihood (None for a generative task)."""
    if not all(e.options for e in examples):
        return None
    prompts = _prompts(tokenizer, examples, prompt_format, shots)
    rows, owners = [], []
    for index, (prompt, example) in enumerate(zip(prompts, examples)):
        for option in example.options:
            rows.append((prompt, tokenizer(option, add_special_tokens=False)["input_ids"]))
            owners.append((index, option))
    scores = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(p) + len(o) for p, o in chunk)
        ids = torch.tensor([p + o + [pad] * (width - len(p) - len(o)) for p, o in chunk], device=device)
        mask = torch.tensor([[1] * (len(p) + len(o)) + [0] * (width - len(p) - len(o)) for p, o in chunk],
                            device=device)
        logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        for row, (p, o) in enumerate(chunk):
            positions = torch.arange(len(p) - 1, len(p) + len(o) - 1, device=device)
            targets = torch.tensor(o, device=device)
            scores.append(float(logprobs[row, positions, targets].sum()))
    best: dict[int, tuple[float, str]] = {}
    for (index, option), score in zip(owners, scores):
        if index not in best or score > best[index][0]:
            best[index] = (score, option)
    return sum(best[i][1] == e.output for i, e in enumerate(examples)) / len(examples)
