"""Hostile adapter folders (issue 12): each case is refused at validation with one clear line,
and a push of it stores nothing."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from loramgr.hub.adapter import check_regular_files, read_adapter
from loramgr.hub.errors import InvalidAdapter, InvalidArgument, LoramgrError
from loramgr.hub.records import Lineage, SourceWeight
from loramgr.hub.registry import Registry
from loramgr.hub.settings import Settings

from ..hostile import config, lora_tensors, one_line, write_adapter, write_raw_header


@pytest.fixture
def local_registry(tmp_path):
    registry = Registry(Settings.load(environ={}, home=str(tmp_path / "home")))
    yield registry
    registry.close()


def refused(folder, *words, kind=InvalidAdapter):
    with pytest.raises(kind) as info:
        read_adapter(folder, digests=False)
    message = str(info.value)
    assert one_line(message), message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def push_refused(registry, folder, *words):
    with pytest.raises(LoramgrError) as info:
        registry.push(folder, name="acme/hostile", task="t")
    assert one_line(str(info.value))
    for word in words:
        assert word in str(info.value)
    assert registry.ls() == []
    assert registry.verify().ok


# -- 1. non-finite numbers ------------------------------------------------------------------

@pytest.mark.parametrize("alpha_text", ["1e999", "-1e999", "Infinity", "-Infinity", "NaN"])
def test_non_finite_lora_alpha_is_refused(tmp_path, local_registry, alpha_text):
    text = json.dumps(config()).replace('"lora_alpha": 4', f'"lora_alpha": {alpha_text}')
    folder = write_adapter(tmp_path / "a", config_text=text)
    refused(folder, "adapter_config.json")
    # Before: stored, and every JSON answer that showed it failed (NaN: "too much contention").
    push_refused(local_registry, folder, "adapter_config.json")


@pytest.mark.parametrize("value_text", ["1e999", "NaN", "-Infinity"])
def test_non_finite_alpha_pattern_is_refused(tmp_path, value_text):
    text = json.dumps(config(alpha_pattern={"q_proj": 1.0})).replace('"q_proj": 1.0', f'"q_proj": {value_text}')
    refused(write_adapter(tmp_path / "a", config_text=text), "adapter_config.json")


def test_huge_integer_alpha_and_rank_are_refused(tmp_path):
    refused(write_adapter(tmp_path / "a", config_fields={"lora_alpha": 10 ** 400}), "lora_alpha", "finite")
    refused(write_adapter(tmp_path / "b", config_fields={"r": 2 ** 64}), "r must be a positive integer")
    refused(write_adapter(tmp_path / "c", config_fields={"rank_pattern": {"q_proj": 2 ** 63}}), "rank_pattern")


@pytest.mark.parametrize("data", [
    {"sources": [{"ref": "acme/a@1", "weight": math.inf}], "mode": "delta"},
    {"sources": [{"ref": "acme/a@1", "weight": math.nan}], "mode": "delta"},
    {"sources": [{"ref": "acme/a@1", "weight": "heavy"}], "mode": "delta"},
    {"sources": [{"ref": "acme/a@1", "weight": [1]}], "mode": "delta"},
    {"sources": [], "mode": "delta", "score": math.inf},
    {"sources": [], "mode": "delta", "score": "good"},
    {"sources": [], "mode": "delta", "seed": 2 ** 64},
    {"sources": [], "mode": "delta", "details": {"path": {1, 2}}},
    {"sources": "acme/a@1", "mode": "delta"},
])
def test_bad_lineage_is_refused(data):
    with pytest.raises(InvalidArgument) as info:
        Lineage.from_dict(data)
    assert one_line(str(info.value)) and "lineage" in str(info.value)


def test_non_finite_numbers_in_lineage_details_become_null():
    lineage = Lineage.from_dict({"sources": [], "mode": "delta", "details": {"shortlist": [{"loss": math.inf}],
                                                                             "x": math.nan, "ok": 1.5}})
    assert lineage.details == {"shortlist": [{"loss": None}], "x": None, "ok": 1.5}


def test_push_with_infinite_score_stores_nothing(tmp_path, local_registry):
    folder = write_adapter(tmp_path / "a")
    with pytest.raises(InvalidArgument):
        local_registry.push(folder, name="acme/composed", task="t", source="composed",
                            lineage=Lineage(sources=[SourceWeight("acme/a@1", 1.0)], mode="delta", score=math.inf))
    assert local_registry.ls() == []


# -- 2. ReDoS through rank_pattern / alpha_pattern --------------------------------------------

@pytest.mark.parametrize("key", ["(a+)+b", "(a|aa)*b", "(x*)*y", r"(a)\1", "(?=a)a", "(?i)q_proj", "a{1000}",
                                 "a**"])
@pytest.mark.parametrize("field", ["rank_pattern", "alpha_pattern"])
def test_dangerous_pattern_keys_are_refused(tmp_path, key, field):
    module = "model." + "a" * 24 + "!"
    folder = write_adapter(tmp_path / "a", config_fields={field: {key: 2}},
                           tensors=lora_tensors([module]))
    message = refused(folder, field)
    assert "q_proj" in message  # says what to write instead


def test_pattern_count_and_length_are_capped(tmp_path):
    many = {f"layers.{i}.q_proj": 2 for i in range(5000)}
    refused(write_adapter(tmp_path / "a", config_fields={"rank_pattern": many}), "rank_pattern", "4096")
    regexes = {f"layers\\.{i}\\.(q|v)_proj": 2 for i in range(70)}
    refused(write_adapter(tmp_path / "b", config_fields={"rank_pattern": regexes}), "regular-expression keys")
    refused(write_adapter(tmp_path / "c", config_fields={"rank_pattern": {"q" * 300: 2}}), "256")


def test_pattern_keys_match_as_peft_does(tmp_path):
    from peft.utils.other import get_pattern_key

    modules = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.q_proj"]
    patterns = {"layers.1.self_attn.q_proj": 4, r"layers\.[0-9]+\.self_attn\.v_proj": 3, "q_proj": 1}
    ranks = {m: patterns.get(get_pattern_key(list(patterns), m), 2) for m in modules}
    assert ranks == {modules[0]: 1, modules[1]: 3, modules[2]: 4}
    folder = write_adapter(tmp_path / "a", config_fields={"rank_pattern": patterns},
                           tensors=lora_tensors(modules, ranks=ranks))
    assert read_adapter(folder, digests=False).module_ranks == ranks


def test_a_slow_pattern_stops_at_the_time_budget(tmp_path, monkeypatch):
    import loramgr.hub.adapter as adapter

    monkeypatch.setattr(adapter, "MATCH_BUDGET_S", 0.0)
    folder = write_adapter(tmp_path / "a", config_fields={"rank_pattern": {r"q_pr.*j": 2}})
    refused(folder, "rank_pattern", "to match")


# -- 3. sizes and counts --------------------------------------------------------------------

def test_config_over_one_mebibyte_is_refused(tmp_path):
    text = json.dumps(config(description="x" * (1024 * 1024)))
    refused(write_adapter(tmp_path / "a", config_text=text), "bytes", "at most")


@pytest.mark.parametrize("field", ["modules_to_save", "target_modules"])
def test_long_lists_are_refused(tmp_path, field):
    refused(write_adapter(tmp_path / "a", config_fields={field: [f"m{i}" for i in range(5000)]}), field)


def test_many_modules_to_save_and_tensors_validate(tmp_path):
    # 1,000 names x 1,000 whole-weight tensors took 55 s (one regex per pair); now one set lookup
    # per (start, dot) pair of each tensor path.
    names = [f"extra{i}" for i in range(1000)]
    tensors = lora_tensors()
    tensors.update({f"base_model.model.extra{i}.modules_to_save.default.weight": np.ones(1, dtype=np.float32)
                    for i in range(1000)})
    folder = write_adapter(tmp_path / "a", config_fields={"modules_to_save": names}, tensors=tensors)
    manifest = read_adapter(folder, digests=False)
    assert len(manifest.full_weights) == 1000
    tensors["base_model.model.other.weight"] = np.ones(1, dtype=np.float32)
    refused(write_adapter(tmp_path / "b", config_fields={"modules_to_save": names}, tensors=tensors),
            "base_model.model.other.weight")


def test_modules_to_save_matches_inside_paths_only_at_component_boundaries(tmp_path):
    tensors = lora_tensors()
    tensors["base_model.model.model.score.modules_to_save.default.weight"] = np.ones(2, dtype=np.float32)
    ok = write_adapter(tmp_path / "a", config_fields={"modules_to_save": ["score"]}, tensors=tensors)
    assert [name for name, _ in read_adapter(ok, digests=False).full_weights] == [
        "model.score.modules_to_save.default.weight"]
    refused(write_adapter(tmp_path / "b", config_fields={"modules_to_save": ["core"]}, tensors=tensors), "score")


def test_deeply_nested_config_and_header_are_refused(tmp_path):
    refused(write_adapter(tmp_path / "a", config_text='{"x": ' + "[" * 200_000 + "]" * 200_000 + "}"),
            "adapter_config.json")
    folder = write_adapter(tmp_path / "b")
    write_raw_header(folder / "adapter_model.safetensors", '{"a": ' + "[" * 200_000 + "]" * 200_000 + "}")
    refused(folder, "nested too deeply")


def test_unhashable_dtype_and_huge_shapes_are_refused(tmp_path):
    folder = write_adapter(tmp_path / "a")
    write_raw_header(folder / "adapter_model.safetensors",
                     json.dumps({"x.lora_A.weight": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}), b"\0" * 4)
    refused(folder, "unknown dtype")
    write_raw_header(folder / "adapter_model.safetensors",
                     json.dumps({"x.lora_A.weight": {"dtype": "F32", "shape": [10 ** 300] * 20,
                                                     "data_offsets": [0, 4]}}), b"\0" * 4)
    refused(folder, "needs")


# -- 4. symbolic links and special files ----------------------------------------------------

def test_symlinked_readme_is_refused(tmp_path, local_registry):
    folder = write_adapter(tmp_path / "a")
    os.symlink("/etc/passwd", folder / "README.md")
    with pytest.raises(InvalidAdapter, match="symbolic link"):
        check_regular_files(folder)
    push_refused(local_registry, folder, "symbolic link")


def test_fifo_as_adapter_file_is_refused(tmp_path, local_registry):
    folder = write_adapter(tmp_path / "a")
    os.mkfifo(folder / "examples.jsonl")
    push_refused(local_registry, folder, "not a regular file")


def test_symlinked_weights_are_refused(tmp_path, local_registry):
    real = write_adapter(tmp_path / "real")
    folder = write_adapter(tmp_path / "a")
    (folder / "adapter_model.safetensors").unlink()
    os.symlink(real / "adapter_model.safetensors", folder / "adapter_model.safetensors")
    push_refused(local_registry, folder, "adapter_model.safetensors", "symbolic link")


# -- 7. configs PEFT cannot load ------------------------------------------------------------

@pytest.mark.parametrize("targets", [12345, {"q_proj": True}, [1, 2], True])
def test_target_modules_peft_cannot_read_are_refused(tmp_path, targets):
    refused(write_adapter(tmp_path / "a", config_fields={"target_modules": targets}), "target_modules")


def test_zero_size_tensors_are_refused(tmp_path):
    tensors = lora_tensors()
    tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = np.zeros((2, 0), dtype=np.float32)
    tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"] = np.zeros((0, 2), dtype=np.float32)
    refused(write_adapter(tmp_path / "a", tensors=tensors), "zero-size")


@pytest.mark.parametrize("module, word", [("model.q,proj", "module path"), ("model.q proj", "module path"),
                                          ("model.q\nproj", "not a LoRA")])
def test_module_paths_with_commas_or_spaces_are_refused(tmp_path, module, word):
    # The store keeps target modules as ",q_proj,v_proj,": a comma would split one in two.
    refused(write_adapter(tmp_path / "a", tensors=lora_tensors([module])), word)


def test_a_value_the_store_refuses_is_not_called_contention(tmp_path, local_registry, monkeypatch):
    # NaN alpha used to reach the store (SQLite keeps NaN as NULL: NOT NULL failed), and came back
    # after 8 retries as "too much contention, try again", its blobs orphaned.
    import dataclasses

    from loramgr.hub.adapter import read_adapter as read
    from loramgr.hub.errors import DatabaseError
    import loramgr.hub.push_preparation as preparation

    real = preparation.read_adapter

    def with_nan_alpha(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), alpha=math.nan)

    monkeypatch.setattr(preparation, "read_adapter", with_nan_alpha)
    with pytest.raises(DatabaseError) as info:
        local_registry.push(write_adapter(tmp_path / "a"), name="acme/nan", task="t")
    assert "contention" not in str(info.value) and "refused" in str(info.value)
    assert read(tmp_path / "a", digests=False).alpha == 4
