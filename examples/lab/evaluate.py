"""Exact-match accuracy by greedy, batched generation, for seq2seq and causal models alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence, Union

import torch

Example = Union[tuple[str, str], dict]


def read_examples(path: Path) -> list[tuple[str, str]]:
    """The ``(input, output)`` pairs of a JSON Lines file of ``{"input": ..., "output": ...}`` rows."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows.append((row["input"], row["output"]))
    return rows


def write_examples(path: Path, pairs: Iterable[tuple[str, str]]) -> Path:
    """Write ``(input, output)`` pairs as JSON Lines."""
    Path(path).write_text("".join(json.dumps({"input": i, "output": o}) + "\n" for i, o in pairs))
    return Path(path)


def _pairs(examples: Iterable[Example]) -> list[tuple[str, str]]:
    return [(e["input"], e["output"]) if isinstance(e, dict) else (e[0], e[1]) for e in examples]


@torch.no_grad()
def generate(model, tokenizer, inputs: Sequence[str], *, max_new_tokens: int, batch_size: int = 128) -> list[str]:
    """Greedy continuations of ``inputs``, decoded without special tokens and stripped.

    Seq2seq models decode from the encoded input; causal models continue ``input </s>`` (the
    lab's causal format), left-padded so that every row's continuation starts at the same column.
    """
    causal = not model.config.is_encoder_decoder
    side = tokenizer.padding_side
    tokenizer.padding_side = "left" if causal else "right"
    was_training = model.training
    model.eval()
    texts = []
    try:
        for start in range(0, len(inputs), batch_size):
            batch = tokenizer(list(inputs[start:start + batch_size]), padding=True, return_tensors="pt")
            out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            if causal:
                out = out[:, batch["input_ids"].shape[1]:]
            texts += [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return texts


def exact_match(model, tokenizer, examples: Iterable[Example], *, max_new_tokens: int | None = None,
                batch_size: int = 128) -> float:
    """The share of ``examples`` (pairs or ``{"input", "output"}`` dicts) whose greedy output equals
    the expected output exactly (both stripped). ``max_new_tokens`` defaults to the longest
    expected output's token count, plus one for ``</s>``. Returns 0.0 for no examples."""
    pairs = _pairs(examples)
    if not pairs:
        return 0.0
    if max_new_tokens is None:
        max_new_tokens = max(len(tokenizer(o)["input_ids"]) for _, o in pairs) + 1
    got = generate(model, tokenizer, [i for i, _ in pairs], max_new_tokens=max_new_tokens, batch_size=batch_size)
    return sum(g == o.strip() for g, (_, o) in zip(got, pairs)) / len(pairs)
