"""The search objective: few-shot cross-entropy of the model plus LoraHub's L1 term.

Examples are tokenised once into tensors on the model's device (``tokenize_examples``); every
evaluation after that is one forward pass. The loss is the mean token cross-entropy over
all label tokens of all examples (token-weighted, not a mean of per-example means).

- seq2seq (``model.config.is_encoder_decoder``): the encoder reads the input, the labels are
  the output's tokens as the tokenizer makes them (T5's tokenizer appends ``</s>``).
- causal LM: each example is ``input + output + eos``; only the output and eos tokens count.
  Examples are packed into one row when the model allows it (no compute spent on padding).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import CompositionError, ExamplesError
from .examples import Example
from .injection import InjectedLora
from .prompts import DEFAULT_PROMPT_FORMAT, prompt_token_ids

IGNORE = -100
DEFAULT_L1 = 0.05  # LoraHub's default regularisation strength


@dataclass(frozen=True, eq=False)
class FewShotBatch:
    """Tokenised examples on the model's device (padded rows, or one packed row), ready for
    repeated forwards.

    ``labels`` are aligned with the logits the model returns for ``model_inputs()``: for causal
    LMs they are already shifted by one and cut to the kept positions (``logits_to_keep``).
    ``label_positions`` indexes the scored entries of ``labels.flatten()``; ``label_ids`` holds
    their token ids.
    """

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    is_encoder_decoder: bool
    logits_to_keep: torch.Tensor | None = None
    label_positions: torch.Tensor = field(init=False)
    label_ids: torch.Tensor = field(init=False)

    def __post_init__(self):
        positions = (self.labels.flatten() != IGNORE).nonzero().flatten()
        object.__setattr__(self, "label_positions", positions)
        object.__setattr__(self, "label_ids", self.labels.flatten()[positions])

    @property
    def size(self) -> int:
        """Rows in one replica of the batch (1 when the examples are packed)."""
        return self.labels.shape[0]

    @property
    def label_tokens(self) -> int:
        return self.label_positions.numel()

    def model_inputs(self, replicas: int = 1) -> dict:
        """Keyword arguments for the model's forward, the batch repeated ``replicas`` times."""
        # No cache: it is wasted work here, and with one transformers skips packed-sequence masks.
        inputs = {key: _repeat(value, replicas) for key, value in self.inputs.items()} | {"use_cache": False}
        if self.logits_to_keep is not None:
            inputs["logits_to_keep"] = self.logits_to_keep
        return inputs


