"""Does an adapter fit a base model's architecture? Checked from the model's config alone.

The model is built from its config on PyTorch's ``meta`` device: every module exists with its
shapes, no weight is allocated or read, so a 70B model's check costs what a config costs. Then
each adapter module path (as PEFT stores it under ``base_model.model.``) must name a layer LoRA can
adapt (``nn.Linear``, GPT-2's ``Conv1D``, ``nn.Embedding``) whose sizes match the factors, and,
with a server limit, each module's rank must be within it.

Why before deploy: vLLM checks an adapter's module *names* (the last path part, e.g. ``q_proj``)
against the layer names the served model supports, but it fills its LoRA slots by looking the
served model's own module paths up in the adapter; an adapter path that matches no served module
is simply never used. An adapter made for another model with the same layer names (another
depth, another prefix) therefore loads without an error, and the server answers with the base
model's output wherever the paths do not match.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .adapter import Manifest
from .errors import InvalidArgument

_AUTO_CLASSES = {  # PEFT task type -> the transformers auto class PEFT wraps for it
    "CAUSAL_LM": "AutoModelForCausalLM", "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "SEQ_CLS": "AutoModelForSequenceClassification", "TOKEN_CLS": "AutoModelForTokenClassification",
    "QUESTION_ANS": "AutoModelForQuestionAnswering", "FEATURE_EXTRACTION": "AutoModel",
}
_FALLBACK_CLASSES = ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoModel")


@dataclass(frozen=True)
class ArchitectureReport:
    """What ``check_architecture`` found; ``problems`` (one line each) make it not ``ok``.

    ``missing``: adapter module paths the model does not have; ``mismatched``: modules whose
    factor shapes do not fit the layer (one line each); ``unsupported``: modules that exist but
    are not a layer LoRA adapts; ``over_rank``: modules whose rank is above ``max_lora_rank``.
    """

    model: str
    architecture: str
    modules: int
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    over_rank: list[str] = field(default_factory=list)
    max_lora_rank: int | None = None

    @property
    def problems(self) -> list[str]:
        lines = []
        if self.missing:
            every = " (none of them: trained for another architecture?)" if len(self.missing) == self.modules else ""
            lines.append(f"{len(self.missing)} of {self.modules} adapter modules do not exist in {self.architecture} "
                         f"({self.model}){every}; a server such as vLLM may load the adapter anyway "
                         f"and serve the base model's output there: {_some(self.missing)}")
        lines += [f"shape mismatch: {line}" for line in self.mismatched]
        lines += [f"not a layer LoRA adapts: {line}" for line in self.unsupported]
        if self.over_rank:
            lines.append(f"{len(self.over_rank)} modules have a rank above the server's max LoRA rank "
                         f"{self.max_lora_rank}: {_some(self.over_rank)}; re-compress with "
                         f"`loramgr merge REF --weights 1 --rank {self.max_lora_rank} --name NS/NAME`")
        return lines

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**asdict(self), "problems": self.problems, "ok": self.ok}


def check_architecture(manifest: Manifest, model: str, *, max_lora_rank: int | None = None) -> ArchitectureReport:
    """Check the adapter ``manifest`` against the architecture of ``model`` (a folder or a Hub id
    holding ``config.json``; only the config is read).

    Raises ``InvalidArgument`` when the config cannot be loaded or built, when ``max_lora_rank``
    is not a positive integer, or for a Stable Diffusion LoRA (only language-model adapters are
    checked).
    """
    if manifest.format != "peft":
        raise InvalidArgument(f"check --model checks PEFT adapters of language models; this is a {manifest.format} "
                              "(Stable Diffusion) LoRA")
    if max_lora_rank is not None and (isinstance(max_lora_rank, bool) or not isinstance(max_lora_rank, int)
                                      or max_lora_rank < 1):
        raise InvalidArgument(f"max_lora_rank must be a positive integer, got {max_lora_rank!r}")
    skeleton, architecture = _meta_model(model, manifest.task_type)
    layers = dict(skeleton.named_modules())
    missing, mismatched, unsupported = [], [], []
    for path, a_shape, b_shape in manifest.modules:
        layer = layers.get(path)
        if layer is None:
            missing.append(path)
            continue
        sizes = _layer_sizes(layer)
        if sizes is None:
            unsupported.append(f"{path} is a {type(layer).__name__}")
            continue
        fan_in, fan_out = sizes
        if tuple(a_shape[1:]) != (fan_in,) or tuple(b_shape[:1]) != (fan_out,):
            mismatched.append(f"{path}: lora_A {list(a_shape)} / lora_B {list(b_shape)}, but the "
                              f"{type(layer).__name__} maps {fan_in} -> {fan_out} features")
    over = [f"{m} (rank {r})" for m, r in sorted(manifest.module_ranks.items())
            if max_lora_rank is not None and r > max_lora_rank]
    return ArchitectureReport(model=model, architecture=architecture, modules=len(manifest.modules), missing=missing,
                              mismatched=mismatched, unsupported=unsupported, over_rank=over,
                              max_lora_rank=max_lora_rank)


def _meta_model(model: str, task_type: str | None):
    """The model of ``model``'s config on the meta device (no weights), and its class name."""
    import torch
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(model, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidArgument(f"--model {model}: cannot load its config ({_first_line(exc)})") from None
    names = [_AUTO_CLASSES[task_type]] if task_type in _AUTO_CLASSES else []
    names += [name for name in _FALLBACK_CLASSES if name not in names]
    errors = []
    for name in names:
        try:
            with torch.device("meta"):
                built = getattr(transformers, name).from_config(config, trust_remote_code=False)
            return built, type(built).__name__
        # Not mapped by this auto class, or not buildable on the meta device: try the next one.
        except (ValueError, KeyError, TypeError, RuntimeError, NotImplementedError) as exc:
            errors.append(f"{name}: {_first_line(exc)}")
    raise InvalidArgument(f"--model {model}: cannot build a {config.model_type} model from its config "
                          f"({'; '.join(errors)[:300]})")


def _layer_sizes(layer) -> tuple[int, int] | None:
    """(in, out) features of a layer LoRA adapts as 2-D factors, or None."""
    from torch import nn

    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    if isinstance(layer, nn.Embedding):
        return layer.num_embeddings, layer.embedding_dim
    if type(layer).__name__ == "Conv1D" and getattr(layer, "weight", None) is not None:
        return tuple(layer.weight.shape)  # GPT-2's Conv1D stores weight as (in, out)
    return None


def _some(items: list[str], shown: int = 5) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
