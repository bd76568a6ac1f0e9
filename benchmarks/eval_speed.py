"""How fast candidates are scored: LoraHub's state-dict approach against the injected composite.

One run, figures side by side (median evaluations/second over repeats; the methods take turns
within each repeat so a busy machine slows them alike):

  (a) reference — as LoraHub's code does it: per candidate, a Python loop over the cached state
      dicts builds ``sum_i w_i lora_A_i`` / ``sum_i w_i lora_B_i``, ``set_peft_model_state_dict``
      loads it, then a forward with labels;
  (b) ours, one candidate per forward (``Objective.score``), in ``lorahub`` and ``delta`` modes;
  (c) ours, K candidates in one batched forward (``Objective.score_many``);
  (floor) the plain base model's loss, no LoRA at all, on LoraHub's padded batch and on ours
      (causal LM examples packed into one row): no exact method scores a candidate faster than
      one forward of the base model, so (a)/(floor) bounds the speed-up of (b).

Run from the repository root: ``python benchmarks/eval_speed.py [--threads N] [--repeats R]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.factories' tokenizer

import numpy as np  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from loramgr.composer.examples import Example  # noqa: E402
from loramgr.composer.injection import inject_composite  # noqa: E402
from loramgr.composer.lora import load_lora  # noqa: E402
from loramgr.composer.objective import Objective, few_shot_losses, l1_penalty, tokenize_examples  # noqa: E402
from tests.factories import make_tokenizer  # noqa: E402

RANK, ALPHA, TARGETS = 8, 16, ["q_proj", "k_proj", "v_proj", "o_proj"]
EXAMPLES = [
    Example("reverse: the quick brown fox", " fox brown quick the"),
    Example("upper: lazy dog", " LAZY DOG"),
    Example("sort: 3 1 2 9 4", " 1 2 3 4 9"),
    Example("first: jumps over the lazy dog", " jumps"),
    Example("count: a b c d e f", " 6"),
]


def build_model(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         pad_token_id=0, eos_token_id=1, bos_token_id=3)
    return LlamaForCausalLM(config).eval()


def save_adapters(model: LlamaForCausalLM, folder: Path, count: int) -> list[Path]:
    """``count`` random LoRAs saved by PEFT, as trained ones would be."""
    folders = []
    for seed in range(count):
        peft_model = get_peft_model(build_model(model.config.vocab_size),
                                    LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        peft_model.save_pretrained(folder / f"lora{seed}")
        folders.append(folder / f"lora{seed}")
    return folders


def reference_inputs(tokenizer) -> dict[str, torch.Tensor]:
    """The same rows as ``tokenize_examples``, with unshifted labels for the model's own loss."""
    rows, labels = [], []
    for example in EXAMPLES:
        prompt = tokenizer(example.input)["input_ids"]
        answer = tokenizer(example.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(map(len, rows))
    return {"input_ids": torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
            "labels": torch.tensor([r + [-100] * (width - len(r)) for r in labels])}


class LoraHubReference:
    """LoraHub's scoring loop (``get_final_weights`` + ``set_peft_model_state_dict`` + forward)."""

    def __init__(self, model, folders: list[Path], inputs: dict[str, torch.Tensor], l1: float = 0.05):
        self.model = PeftModel.from_pretrained(model, folders[0]).eval()
        self.cache = [load_file(str(f / "adapter_model.safetensors")) for f in folders]
        self.inputs = inputs
        self.l1 = l1

    def score(self, weights) -> float:
        final_state_dict = {}
        keys = self.cache[0].keys()
        for i, lora_state_dict in enumerate(self.cache):
            for key in keys:
                if i == 0:
                    final_state_dict[key] = weights[i] * lora_state_dict[key]
                else:
                    final_state_dict[key] = final_state_dict[key] + weights[i] * lora_state_dict[key]
        set_peft_model_state_dict(self.model, final_state_dict)
        with torch.no_grad():
            loss = self.model(**self.inputs).loss.item()
        return loss + l1_penalty(weights, self.l1)


def evals_per_second(score, candidates: np.ndarray, per_call: int) -> tuple[float, float]:
    """(wall-clock, CPU-time) evaluations per second. On a shared machine the CPU time of this
    process is the steadier figure: it leaves out the time spent waiting for a core."""
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(candidates), per_call):
        score(candidates[start:start + per_call])
    return len(candidates) / (time.perf_counter() - wall), len(candidates) / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--adapters", type=int, default=8, help="candidate adapters (LoraHub's default is 20)")
    parser.add_argument("--evaluations", type=int, default=24, help="candidates scored per method and repeat")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    tokenizer = make_tokenizer()
    vocab_size = 4096  # the tiny BPE uses the first ids; the LM head still has a realistic width
    base = build_model(vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        folders = save_adapters(base, Path(tmp), args.adapters)
        adapters = [load_lora(f) for f in folders]
        ours_model = build_model(vocab_size)
        batch = tokenize_examples(ours_model, tokenizer, EXAMPLES)
        reference = LoraHubReference(build_model(vocab_size), folders, reference_inputs(tokenizer))
        composites = {mode: inject_composite(build_model(vocab_size), adapters, mode=mode)
                      for mode in ("lorahub", "delta")}
    objectives = {mode: Objective(c, batch) for mode, c in composites.items()}
    plain = build_model(vocab_size)

    rng = np.random.default_rng(0)
    # Same objective, two implementations: they must agree before their speeds mean anything.
    mismatch = max(abs(reference.score(w) - objectives["lorahub"].score(w).loss)
                   for w in rng.uniform(-1.5, 1.5, size=(3, args.adapters)))

    methods = {"(a) reference: state dict + set_peft_model_state_dict": (lambda W: reference.score(W[0]), 1)}
    for mode, objective in objectives.items():
        methods[f"(b) ours {mode}, one per forward"] = (lambda W, o=objective: o.score(W[0]), 1)
        for k in (4, 8):
            methods[f"(c) ours {mode}, K={k} per forward"] = (lambda W, o=objective: o.score_many(W), k)
    padded = tokenize_examples(plain, tokenizer, EXAMPLES, pack=False)
    methods["(floor) base model alone, padded batch"] = (lambda W: few_shot_losses(plain, padded), 1)
    methods["(floor) base model alone, packed batch"] = (lambda W: few_shot_losses(plain, batch), 1)
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        candidates = rng.uniform(-1.5, 1.5, size=(args.evaluations, args.adapters))
        for name, (score, per_call) in methods.items():
            score(candidates[:per_call])  # warm-up: buffers for this K, allocator, kernels
            rates[name].append(evals_per_second(score, candidates, per_call))

    tokens = batch.inputs["input_ids"].numel()
    print(f"model: Llama hidden 256, 4 layers, vocab {vocab_size}; {args.adapters} adapters r={RANK} on "
          f"{','.join(TARGETS)}; {len(EXAMPLES)} examples, {tokens} tokens ({batch.label_tokens} scored), "
          f"padded to {padded.inputs['input_ids'].numel()} by LoraHub's batching")
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} repeats x {args.evaluations} "
          f"evaluations; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"check: max |reference - ours lorahub| over 3 random w = {mismatch:.1e}")
    medians = {name: [statistics.median(v[i] for v in values) for i in (0, 1)] for name, values in rates.items()}
    reference_wall, reference_cpu = medians[next(iter(methods))]
    print(f"{'':<56}{'--- wall clock ---':>28}{'--- CPU time ---':>28}")
    print(f"{'method (medians)':<56}" + f"{'evals/s':>10}{'ms/eval':>9}{'vs (a)':>9}" * 2)
    for name, (wall, cpu) in medians.items():
        print(f"{name:<56}{wall:>10.1f}{1000 / wall:>9.2f}{wall / reference_wall:>8.2f}x"
              f"{cpu:>10.1f}{1000 / cpu:>9.2f}{cpu / reference_cpu:>8.2f}x")


if __name__ == "__main__":
    main()
