"""The registry service against a real SQLite file and a real PostgreSQL server, with its blobs
in a local folder and in S3 (moto's emulator; with SQLite only, see conftest.py)."""

import filecmp
import hashlib
import json
import shutil

import pytest
import torch

from loramgr.hub.errors import (AdapterNotFound, DestinationNotEmpty, IntegrityError, InvalidAdapter,
                                InvalidArgument, InvalidName, PickleRefused)
from loramgr.hub.records import Lineage, SourceWeight

from .. import factories
from .conftest import BLOB_STORES

pytestmark = pytest.mark.parametrize("blob_store", BLOB_STORES, indirect=True)


def rot(registry, digest: str) -> None:
    """Change a stored blob's bytes behind the registry's back, in whichever store it is."""
    path = registry.blobs.path(digest)
    if path is None:  # S3: overwrite the object
        registry.blobs.client.put_object(Bucket=registry.blobs.bucket, Key=registry.blobs.key(digest), Body=b"rot")
        return
    path.chmod(0o644)  # a pulled snapshot may have made it read-only
    path.write_bytes(b"rot" + path.read_bytes())


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_push_pull_is_byte_identical_and_peft_loads_it(registry, llama_dir, llama_lora, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    version = registry.push(llama_lora, name="acme/sentiment", task="sentiment")
    out = registry.pull("acme/sentiment", output=tmp_path / "pulled")
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        assert filecmp.cmp(llama_lora / name, out / name, shallow=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in version.files)

    ids = torch.randint(4, 90, (2, 10), generator=torch.Generator().manual_seed(0))
    original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama_dir), llama_lora).eval()
    pulled = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama_dir), out).eval()
    base = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    assert torch.equal(logits(original, ids), logits(pulled, ids))
    assert not torch.allclose(logits(base, ids), logits(pulled, ids))  # the adapter does something


