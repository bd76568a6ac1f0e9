"""Reading, validating and converting PEFT LoRA adapter folders (loramgr.hub.adapter)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from loramgr.hub.adapter import (
    ADAPTER_FILES,
    AdapterFile,
    Manifest,
    convert_pickled_adapter,
    read_adapter,
)
from loramgr.hub.errors import InvalidAdapter, InvalidArgument, PickleRefused
from loramgr.hub.safetensors_header import MAX_HEADER_BYTES, TensorEntry, read_safetensors_header

from .. import factories

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
PREFIX = "base_model.model."
Q0 = "model.layers.0.self_attn.q_proj"


# ---------------------------------------------------------------- helpers


@pytest.fixture
def adapter(llama_lora, tmp_path):
    """A private, editable copy of the session's llama LoRA adapter."""
    return shutil.copytree(llama_lora, tmp_path / "adapter")


def edit_tensors(folder, change):
    """Rewrite the folder's safetensors after ``change(tensors)`` edits the dict in place."""
    tensors = load_file(folder / WEIGHTS)
    change(tensors)
    save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})


def edit_config(folder, **fields):
    config = json.loads((folder / CONFIG).read_text())
    config.update(fields)
    (folder / CONFIG).write_text(json.dumps(config))


def raw_safetensors(header: dict, data: bytes = b"") -> bytes:
    """The bytes of a safetensors file with exactly this header, however wrong it is."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def f32_entry(shape, begin):
    count = 1
    for d in shape:
        count *= d
    return {"dtype": "F32", "shape": list(shape), "data_offsets": [begin, begin + 4 * count]}


def raises_invalid(folder, *words, cls=InvalidAdapter):
    """Assert reading ``folder`` fails with ``cls`` and a one-line message holding ``words``."""
    with pytest.raises(cls) as info:
        read_adapter(folder)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


# ---------------------------------------------------------------- valid adapters


def test_manifest_matches_what_safetensors_reads(llama_lora, llama_dir):
    manifest = read_adapter(llama_lora)
    with safe_open(str(llama_lora / WEIGHTS), framework="pt") as f:
        shapes = {key.removeprefix(PREFIX): tuple(f.get_slice(key).get_shape()) for key in f.keys()}
        numel = sum(f.get_tensor(key).numel() for key in f.keys())

    modules = sorted({key.rsplit(".lora_", 1)[0] for key in shapes})
    assert manifest.modules == [(m, shapes[f"{m}.lora_A.weight"], shapes[f"{m}.lora_B.weight"]) for m in modules]
    assert len(modules) == 4 and Q0 in modules
    assert manifest.module_ranks == dict.fromkeys(modules, 4)
    assert manifest.target_modules == ["q_proj", "v_proj"]
    assert manifest.param_count == numel
    assert (manifest.base_model, manifest.task_type, manifest.peft_type) == (str(llama_dir), "CAUSAL_LM", "LORA")
    assert (manifest.rank, manifest.alpha, manifest.use_rslora, manifest.dtype) == (4, 8, False, "float32")
    assert (manifest.rank_pattern, manifest.alpha_pattern) == ({}, {})
    assert not (manifest.use_dora or manifest.has_embeddings or manifest.modules_to_save or manifest.full_weights)
    assert manifest.metadata == {"format": "pt"}

    names = sorted(p.name for p in llama_lora.iterdir())
    assert names == ["README.md", CONFIG, WEIGHTS] and manifest.ignored_files == []
    assert manifest.files == [
        AdapterFile(name, path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
        for name, path in ((name, llama_lora / name) for name in names)
    ]
    assert manifest.byte_size == sum((llama_lora / name).stat().st_size for name in names)


def test_manifest_is_json_and_round_trips(llama_lora):
    manifest = read_adapter(llama_lora)
    data = json.loads(json.dumps(manifest.to_dict()))
    assert data["modules"][0] == [f"{data['modules'][0][0]}", [4, 32], [32, 4]]
    assert Manifest.from_dict(data) == manifest


def test_digests_can_be_skipped(llama_lora):
    assert all(f.sha256 is None for f in read_adapter(llama_lora, digests=False).files)


def test_module_paths_match_the_composer(llama_lora):
    from loramgr.composer.lora import load_lora

    assert sorted(load_lora(llama_lora).modules) == sorted(read_adapter(llama_lora).module_ranks)


def test_rank_pattern_alpha_pattern_and_rslora(llama_dir, tmp_path):
    folder = factories.make_lora(llama_dir, tmp_path / "a", r=8, alpha=16, rank_pattern={"v_proj": 2},
                                 alpha_pattern={"q_proj": 32}, use_rslora=True)
    manifest = read_adapter(folder)
    assert manifest.rank == 8 and manifest.alpha == 16 and manifest.use_rslora
    assert manifest.rank_pattern == {"v_proj": 2} and manifest.alpha_pattern == {"q_proj": 32}
    assert {m: r for m, r in manifest.module_ranks.items() if m.endswith("v_proj")} == {
        "model.layers.0.self_attn.v_proj": 2, "model.layers.1.self_attn.v_proj": 2}
    assert {r for m, r in manifest.module_ranks.items() if m.endswith("q_proj")} == {8}
    assert dict((m, a) for m, a, _ in manifest.modules)["model.layers.1.self_attn.v_proj"] == (2, 32)


def test_t5_adapter(t5_dir, tmp_path):
    manifest = read_adapter(factories.make_lora(t5_dir, tmp_path / "t5"))
    assert manifest.task_type == "SEQ_2_SEQ_LM" and manifest.target_modules == ["q", "v"]
    assert "encoder.block.0.layer.0.SelfAttention.q" in manifest.module_ranks
    assert any(m.startswith("decoder.block.1.layer.1.EncDecAttention.") for m in manifest.module_ranks)


@pytest.mark.parametrize("kwargs, expected", [
    (dict(use_dora=True), dict(use_dora=True)),
    (dict(lora_bias=True), dict(lora_bias=True)),
    (dict(targets=["q_proj", "embed_tokens"]), dict(has_embeddings=True)),
    (dict(modules_to_save=["lm_head"]), dict(modules_to_save=["lm_head"], full_weights=[("lm_head.weight", (96, 32))])),
])
def test_dora_embeddings_and_modules_to_save_are_reported(llama_dir, tmp_path, kwargs, expected):
    manifest = read_adapter(factories.make_lora(llama_dir, tmp_path / "a", **kwargs))
    for name, value in expected.items():
        assert getattr(manifest, name) == value
    with safe_open(str(tmp_path / "a" / WEIGHTS), framework="pt") as f:
        assert manifest.param_count == sum(f.get_tensor(k).numel() for k in f.keys())
    if kwargs.get("targets"):
        assert manifest.target_modules == ["embed_tokens", "q_proj"]
        assert dict((m, (a, b)) for m, a, b in manifest.modules)["model.embed_tokens"] == ((4, 96), (32, 4))


def test_optional_files_count_and_other_files_are_ignored(adapter):
    factories.write_examples(adapter / "examples.jsonl", [("a", "b")])
    (adapter / "training_args.bin").write_bytes(b"\x80 not ours")
    (adapter / "checkpoint-10").mkdir()
    manifest = read_adapter(adapter)
    assert [f.name for f in manifest.files] == sorted(ADAPTER_FILES)
    assert manifest.ignored_files == ["checkpoint-10", "training_args.bin"]
    assert manifest.byte_size == sum((adapter / name).stat().st_size for name in ADAPTER_FILES)


def test_dtype_is_named_or_mixed(adapter):
    edit_tensors(adapter, lambda t: t.update({k: v.to(torch.bfloat16) for k, v in t.items()}))
    assert read_adapter(adapter).dtype == "bfloat16"
    edit_tensors(adapter, lambda t: t.update({next(iter(t)): next(iter(t.values())).to(torch.float16)}))
    assert read_adapter(adapter).dtype == "mixed"


# ---------------------------------------------------------------- the folder and the config


def test_missing_folder(tmp_path):
    raises_invalid(tmp_path / "nope", "no such folder")
    (tmp_path / "file").write_text("x")
    raises_invalid(tmp_path / "file", "not a folder")


def test_missing_config(adapter):
    (adapter / CONFIG).unlink()
    raises_invalid(adapter, CONFIG, "missing")


@pytest.mark.parametrize("text, words", [("{not json", ["not valid JSON"]), ("[1, 2]", ["JSON object", "list"])])
def test_config_that_is_not_a_json_object(adapter, text, words):
    (adapter / CONFIG).write_text(text)
    raises_invalid(adapter, CONFIG, *words)


@pytest.mark.parametrize("config_class, kwargs, peft_type", [
    ("IA3Config", dict(target_modules=["q_proj"], feedforward_modules=[]), "IA3"),
    ("PrefixTuningConfig", dict(num_virtual_tokens=4), "PREFIX_TUNING"),
])
def test_non_lora_peft_type(adapter, config_class, kwargs, peft_type):
    import peft

    getattr(peft, config_class)(task_type="CAUSAL_LM", **kwargs).save_pretrained(adapter)
    raises_invalid(adapter, CONFIG, f"peft_type is '{peft_type}'", "LORA")


@pytest.mark.parametrize("fields, words", [
    (dict(peft_type=None), ["no peft_type"]),
    (dict(r=0), ["r must be a positive integer"]),
    (dict(lora_alpha="eight"), ["lora_alpha must be a number"]),
    (dict(rank_pattern={"v_proj": "two"}), ["rank_pattern"]),
    (dict(rank_pattern={"(": 2}), ["not a valid regular expression"]),
    (dict(use_dora="yes"), ["use_dora must be true or false"]),
])
def test_malformed_config_fields(adapter, fields, words):
    edit_config(adapter, **fields)
    raises_invalid(adapter, CONFIG, *words)


# ---------------------------------------------------------------- the weights file


def test_missing_weights(adapter):
    (adapter / WEIGHTS).unlink()
    raises_invalid(adapter, WEIGHTS, "missing")


def test_pickled_weights_are_refused_without_convert(adapter):
    torch.save(load_file(adapter / WEIGHTS), adapter / "adapter_model.bin")
    (adapter / WEIGHTS).unlink()
    message = raises_invalid(adapter, "adapter_model.bin", "--convert-pickle", cls=PickleRefused)
    assert str(adapter) in message


def test_garbage_weights(adapter):
    (adapter / WEIGHTS).write_bytes(b"this is not a safetensors file, just some text\n" * 20)
    raises_invalid(adapter, WEIGHTS, "absurd")
    (adapter / WEIGHTS).write_bytes(struct.pack("<Q", 10) + b"garbage!!!")
    raises_invalid(adapter, WEIGHTS, "not valid JSON")


def test_truncated_weights(adapter):
    data = (adapter / WEIGHTS).read_bytes()
    (adapter / WEIGHTS).write_bytes(data[: len(data) - 100])
    raises_invalid(adapter, WEIGHTS, "truncated")
    (adapter / WEIGHTS).write_bytes(data[:5])
    raises_invalid(adapter, WEIGHTS, "too short")


def test_absurd_header_length(adapter):
    (adapter / WEIGHTS).write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    raises_invalid(adapter, WEIGHTS, "absurd")
    (adapter / WEIGHTS).write_bytes(struct.pack("<Q", 5000) + b"{}")
    raises_invalid(adapter, WEIGHTS, "header length 5000", "past the end")


def test_header_reader_agrees_with_safetensors(llama_lora):
    header = read_safetensors_header(llama_lora / WEIGHTS)
    with safe_open(str(llama_lora / WEIGHTS), framework="pt") as f:
        assert sorted(header.tensors) == sorted(f.keys())
        assert header.metadata == f.metadata()
        for key in f.keys():
            entry = header.tensors[key]
            assert (entry.dtype, list(entry.shape)) == (f.get_slice(key).get_dtype(), f.get_slice(key).get_shape())
            assert entry.nbytes == f.get_tensor(key).numel() * 4
    assert 8 + header.header_bytes + header.data_bytes == (llama_lora / WEIGHTS).stat().st_size


def test_header_reader_accepts_a_well_formed_file(tmp_path):
    path = tmp_path / "ok.safetensors"
    path.write_bytes(raw_safetensors({"a": f32_entry([2, 3], 0), "b": f32_entry([1], 24), "__metadata__": {"k": "v"}},
                                     bytes(28)))
    header = read_safetensors_header(path)
    assert header.tensors == {"a": TensorEntry("F32", (2, 3), (0, 24)), "b": TensorEntry("F32", (1,), (24, 28))}
    assert header.metadata == {"k": "v"}


@pytest.mark.parametrize("header, data, words", [
    ([1, 2], b"", ["not an object"]),
    ({"a": {"dtype": "F32", "shape": [2]}}, bytes(8), ["'a'", "lacks data_offsets"]),
    ({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), ["unknown dtype 'Q7'"]),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8), ["shape"]),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8), ["data_offsets"]),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), ["needs 12 bytes", "span 8"]),
    ({"a": f32_entry([2], 0), "b": f32_entry([2], 4)}, bytes(12), ["'b'", "overlaps"]),
    ({"a": f32_entry([2], 4)}, bytes(12), ["'a'", "gap"]),
    ({"a": f32_entry([2], 0)}, bytes(12), ["4 unaccounted bytes"]),
    ({"a": f32_entry([2], 0)}, bytes(4), ["truncated"]),
    ({"a": f32_entry([2], 0), "__metadata__": {"k": 1}}, bytes(8), ["__metadata__"]),
])
def test_header_reader_rejects(tmp_path, header, data, words):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw_safetensors(header, data))
    with pytest.raises(InvalidAdapter) as info:
        read_safetensors_header(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_header_with_duplicate_tensor_names(tmp_path):
    path = tmp_path / "dup.safetensors"
    entry = '{"dtype": "F32", "shape": [1], "data_offsets": [%d, %d]}'
    text = ('{"a": %s, "a": %s}' % (entry % (0, 4), entry % (4, 8))).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(8))
    with pytest.raises(InvalidAdapter, match="'a' twice"):
        read_safetensors_header(path)


def test_header_length_limit_is_the_safetensors_one():
    assert MAX_HEADER_BYTES == 100_000_000


# ---------------------------------------------------------------- the tensors


def test_no_tensors(adapter):
    save_file({}, adapter / WEIGHTS)
    raises_invalid(adapter, WEIGHTS, "holds no tensors")


def test_lora_a_without_lora_b(adapter):
    edit_tensors(adapter, lambda t: t.pop(f"{PREFIX}{Q0}.lora_B.weight"))
    raises_invalid(adapter, WEIGHTS, Q0, "has lora_A.weight but no lora_B")


def test_lora_b_without_lora_a(adapter):
    edit_tensors(adapter, lambda t: t.pop(f"{PREFIX}{Q0}.lora_A.weight"))
    raises_invalid(adapter, WEIGHTS, Q0, "has lora_B.weight but no lora_A")


def test_shapes_that_disagree_with_r(adapter):
    def rank_3(tensors):
        tensors[f"{PREFIX}{Q0}.lora_A.weight"] = torch.zeros(3, 32)
        tensors[f"{PREFIX}{Q0}.lora_B.weight"] = torch.zeros(32, 3)

    edit_tensors(adapter, rank_3)
    raises_invalid(adapter, WEIGHTS, Q0, "has rank 3", "r is 4")


def test_shapes_that_disagree_with_rank_pattern(llama_dir, tmp_path):
    folder = factories.make_lora(llama_dir, tmp_path / "a", r=8, rank_pattern={"v_proj": 2})
    # Keys match a suffix of the module path, the first matching key wins (PEFT's rule).
    edit_config(folder, rank_pattern={"layers.0.self_attn.v_proj": 2, "v_proj": 3})
    raises_invalid(folder, "model.layers.1.self_attn.v_proj", "has rank 2", "rank_pattern['v_proj'] is 3")


def test_factors_whose_ranks_disagree(adapter):
    edit_tensors(adapter, lambda t: t.update({f"{PREFIX}{Q0}.lora_B.weight": torch.zeros(32, 5)}))
    raises_invalid(adapter, Q0, "lora_A has rank 4", "lora_B has rank 5")


def test_factors_that_are_not_matrices(adapter):
    edit_tensors(adapter, lambda t: t.update({f"{PREFIX}{Q0}.lora_A.weight": torch.zeros(4, 32, 1, 1)}))
    raises_invalid(adapter, Q0, "lora_A has shape [4, 32, 1, 1]", "expected 2-D (r, in)", "convolution")


def test_unrecognised_tensor(adapter):
    edit_tensors(adapter, lambda t: t.update({f"{PREFIX}model.norm.weight": torch.ones(32)}))
    raises_invalid(adapter, WEIGHTS, "model.norm.weight", "not a LoRA, DoRA or modules_to_save tensor")


def test_linear_and_embedding_factors_mixed(adapter):
    edit_tensors(adapter, lambda t: t.update({f"{PREFIX}{Q0}.lora_embedding_B": t.pop(f"{PREFIX}{Q0}.lora_B.weight")}))
    raises_invalid(adapter, Q0, "mixes lora_A/B and lora_embedding_A/B")


def test_integer_weights(adapter):
    edit_tensors(adapter, lambda t: t.update({f"{PREFIX}{Q0}.lora_A.weight": torch.zeros(4, 32, dtype=torch.int32)}))
    raises_invalid(adapter, "lora_A.weight", "I32", "floating point")


def test_dora_tensors_need_use_dora(llama_dir, tmp_path):
    folder = factories.make_lora(llama_dir, tmp_path / "a", use_dora=True)
    edit_config(folder, use_dora=False)
    raises_invalid(folder, "lora_magnitude_vector", "use_dora is not true")
    edit_config(folder, use_dora=True)
    edit_tensors(folder, lambda t: t.pop(f"{PREFIX}{Q0}.lora_magnitude_vector"))
    raises_invalid(folder, Q0, "no lora_magnitude_vector")


# ---------------------------------------------------------------- converting a pickled adapter


@pytest.fixture
def pickled(adapter):
    """The adapter with its weights as a PEFT-style pickled ``adapter_model.bin`` only."""
    torch.save(load_file(adapter / WEIGHTS), adapter / "adapter_model.bin")
    (adapter / WEIGHTS).unlink()
    return adapter


def test_conversion_round_trip(pickled, llama_lora, tmp_path):
    dst = convert_pickled_adapter(pickled, tmp_path / "converted")
    assert dst == tmp_path / "converted"
    assert sorted(p.name for p in dst.iterdir()) == ["README.md", CONFIG, WEIGHTS]
    original, converted = load_file(llama_lora / WEIGHTS), load_file(dst / WEIGHTS)
    assert original.keys() == converted.keys()
    for key in original:
        assert torch.equal(original[key], converted[key]) and original[key].dtype == converted[key].dtype
    assert (dst / CONFIG).read_bytes() == (llama_lora / CONFIG).read_bytes()
    assert read_adapter(dst).modules == read_adapter(llama_lora).modules
    assert not (pickled / WEIGHTS).exists()  # the source folder is left alone


def test_conversion_handles_shared_and_strided_tensors(pickled, tmp_path):
    state = torch.load(pickled / "adapter_model.bin", weights_only=True)
    state[f"{PREFIX}{Q0}.lora_B.weight"] = torch.zeros(4, 32).t()  # a non-contiguous view
    torch.save(state, pickled / "adapter_model.bin")
    converted = load_file(convert_pickled_adapter(pickled, tmp_path / "out") / WEIGHTS)
    assert torch.equal(converted[f"{PREFIX}{Q0}.lora_B.weight"], torch.zeros(32, 4))


class _TouchAFile:
    """Unpickling this runs ``touch`` through os.system: what a malicious checkpoint does."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_malicious_pickle_is_refused_and_not_run(pickled, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"x": _TouchAFile(marker)}, pickled / "adapter_model.bin")
    with pytest.raises(InvalidAdapter, match="refused to load") as info:
        convert_pickled_adapter(pickled, tmp_path / "out")
    assert "posix.system" in str(info.value) or "os.system" in str(info.value)
    assert not marker.exists()
    assert not (tmp_path / "out" / WEIGHTS).exists()
    # The payload is real: an unrestricted load would have run it.
    torch.load(pickled / "adapter_model.bin", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("payload, words", [
    ([torch.zeros(2)], "dict of named dense tensors"),
    ({"a": 1}, "dict of named dense tensors"),
    (b"not a pickle at all", "refused to load"),
])
def test_pickles_without_a_state_dict(pickled, tmp_path, payload, words):
    if isinstance(payload, bytes):
        (pickled / "adapter_model.bin").write_bytes(payload)
    else:
        torch.save(payload, pickled / "adapter_model.bin")
    with pytest.raises(InvalidAdapter, match=words):
        convert_pickled_adapter(pickled, tmp_path / "out")


def test_converted_tensors_are_validated(pickled, tmp_path):
    torch.save({f"{PREFIX}{Q0}.lora_A.weight": torch.zeros(4, 32)}, pickled / "adapter_model.bin")
    with pytest.raises(InvalidAdapter, match="no lora_B"):
        convert_pickled_adapter(pickled, tmp_path / "out")


def test_conversion_needs_a_lora_config_and_a_bin(pickled, tmp_path):
    with pytest.raises(InvalidArgument):
        convert_pickled_adapter(pickled, pickled)
    (pickled / "adapter_model.bin").unlink()
    with pytest.raises(InvalidAdapter, match="no adapter_model.bin"):
        convert_pickled_adapter(pickled, tmp_path / "out")
    edit_config(pickled, peft_type="IA3")
    with pytest.raises(InvalidAdapter, match="peft_type is 'IA3'"):
        convert_pickled_adapter(pickled, tmp_path / "out")
