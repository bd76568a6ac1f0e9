"""Will a serving stack load this adapter? ``check_serving`` answers for vLLM, LoRAX and PEFT.

A pure function over what an adapter version is (its ``Manifest``, or only its
``adapter_config.json``): it reads no weights and imports no serving stack (only PEFT, for the
``peft`` target, to compare config keys with the installed version). Each problem is one
line saying what the stack would do with the adapter and how to fix it; notes are what works but
is worth knowing (a server flag to set, padding that happens).

The rules, and where they come from (read from the projects' sources, not guessed):

vLLM (vllm/lora/peft_helper.py ``PEFTHelper.validate_legal`` / ``_validate_features``,
vllm/config/lora.py, vllm/lora/utils.py, vllm/lora/lora_model.py):
- ``MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]`` is the set allowed for the
  *server's* ``--max-lora-rank`` (default 16), not for adapter ranks; an adapter loads when
  ``r <= max_lora_rank`` ("LoRA rank {r} is greater than max_lora_rank") and vLLM zero-pads it into
  its max-rank buffers. So rank 4 or 12 is fine; rank 24 needs ``--max-lora-rank 32``.
- ``use_dora`` is refused ("vLLM does not yet support DoRA").
- ``modules_to_save`` is refused, except ``["classifier", "score"]`` for classification models.
- ``bias`` other than "none" is refused ("Adapter bias is not supported"), and tensors other than
  ``lora_A/B.weight`` / ``lora_embedding_A/B`` raise "... is unsupported LoRA weight" (so
  ``lora_bias`` and whole saved weights fail); saved ``*.base_layer.weight`` embeddings are skipped.
- target modules must be the model's linear layers or declared embedding modules, else
  "expected target modules in [...] but received [...]" (``check_unexpected_modules``).
- LoRA weights are cast to ``lora_dtype`` ('auto' | float16 | bfloat16) on load; this check
  accepts float16/bfloat16/float32 factors and flags other dtypes (float64, float8...) rather
  than rely on that cast.

LoRAX (predibase/lorax server/lorax_server/adapters/lora.py, utils/sgmv.py, models/model.py,
docs/models/adapters/lora.md):
- only ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight`` of supported layer types
  are mapped; any other tensor is logged as "unused adapter weights" and ignored, so DoRA
  magnitudes, LoRA biases, embedding LoRA and ``modules_to_save`` copies are silently dropped;
- unsupported target modules are ignored with a warning (per-architecture list in the docs);
- every module is scaled by the config's ``lora_alpha / r`` and each layer type's factors are
  stacked, so ``rank_pattern`` / ``alpha_pattern`` are not honoured;
- ranks are padded for the SGMV kernels (to 8, then to multiples of 16): any rank loads.

PEFT (peft/config.py ``PeftConfigMixin.from_peft_type``): a validated adapter loads; config keys
the installed PEFT does not know are dropped with a warning, which changes the result only
when the key turns a feature on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from .adapter import Manifest, read_adapter, read_lora_config
from .errors import InvalidArgument

TARGETS = ("vllm", "lorax", "peft")

VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_DEFAULT_MAX_LORA_RANK = 16
VLLM_MODULES_TO_SAVE = {"classifier", "score"}
VLLM_DTYPES = {"float16", "bfloat16", "float32"}

# Linear-layer names of the common decoder architectures' models (vLLM adapts every linear layer
# of a supported model): Llama/Mistral/Qwen2/Gemma, Phi-3 (packed), Phi-2, GPT-2/BigCode/Qwen,
# GPT-NeoX/Falcon/Bloom, DBRX, Mixtral experts, InternLM2.
LINEAR_MODULES = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    "qkv_proj", "gate_up_proj", "dense", "fc1", "fc2", "c_attn", "c_proj", "c_fc",
    "query_key_value", "dense_h_to_4h", "dense_4h_to_h", "Wqkv", "out_proj", "w1", "w2", "w3",
    "wqkv", "wo",
}
EMBEDDING_MODULES = {"embed_tokens", "lm_head"}
# LoRAX docs/models/adapters/lora.md, the union over its architectures (embed_tokens is absent).
LORAX_MODULES = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head",
    "qkv_proj", "gate_up_proj", "dense", "fc1", "fc2", "c_attn", "c_proj", "w1", "w2", "Wqkv",
    "out_proj", "c_fc", "query_key_value", "dense_h_to_4h", "dense_4h_to_h",
}
LORAX_MIN_RANK, LORAX_RANK_BLOCK = 8, 16  # lorax_server/utils/sgmv.py MIN_SGMV_RANK, SGMV_BLOCK_SIZE
# Config keys whose being ignored by an older PEFT changes what the adapter computes.
PEFT_BEHAVIOUR_KEYS = ("use_dora", "use_rslora", "lora_bias", "rank_pattern", "alpha_pattern",
                       "layer_replication", "trainable_token_indices", "target_parameters")

RECOMPRESS = "re-compress it to rank {rank} or less (`loramgr compose --adapters REF --mode delta --rank {rank}`)"
MERGE = "or merge it into the base model (PEFT `merge_and_unload`) and serve the merged model"


@dataclass(frozen=True)
class CheckReport:
    """Whether ``target`` will load the adapter: ``problems`` (one line each, with the fix) make
    it not ``ok``; ``notes`` do not."""

    target: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True)
class _Adapter:
    """What the rules look at, from a manifest or from a config alone (then ``None`` = unknown)."""

    max_rank: int
    ranks: set[int]
    alpha: float
    alpha_pattern: dict
    use_dora: bool
    lora_bias: bool
    bias: str
    modules_to_save: list[str]
    target_modules: list[str] | None  # module names (last path part); None for a regex target
    has_embeddings: bool
    full_weights: list[str] | None
    dtype: str | None
    config: Mapping | None
    from_manifest: bool


def check_serving(adapter: Manifest | Mapping, target: str, *, config: Mapping | None = None,
                  max_lora_rank: int | None = None) -> CheckReport:
    """Whether ``target`` ('vllm', 'lorax' or 'peft') will load the adapter.

    ``adapter`` is a ``Manifest`` (from ``read_adapter``; what tensors hold is then known) or the
    dict of an ``adapter_config.json``. ``config`` adds the raw config to a manifest (for its
    ``bias`` and the PEFT key check). ``max_lora_rank`` is the vLLM server's setting, when known.
    Raises ``InvalidArgument`` for an unknown target or a ``max_lora_rank`` vLLM does not accept.
    """
    if target not in CHECKS:
        raise InvalidArgument(f"unknown serving target {target!r}: one of {', '.join(TARGETS)}")
    if max_lora_rank is not None and max_lora_rank not in VLLM_MAX_LORA_RANKS:
        raise InvalidArgument(f"--max-lora-rank {max_lora_rank} is not one vLLM accepts: "
                              f"one of {', '.join(map(str, VLLM_MAX_LORA_RANKS))}")
    facts = _from_manifest(adapter, config) if isinstance(adapter, Manifest) else _from_config(adapter)
    problems, notes = [], []
    CHECKS[target](facts, problems, notes, max_lora_rank=max_lora_rank)
    return CheckReport(target=target, problems=problems, notes=notes)


def check_folder(path: str | Path, target: str, **options) -> CheckReport:
    """``check_serving`` for the adapter folder at ``path`` (validated by ``read_adapter`` first).
    Raises ``InvalidAdapter``, ``PickleRefused``, ``InvalidArgument``."""
    manifest = read_adapter(path, digests=False)
    return check_serving(manifest, target, config=read_lora_config(path), **options)


# -- facts ---------------------------------------------------------------------------------------


def _from_manifest(manifest: Manifest, config: Mapping | None) -> _Adapter:
    saved = list(manifest.modules_to_save)
    return _Adapter(
        max_rank=max(manifest.module_ranks.values(), default=manifest.rank),
        ranks=set(manifest.module_ranks.values()) or {manifest.rank}, alpha=manifest.alpha,
        alpha_pattern=dict(manifest.alpha_pattern),
        use_dora=manifest.use_dora, lora_bias=manifest.lora_bias,
        bias=(config or {}).get("bias") or "none", modules_to_save=saved,
        target_modules=list(manifest.target_modules), has_embeddings=manifest.has_embeddings,
        full_weights=[name for name, _ in manifest.full_weights
                      if not any(f".{m}." in f".{name}" for m in saved)],
        dtype=manifest.dtype, config=config, from_manifest=True)


def _from_config(config: Mapping) -> _Adapter:
    if config.get("peft_type") != "LORA":
        raise InvalidArgument(f"not a LoRA adapter config (peft_type {config.get('peft_type')!r})")
    r = config.get("r") or 8
    rank_pattern = dict(config.get("rank_pattern") or {})
    targets = config.get("target_modules")
    names = sorted({t.rsplit(".", 1)[-1] for t in targets}) if isinstance(targets, list) else None
    return _Adapter(
        max_rank=max([r, *rank_pattern.values()]), ranks={r, *rank_pattern.values()},
        alpha=config.get("lora_alpha") or 8,
        alpha_pattern=dict(config.get("alpha_pattern") or {}),
        use_dora=bool(config.get("use_dora")), lora_bias=bool(config.get("lora_bias")),
        bias=config.get("bias") or "none", modules_to_save=list(config.get("modules_to_save") or []),
        target_modules=names, has_embeddings=bool(names and "embed_tokens" in names),
        full_weights=None, dtype=None, config=config, from_manifest=False)


def _names(items) -> str:
    return ", ".join(sorted(items))


def _alpha_differs(a: _Adapter) -> bool:
    return any(alpha != a.alpha for alpha in a.alpha_pattern.values())


def _smallest_rank_setting(rank: int) -> int | None:
    return next((allowed for allowed in VLLM_MAX_LORA_RANKS if allowed >= rank), None)


# -- vLLM ----------------------------------------------------------------------------------------


def _check_vllm(a: _Adapter, problems: list[str], notes: list[str], *, max_lora_rank: int | None) -> None:
    needed = _smallest_rank_setting(a.max_rank)
    if needed is None:
        problems.append(f"rank {a.max_rank} is above 512, the largest --max-lora-rank vLLM accepts: "
                        + RECOMPRESS.format(rank=512))
    elif max_lora_rank is not None and a.max_rank > max_lora_rank:
        problems.append(f"rank {a.max_rank} is above the server's --max-lora-rank {max_lora_rank}: start vLLM "
                        f"with --max-lora-rank {needed}, or " + RECOMPRESS.format(rank=max_lora_rank))
    elif max_lora_rank is None and needed > VLLM_DEFAULT_MAX_LORA_RANK:
        notes.append(f"rank {a.max_rank} needs vLLM started with --max-lora-rank {needed} or more "
                     f"(default {VLLM_DEFAULT_MAX_LORA_RANK})")
    if needed is not None and a.max_rank not in VLLM_MAX_LORA_RANKS:
        notes.append(f"rank {a.max_rank} is not itself one of vLLM's --max-lora-rank values; that is fine: "
                     "vLLM zero-pads adapters up to the server's max rank")
    if a.use_dora:
        problems.append("uses DoRA (use_dora), which vLLM does not support: retrain without use_dora, " + MERGE)
    saved = [m for m in a.modules_to_save if m not in VLLM_MODULES_TO_SAVE]
    if saved:
        problems.append(f"saves whole modules (modules_to_save: {_names(saved)}), which vLLM refuses (only "
                        "classifier/score heads are allowed): make them LoRA targets and retrain, " + MERGE)
    if a.bias != "none":
        problems.append(f"trains base biases (bias={a.bias!r}), which vLLM refuses: retrain with bias='none', "
                        + MERGE)
    if a.lora_bias:
        problems.append("has lora_B biases (lora_bias), which vLLM refuses as unsupported LoRA weights: "
                        "retrain with lora_bias=False, " + MERGE)
    _vllm_targets(a, problems, notes)
    _vllm_full_weights(a, problems, notes)
    if a.dtype == "mixed":
        notes.append("mixed tensor dtypes: vLLM casts every LoRA weight to its lora_dtype")
    elif a.dtype is not None and a.dtype not in VLLM_DTYPES:
        problems.append(f"weights are {a.dtype}; vLLM takes LoRA factors in float16, bfloat16 or float32: "
                        "save them as bfloat16, e.g. `model.to(torch.bfloat16)` before `save_pretrained`")
    if len(a.ranks) > 1 or _alpha_differs(a):
        notes.append("per-module ranks/alphas (rank_pattern/alpha_pattern) need a recent vLLM: "
                     "older releases scale every module by lora_alpha / r")


def _vllm_targets(a: _Adapter, problems: list[str], notes: list[str]) -> None:
    if a.target_modules is None:
        notes.append("target_modules is a regular expression: module names not checked")
        return
    unknown = set(a.target_modules) - LINEAR_MODULES - EMBEDDING_MODULES
    if unknown:
        problems.append(f"adapts modules that are not linear projections of the architectures vLLM serves "
                        f"({_names(unknown)}); vLLM refuses such an adapter ('expected target modules in ...'): "
                        "retrain targeting the attention/MLP projections (e.g. q_proj, k_proj, v_proj, o_proj, "
                        "gate_proj, up_proj, down_proj)")
    embeddings = EMBEDDING_MODULES & set(a.target_modules)
    if a.has_embeddings or embeddings:
        notes.append(f"adapts {_names(embeddings) or 'embeddings'}: vLLM loads that only for architectures "
                     "that declare embedding_modules (Llama, Mistral, Qwen2 and most decoder models)")


def _vllm_full_weights(a: _Adapter, problems: list[str], notes: list[str]) -> None:
    if not a.full_weights:
        return
    skipped = [n for n in a.full_weights if n.endswith((".embed_tokens.base_layer.weight",
                                                        ".lm_head.base_layer.weight"))]
    refused = [n for n in a.full_weights if n not in skipped]
    if skipped:
        notes.append(f"vLLM skips the saved embedding weights ({_names(skipped)}): a resized vocabulary "
                     "is not served")
    if refused:
        problems.append(f"stores whole weights ({_names(refused)}), which vLLM refuses as unsupported LoRA "
                        "weights: save without them (PEFT save_embedding_layers=False), " + MERGE)


# -- LoRAX ---------------------------------------------------------------------------------------


def _check_lorax(a: _Adapter, problems: list[str], notes: list[str], **_) -> None:
    ignored = "LoRAX ignores {what}, logging them as unused adapter weights, so it would serve a different adapter"
    if a.use_dora:
        problems.append(ignored.format(what="the DoRA magnitude vectors (use_dora)")
                        + ": retrain without use_dora, " + MERGE)
    if a.modules_to_save:
        problems.append(ignored.format(what=f"the whole saved modules (modules_to_save: {_names(a.modules_to_save)})")
                        + ": make them LoRA targets and retrain, " + MERGE)
    if a.lora_bias or a.bias != "none":
        problems.append(ignored.format(what="the bias terms (lora_bias / bias)") + ": retrain without biases, " + MERGE)
    if a.has_embeddings:
        problems.append(ignored.format(what="the embedding LoRA factors (lora_embedding_A/B)")
                        + ": retrain without embed_tokens in target_modules")
    if a.target_modules is None:
        notes.append("target_modules is a regular expression: module names not checked")
    else:
        unknown = set(a.target_modules) - LORAX_MODULES - ({"embed_tokens"} if a.has_embeddings else set())
        if unknown:
            problems.append(f"LoRAX ignores modules it does not support ({_names(unknown)}) with a warning, so it "
                            "would serve a different adapter: retrain targeting the attention/MLP projections "
                            "(e.g. q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)")
    if len(a.ranks) > 1 or _alpha_differs(a):
        problems.append("per-module ranks/alphas (rank_pattern/alpha_pattern) are not honoured: LoRAX scales "
                        "every module by lora_alpha / r and stacks each layer type's factors: "
                        "re-export with one r and lora_alpha for all modules (fold each module's scaling "
                        "into lora_B)")
    padded = _lorax_padded_rank(a.max_rank)
    if padded != a.max_rank:
        notes.append(f"LoRAX pads rank {a.max_rank} to {padded} for its SGMV kernels (zeros: same outputs)")
    if a.dtype is not None and a.dtype not in VLLM_DTYPES | {"mixed"}:
        notes.append(f"weights are {a.dtype}: LoRAX casts them to the base model's dtype when loading")


def _lorax_padded_rank(rank: int) -> int:
    # lorax_server/utils/sgmv.py pad_to_min_rank (one GPU: world_size 1).
    if rank <= LORAX_MIN_RANK:
        return LORAX_MIN_RANK
    return -(-rank // LORAX_RANK_BLOCK) * LORAX_RANK_BLOCK


# -- PEFT ----------------------------------------------------------------------------------------


def _check_peft(a: _Adapter, problems: list[str], notes: list[str], **_) -> None:
    import dataclasses

    import peft
    from peft import LoraConfig

    if not a.from_manifest:
        notes.append("checked the config only: `loramgr check` on the adapter folder also validates the weights")
    if a.config is None:
        notes.append("no adapter_config.json given: config keys not checked against the installed PEFT")
        return
    known = {f.name for f in dataclasses.fields(LoraConfig)}
    unknown = sorted(set(a.config) - known)
    active = [key for key in unknown if key in PEFT_BEHAVIOUR_KEYS and a.config[key] not in (None, False, {}, [])]
    if active:
        problems.append(f"adapter_config.json turns on {', '.join(active)}, which the installed PEFT "
                        f"{peft.__version__} does not know and would ignore: upgrade it (`pip install -U peft`)")
    rest = [key for key in unknown if key not in active]
    if rest:
        notes.append(f"the installed PEFT {peft.__version__} ignores unknown config keys {', '.join(rest)} "
                     "(saved by a newer PEFT?); upgrading it silences the warning")
    saved_with = a.config.get("peft_version")
    if isinstance(saved_with, str) and _version(saved_with) > _version(peft.__version__):
        notes.append(f"saved with PEFT {saved_with}, newer than the installed {peft.__version__}")


def _version(text: str) -> tuple:
    from packaging.version import InvalidVersion, Version

    try:
        return (Version(text.split("@", 1)[0]),)
    except InvalidVersion:
        return ()


CHECKS: dict[str, Callable[..., None]] = {"vllm": _check_vllm, "lorax": _check_lorax, "peft": _check_peft}

