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
                    shots: Sequence[TaskExample] = ()) -> float | None:
    """Share of multiple-choice ``examples`` where the expected option has the highest summed
    log-likelihood (None for a generative task)."""
    if not all(e.options for e in examples):
        return None
    prompts = _prompts(tokenizer, examples, prompt_format, shots)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    right = 0
    for prompt, example in zip(prompts, examples):
        options = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in example.options]
        scores = option_log_likelihoods(model, prompt, options, pad_token_id=pad)
        right += example.options[max(range(len(scores)), key=scores.__getitem__)] == example.output
    return right / len(examples)


@torch.inference_mode()
def option_log_likelihoods(model, prompt: list[int], options: Sequence[list[int]], *,
                           pad_token_id: int) -> list[float]:
    """The summed log-likelihood of each option's tokens after ``prompt``.

    The prompt, which is most of the tokens (the 5 shots of in-context learning above all), runs
    once; its key/value cache is then shared by all options, scored in one batch.
    """
    device = next(model.parameters()).device
    head = model(input_ids=torch.tensor([prompt[:-1]], device=device), use_cache=True)
    # transformers 5 names the cache ``cache`` (``past_key_values`` before), in and out alike.
    cache_argument = "cache" if "cache" in head else "past_key_values"
    cache = head[cache_argument]
    cache.batch_repeat_interleave(len(options))
    # The prompt's last token goes with each option: its logits score the option's first token.
    width = 1 + max(len(o) for o in options)
    ids = torch.tensor([[prompt[-1]] + o + [pad_token_id] * (width - 1 - len(o)) for o in options], device=device)
    mask = torch.tensor([[1] * len(prompt) + [1] * len(o) + [0] * (width - 1 - len(o)) for o in options],
                        device=device)
    logits = model(input_ids=ids, attention_mask=mask, **{cache_argument: cache}).logits
    logprobs = torch.log_softmax(logits.float(), -1)
    return [float(logprobs[row, torch.arange(len(o), device=device), torch.tensor(o, device=device)].sum())
            for row, o in enumerate(options)]