def test_manifest_fields_are_indexed(registry, llama_lora):
    version = registry.push(llama_lora, name="acme/a", task="sentiment", description="Movie reviews")
    assert (version.rank, version.alpha, version.target_modules) == (4, 8.0, ["q_proj", "v_proj"])
    assert version.task_type == "CAUSAL_LM" and version.dtype == "float32" and version.source == "pushed"
    assert version.base_model == json.loads((llama_lora / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert version.param_count == 2 * 2 * (4 * 32) + 2 * (4 * 32 + 16 * 4)  # 2 layers: q (32->32), v (32->16)


def test_versions_are_numbered_and_refs_resolve(registry, llama_lora):
    v1 = registry.push(llama_lora, name="acme/a", task="t", tags=["stable"])
    v2 = registry.push(llama_lora, name="acme/a", task="t")
    v3 = registry.push(llama_lora, name="acme/a", task="t")
    assert [v1.number, v2.number, v3.number] == [1, 2, 3]
    assert registry.show("acme/a").number == 3
    assert registry.show("acme/a:latest").number == 3
    assert registry.show("acme/a@2").number == 2
    assert registry.show("acme/a:stable").number == 1
    assert registry.show("acme/a@1").tags == ["stable"]
    registry.tag("acme/a@2", "stable")
    assert registry.show("acme/a:stable").number == 2
    assert [v.number for v in registry.versions("acme/a")] == [3, 2, 1]


def test_identical_content_is_stored_once(registry, llama_lora):
    first = registry.push(llama_lora, name="acme/a", task="t")
    second = registry.push(llama_lora, name="acme/b", task="t")
    assert first.digest == second.digest
    assert len(list(registry.blobs.digests())) == len(first.files)


def test_rm_moves_latest_and_numbers_are_not_reused(registry, llama_lora):
    registry.push(llama_lora, name="acme/a", task="t")
    registry.push(llama_lora, name="acme/a", task="t")
    registry.rm("acme/a@2")
    assert registry.show("acme/a").number == 1
    assert registry.push(llama_lora, name="acme/a", task="t").number == 3
    with pytest.raises(AdapterNotFound):
        registry.show("acme/a@2")


def test_search_filters(registry, llama_dir, tmp_path):
    r8 = factories.make_lora(llama_dir, tmp_path / "r8", r=8, targets=["q_proj", "k_proj"])
    r16 = factories.make_lora(llama_dir, tmp_path / "r16", r=16, targets=["q_proj"])
    registry.push(r8, name="acme/eight", task="sql", description="Text to SQL for Postgres")
    registry.push(r16, name="acme/sixteen", task="sql")
    registry.push(r16, name="team/chat", task="chat", base="org/other-base")
    refs = lambda **kw: [v.ref for v in registry.search(**kw)]  # noqa: E731
    assert refs(task="sql") == ["acme/sixteen@1", "acme/eight@1"]  # newest first
    assert refs(rank=8) == ["acme/eight@1"]
    assert refs(max_rank=8) == ["acme/eight@1"]
    assert refs(min_rank=9, task="sql") == ["acme/sixteen@1"]
    assert refs(target="k_proj") == ["acme/eight@1"]
    assert refs(base="org/other-base") == ["team/chat@1"]
    assert refs(query="postgres") == ["acme/eight@1"]
    assert refs(query="100%") == []
    assert refs(task=["sql", "chat"], limit=2) == ["team/chat@1", "acme/sixteen@1"]


def test_search_returns_newest_matching_version_per_adapter(registry, llama_dir, tmp_path):
    r8 = factories.make_lora(llama_dir, tmp_path / "r8", r=8)
    r16 = factories.make_lora(llama_dir, tmp_path / "r16", r=16)
    registry.push(r8, name="acme/a", task="t")
    registry.push(r16, name="acme/a", task="t")
    assert [v.ref for v in registry.search(task="t")] == ["acme/a@2"]
    assert [v.ref for v in registry.search(rank=8)] == ["acme/a@1"]
    assert [v.ref for v in registry.search(task="t", all_versions=True)] == ["acme/a@2", "acme/a@1"]


def test_examples_are_registered_with_the_version(registry, llama_lora, tmp_path):
    examples = factories.write_examples(tmp_path / "ex.jsonl", [("abc", "cba"), ("xy", "yx")])
    version = registry.push(llama_lora, name="acme/rev", task="reverse", examples=examples)
    assert "examples.jsonl" in [f.name for f in version.files]
    assert registry.read_file("acme/rev", "examples.jsonl") == examples.read_bytes()
    assert filecmp.cmp(examples, registry.pull("acme/rev", output=tmp_path / "out") / "examples.jsonl",
                       shallow=False)


def test_lineage_is_stored(registry, llama_lora):
    source = registry.push(llama_lora, name="acme/a", task="t")
    lineage = Lineage(sources=[SourceWeight(source.ref, 0.75)], mode="delta", score=1.25, seed=3,
                      examples_digest="e" * 64, details={"budget": 40})
    composed = registry.push(llama_lora, name="acme/c", task="t", source="composed", lineage=lineage)
    shown = registry.show(composed.ref)
    assert shown.source == "composed"
    assert shown.lineage.sources[0].ref == "acme/a@1" and shown.lineage.sources[0].weight == 0.75
    assert shown.lineage.sources[0].digest == source.digest
    assert (shown.lineage.mode, shown.lineage.score, shown.lineage.seed) == ("delta", 1.25, 3)
    assert shown.lineage.details == {"budget": 40}
    assert [v.ref for v in registry.search(source="composed")] == ["acme/c@1"]


def test_pull_without_output_uses_the_snapshot_cache(registry, llama_lora):
    registry.push(llama_lora, name="acme/a", task="t")
    first = registry.pull("acme/a")
    mtime = (first / "adapter_model.safetensors").stat().st_mtime_ns
    assert registry.pull("acme/a@1") == first
    assert (first / "adapter_model.safetensors").stat().st_mtime_ns == mtime


def test_pull_refuses_a_non_empty_folder_without_force(registry, llama_lora, tmp_path):
    registry.push(llama_lora, name="acme/a", task="t")
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(DestinationNotEmpty, match="--force"):
        registry.pull("acme/a", output=target)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    registry.pull("acme/a", output=target, force=True)
    assert (target / "keep.txt").read_text() == "mine" and (target / "adapter_model.safetensors").exists()


def test_verify_and_gc(registry, llama_lora, llama_dir, tmp_path):
    other = factories.make_lora(llama_dir, tmp_path / "other", r=8)
    kept = registry.push(llama_lora, name="acme/a", task="t")
    gone = registry.push(other, name="acme/b", task="t")
    assert registry.verify().ok
    registry.rm(gone.ref)
    assert registry.gc().removed_blobs == 0  # too recent: a push could be committing them
    report = registry.gc(grace_seconds=0)
    only_gone = {f.digest for f in gone.files} - {f.digest for f in kept.files}
    assert report.removed_blobs == len(only_gone)
    assert set(registry.blobs.digests()) == {f.digest for f in kept.files}

    weights = next(f for f in kept.files if f.name == "adapter_model.safetensors")
    rot(registry, weights.digest)
    report = registry.verify()
    assert not report.ok and report.problems[0]["problem"] == "corrupt"
    registry.blobs.delete(weights.digest)
    assert registry.verify().problems == [{"ref": "acme/a@1", "file": "adapter_model.safetensors",
                                          "digest": weights.digest, "problem": "missing"}]
    with pytest.raises(IntegrityError, match="missing"):
        registry.pull("acme/a", output=tmp_path / "pulled")


def test_register_uploaded_blobs(registry, llama_lora):
    # What the server does: blobs arrive with their digests first, then the version is registered.
    files = {}
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        data = (llama_lora / name).read_bytes()
        files[name], _ = registry.blobs.put_chunks([data], expected_digest=hashlib.sha256(data).hexdigest())
    version = registry.push_stored(files, name="acme/up", task="t")
    assert {f.name: f.digest for f in version.files} == files and registry.verify(version.ref).ok


BAD_NAMES = ["acme", "acme/../x", "../acme/x", "acme/x/y", "acme/x\x00", "acme/x\n", "acme/ x", "acme/", "/x", "a" * 65 + "/x"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_before_anything_is_written(registry, llama_lora, name):
    with pytest.raises(InvalidName):
        registry.push(llama_lora, name=name, task="t")
    assert registry.ls() == [] and list(registry.blobs.digests()) == []


def test_unknown_refs(registry, llama_lora):
    registry.push(llama_lora, name="acme/a", task="t")
    for ref in ("acme/nope", "acme/a@7", "acme/a:nope"):
        with pytest.raises(AdapterNotFound):
            registry.pull(ref)
    for ref in ("acme/a@0", "acme/a@x", "acme/a:../x"):
        with pytest.raises(InvalidName):
            registry.show(ref)


def test_invalid_adapters_write_nothing(registry, llama_lora, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(llama_lora, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(InvalidAdapter):
        registry.push(broken, name="acme/a", task="t")
    with pytest.raises(InvalidAdapter):
        registry.push(tmp_path / "missing", name="acme/a", task="t")
    bad_examples = tmp_path / "bad.jsonl"
    bad_examples.write_text('{"input": "a", "output": "b"}\nnot json\n')
    with pytest.raises(InvalidArgument, match="line 2"):
        registry.push(llama_lora, name="acme/a", task="t", examples=bad_examples)
    assert registry.ls() == [] and list(registry.blobs.digests()) == []


def test_pickled_adapters_need_convert_pickle(registry, llama_lora, tmp_path):
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(llama_lora / "adapter_config.json", pickled)
    tensors = load_file(llama_lora / "adapter_model.safetensors")
    torch.save(tensors, pickled / "adapter_model.bin")
    with pytest.raises(PickleRefused, match="--convert-pickle"):
        registry.push(pickled, name="acme/a", task="t")
    version = registry.push(pickled, name="acme/a", task="t", convert_pickle=True)
    assert "adapter_model.safetensors" in [f.name for f in version.files]
    assert "adapter_model.bin" not in [f.name for f in version.files]
    pulled = load_file(registry.pull("acme/a") / "adapter_model.safetensors")
    assert pulled.keys() == tensors.keys() and all(torch.equal(pulled[k], tensors[k]) for k in tensors)


def test_the_store_is_the_one_asked_for(registry, blob_store):
    assert type(registry.blobs).__name__ == {"local": "LocalBlobStore", "s3": "S3BlobStore"}[blob_store]