def split_batch(batch: FewShotBatch, size: int) -> list[FewShotBatch]:
    """The batch's examples in consecutive groups of ``size`` (the last may hold fewer), each a
    batch of its own whose loss is the mean over its own label tokens. Packed examples are cut
    at the positions where their position ids restart; padded ones by row.

    Raises ``CompositionError`` for a size below 1.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise CompositionError(f"the examples per group must be a whole number >= 1, got {size!r}")
    if batch.is_encoder_decoder or batch.size > 1:
        return [_rows(batch, slice(start, start + size)) for start in range(0, batch.size, size)]
    starts = (batch.inputs["position_ids"][0] == 0).nonzero().flatten().tolist() \
        if "position_ids" in batch.inputs else [0]
    ends = starts[1:] + [batch.inputs["input_ids"].shape[1]]
    return [_segment(batch, starts[i], ends[min(i + size, len(starts)) - 1]) for i in range(0, len(starts), size)]


def _rows(batch: FewShotBatch, rows: slice) -> FewShotBatch:
    inputs = {key: value[rows] for key, value in batch.inputs.items()}
    return FewShotBatch(inputs, batch.labels[rows], batch.is_encoder_decoder, batch.logits_to_keep)


def _segment(batch: FewShotBatch, start: int, end: int) -> FewShotBatch:
    """Positions ``start:end`` of a packed row (whole examples, so nothing attends across the cut)."""
    inputs = {key: value[:, start:end] for key, value in batch.inputs.items()}
    if batch.logits_to_keep is None:
        return FewShotBatch(inputs, batch.labels[:, start:end], False)
    inside = (batch.logits_to_keep >= start) & (batch.logits_to_keep < end)
    return FewShotBatch(inputs, batch.labels[:, inside], False, batch.logits_to_keep[inside] - start)


def _repeat(t: torch.Tensor, times: int) -> torch.Tensor:
    return t if times == 1 else t.repeat(times, *([1] * (t.ndim - 1)))


def tokenize_examples(model: nn.Module, tokenizer, examples: Sequence[Example], *, pack: bool = True,
                      prompt_format: str = DEFAULT_PROMPT_FORMAT) -> FewShotBatch:
    """Tokenise ``examples`` once for ``model`` (seq2seq or causal LM, from its config).

    ``prompt_format`` (see ``composer.prompts``) says how a causal LM is shown each input:
    ``plain`` text or the tokenizer's ``chat`` template; seq2seq models take it plain.

    For a causal LM the examples are packed into one row without padding (position ids restart
    at each example) when the model supports that and, checked once here, the packed batch gives
    the padded batch's loss; ``pack=False`` always pads. Padding costs compute on every forward.

    Raises ``ExamplesError`` when there are no examples or no output token to score.
    """
    if not examples:
        raise ExamplesError("no examples to score")
    device = next(iter(model.parameters())).device
    if getattr(model.config, "is_encoder_decoder", False):
        return _to_device(_tokenize_seq2seq(model, tokenizer, examples), device)
    return _tokenize_causal(model, tokenizer, examples, device, pack, prompt_format)


def _to_device(batch: FewShotBatch, device) -> FewShotBatch:
    inputs = {key: value.to(device) for key, value in batch.inputs.items()}
    keep = None if batch.logits_to_keep is None else batch.logits_to_keep.to(device)
    return FewShotBatch(inputs, batch.labels.to(device), batch.is_encoder_decoder, keep)


def _tokenize_seq2seq(model: nn.Module, tokenizer, examples: Sequence[Example]) -> FewShotBatch:
    source = tokenizer([e.input for e in examples], padding=True, return_tensors="pt")
    target = tokenizer(text_target=[e.output for e in examples], padding=True, return_tensors="pt")
    # Mask by the attention mask, not by pad id: T5's pad id is also its decoder start token.
    labels = target["input_ids"].masked_fill(target["attention_mask"] == 0, IGNORE)
    _require_targets(labels)
    inputs = {"input_ids": source["input_ids"], "attention_mask": source["attention_mask"]}
    if hasattr(model, "prepare_decoder_input_ids_from_labels"):
        inputs["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=labels)
    else:  # the model shifts the labels itself (and computes a loss we do not use)
        inputs["labels"] = labels
    return FewShotBatch(inputs, labels, True)


def _tokenize_causal(model: nn.Module, tokenizer, examples: Sequence[Example], device, pack: bool,
                     prompt_format: str = DEFAULT_PROMPT_FORMAT) -> FewShotBatch:
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    rows, targets = [], []
    for example in examples:
        # The input keeps the tokenizer's own special tokens (Llama's BOS); the output is plain text.
        prompt = prompt_token_ids(tokenizer, example.input, prompt_format)
        answer = tokenizer(example.output, add_special_tokens=False)["input_ids"] + eos
        rows.append(prompt + answer)
        targets.append([IGNORE] * len(prompt) + answer)
    parameters = inspect.signature(model.forward).parameters
    keep_logits = "logits_to_keep" in parameters
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or [0])[0]
    padded = _padded_causal(rows, targets, pad, keep_logits, device)
    if pack and len(rows) > 1 and "position_ids" in parameters:
        packed = _packed_causal(rows, targets, keep_logits, device)
        if _same_loss(model, padded, packed):
            return packed
    return padded


def _padded_causal(rows, targets, pad: int, keep_logits: bool, device) -> FewShotBatch:
    width = max(len(row) for row in rows)
    # Right padding: positions of the real tokens stay 0..n-1 without passing position_ids.
    inputs = {"input_ids": torch.tensor([row + [pad] * (width - len(row)) for row in rows], device=device),
              "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows],
                                             device=device)}
    # The logit at position t predicts token t + 1 of the same row.
    next_tokens = [target[1:] + [IGNORE] * (width - len(target) + 1) for target in targets]
    return _causal_batch(inputs, torch.tensor(next_tokens, device=device), keep_logits)


def _packed_causal(rows, targets, keep_logits: bool, device) -> FewShotBatch:
    # transformers reads restarting position ids without an attention mask as packed sequences
    # and keeps each example's attention to itself.
    inputs = {"input_ids": torch.tensor([[t for row in rows for t in row]], device=device),
              "position_ids": torch.tensor([[p for row in rows for p in range(len(row))]], device=device)}
    # An example's last position predicts nothing: the next token belongs to the next example.
    next_tokens = [[t for target in targets for t in target[1:] + [IGNORE]]]
    return _causal_batch(inputs, torch.tensor(next_tokens, device=device), keep_logits)


def _causal_batch(inputs: dict[str, torch.Tensor], next_tokens: torch.Tensor, keep_logits: bool) -> FewShotBatch:
    _require_targets(next_tokens)
    keep = None
    if keep_logits:
        # Only positions that predict a scored token need the (vocabulary-wide) LM head.
        keep = (next_tokens != IGNORE).any(dim=0).nonzero().flatten()
        next_tokens = next_tokens[:, keep]
    return FewShotBatch(inputs, next_tokens, False, keep)


def _same_loss(model: nn.Module, padded: FewShotBatch, packed: FewShotBatch) -> bool:
    # A model that ignores packing lets examples attend to each other: its loss changes.
    try:
        expected, got = few_shot_loss(model, padded), few_shot_loss(model, packed)
    except (TypeError, ValueError, RuntimeError, IndexError):
        return False
    return abs(expected - got) <= 1e-4 * max(1.0, abs(expected))


def _require_targets(labels: torch.Tensor) -> None:
    if not (labels != IGNORE).any():
        raise ExamplesError("the examples have no output tokens to score")


@contextmanager
def _eval_mode(model: nn.Module):
    # Dropout would make the objective noisy; restore the caller's mode afterwards.
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def few_shot_losses(model: nn.Module, batch: FewShotBatch, replicas: int = 1) -> torch.Tensor:
    """Mean token cross-entropy of each of ``replicas`` copies of the batch, as a float32 CPU
    tensor of length ``replicas``. With an injected composite holding ``K`` candidates, pass
    ``replicas=K`` to score them all in one forward.
    """
    with torch.inference_mode(), _eval_mode(model):
        return _replica_losses(model, batch, replicas).cpu()


def few_shot_losses_with_grad(model: nn.Module, batch: FewShotBatch, replicas: int = 1) -> torch.Tensor:
    """``few_shot_losses`` with autograd on: a float32 tensor of length ``replicas`` on the
    model's device, which can be back-propagated to weights set with
    ``InjectedLora.set_weight_tensors``. Dropout is off (eval mode) as in ``few_shot_losses``.
    Freeze the model's own parameters first, or their gradients are computed too.
    """
    with torch.enable_grad(), _eval_mode(model):
        return _replica_losses(model, batch, replicas)


def _replica_losses(model: nn.Module, batch: FewShotBatch, replicas: int) -> torch.Tensor:
    logits = model(**batch.model_inputs(replicas)).logits
    # Only scored rows go through the (vocabulary-wide) log-softmax.
    scored = logits.reshape(replicas, -1, logits.shape[-1])[:, batch.label_positions]
    ce = F.cross_entropy(scored.flatten(0, 1).float(), batch.label_ids.repeat(replicas), reduction="none")
    return ce.view(replicas, -1).mean(dim=1)


def few_shot_loss(model: nn.Module, batch: FewShotBatch) -> float:
    """Mean token cross-entropy of ``model`` on the batch (over all output tokens)."""
    return float(few_shot_losses(model, batch)[0])


def l1_penalty(weights, l1: float = DEFAULT_L1) -> np.ndarray | float:
    """LoraHub's regulariser ``l1 * mean(|w|)``, over the last axis of ``weights``."""
    penalty = l1 * np.abs(np.asarray(weights, dtype=np.float64)).mean(axis=-1)
    return float(penalty) if np.ndim(penalty) == 0 else penalty


@dataclass(frozen=True)
class Score:
    """The objective at one weight vector: ``loss = task_loss + l1 * mean(|w|)``."""

    loss: float
    task_loss: float


class Objective:
    """Scores weight vectors of an injected composite on a few-shot batch."""

    def __init__(self, composite: InjectedLora, batch: FewShotBatch, *, l1: float = DEFAULT_L1):
        if l1 < 0:
            raise CompositionError(f"the L1 strength must be >= 0, got {l1}")
        self.composite = composite
        self.batch = batch
        self.l1 = l1

    def score(self, weights) -> Score:
        """The objective at one weight vector (length ``n``)."""
        return self.score_many(np.asarray(weights, dtype=np.float64).reshape(1, -1))[0]

    def score_many(self, candidates) -> list[Score]:
        """The objective at each row of ``candidates`` (``K x n``), in one batched forward."""
        candidates = np.asarray(candidates, dtype=np.float64)
        self.composite.set_candidate_weights(candidates)
        task = few_shot_losses(self.composite.model, self.batch, replicas=len(candidates)).double().numpy()
        penalty = l1_penalty(candidates, self.l1)
        return [Score(float(t + p), float(t)) for t, p in zip(task, penalty)]
