"""The lab's training jobs: tokenizer, base-model pre-training, one module, one oracle.

Each job reads only the tokenizer and base model already on disk and its own seeded data, and
writes one folder, so jobs can run in any order and in any process with the same result.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .evaluate import write_examples
from .models import TARGETS, build_base
from .tasks import DIGITS, KEYWORDS, LETTERS, TASKS, UPPER, copy_examples, derive_seed, sample_examples, stream_rng
from .tokenizer import save_tokenizer, train_tokenizer
from .train import Schedule, encode, fit, save_lora, train_lora

PRETRAIN_LR = 3e-3
_BASES: dict[str, tuple] = {}  # base folder -> (tokenizer, model), loaded once per process


def write_lab_tokenizer(folder: Path) -> Path:
    """Train the lab tokenizer (every character and keyword of the lab) and save it to ``folder``."""
    corpus = [f"{keyword} {LETTERS}{UPPER}{DIGITS}" for keyword in KEYWORDS]
    return save_tokenizer(train_tokenizer(corpus), folder)


def _tokenizer(folder: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(folder)


def load_base(folder: Path):
    """(tokenizer, model) of a lab base folder, cached per process; the model is in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    key = str(Path(folder).resolve())
    if key not in _BASES:
        seq2seq = AutoConfig.from_pretrained(key).is_encoder_decoder
        model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(key)
        _BASES[key] = (_tokenizer(Path(key)), model.eval())
    return _BASES[key]


def pretrain_job(job, spec) -> None:
    """Pre-train ``job.family``'s base model on copy examples over every keyword and format."""
    tokenizer = _tokenizer(Path(job.root) / "tokenizer")
    rows = copy_examples(stream_rng(job.seed, "pretrain", job.family), min(20000, job.steps * 64), KEYWORDS)
    model = build_base(job.family, len(tokenizer), derive_seed(job.seed, job.family, "init"))
    fit(model, encode(job.family, tokenizer, rows), Schedule(job.steps, PRETRAIN_LR, batch_size=64, warmup=50),
        derive_seed(job.seed, job.family, "pretrain"))
    model.save_pretrained(job.out)
    save_tokenizer(tokenizer, job.out)


def module_job(job, spec, config) -> None:
    """Train and save the LoRA module of task ``job.name``, and write its example set.

    A share of the batches replays pre-training copy examples under other keywords, with the
    LoRA branches' outputs on them penalised (``spec.locality``): like an adapter of a large model,
    the module changes its own task and leaves other inputs alone, which is what lets a sum of
    modules serve several tasks at once (README.md, "Why modules replay").
    """
    tokenizer, base = load_base(Path(job.root) / job.family / "base")
    task = TASKS[job.name]
    rows = sample_examples(task, stream_rng(job.seed, "module", job.name), spec.train_examples, "train")
    examples = Path(job.root) / job.family / "examples"
    examples.mkdir(parents=True, exist_ok=True)
    write_examples(examples / f"{job.name}.jsonl", rows[:spec.example_set])
    others = [k for k in KEYWORDS if k != task.prefix]
    replay = copy_examples(stream_rng(job.seed, "replay", job.name), round(len(rows) * spec.replay_share), others)
    data = encode(job.family, tokenizer, rows + replay)
    data["replay"] = torch.arange(len(rows) + len(replay)) >= len(rows)
    model = train_lora(base, job.family, data, rank=config.rank, targets=TARGETS[job.family][config.targets],
                       schedule=Schedule(config.steps, spec.lora_lr), seed=derive_seed(job.seed, job.family, job.name),
                       locality=spec.locality)
    save_lora(model, job.family, Path(job.out), f"LoRA module of the lab task `{task.name}` "
              f"({task.description}), inputs `{task.prefix} <payload>`.")


def oracle_job(job, spec, target, config) -> None:
    """Train and save a LoRA on ``target``'s full training data (no replay: the best fit)."""
    tokenizer, base = load_base(Path(job.root) / job.family / "base")
    rows = target.examples(stream_rng(job.seed, "oracle", target.name), spec.train_examples, "train")
    model = train_lora(base, job.family, encode(job.family, tokenizer, rows), rank=config.rank,
                       targets=TARGETS[job.family][config.targets], schedule=Schedule(config.steps, spec.lora_lr),
                       seed=derive_seed(job.seed, job.family, "oracle", target.name))
    save_lora(model, job.family, Path(job.out), f"Oracle LoRA of the lab target `{target.name}`: "
              f"{target.description}.")
