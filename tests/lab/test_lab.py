"""The offline lab: it builds, is reproducible and cached, its modules learn, its helpers work.

``small_lab`` (tests/conftest.py) builds the small lab once per session, in this process.
"""

import copy
import json
import time

import pytest

from loramgr.examples.lab.build import LAB_VERSION, build_lab
from loramgr.examples.lab.evaluate import exact_match, generate, read_examples
from loramgr.examples.lab.jobs import load_base
from loramgr.examples.lab.manifest import MANIFEST, Lab, LabNotBuilt
from loramgr.examples.lab.models import BASE_IDS
from loramgr.examples.lab.targets import TARGETS, per_class, union
from loramgr.examples.lab.tasks import TASKS, payload_split, sample_examples, stream_rng
from loramgr.examples.lab.train import encode, mean_loss
from loramgr.hub.errors import InvalidArgument


def _files(root):
    # Oracles of the small lab are trained on first use, by whichever test gets there first.
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock" and "oracles" not in p.parts}


def _with_adapter(lab, family, path):
    from peft import PeftModel

    _, base = load_base(lab.base_dir(family))
    return PeftModel.from_pretrained(copy.deepcopy(base), path).eval()


def test_small_lab_has_both_families_modules_examples_and_targets(small_lab):
    lab = Lab.load(small_lab.root)
    assert lab == small_lab and (lab.lab_version, lab.size, lab.seed) == (LAB_VERSION, "small", 0)
    for family in ("t5", "llama"):
        assert (lab.base_dir(family) / "config.json").is_file()
        assert (lab.base_dir(family) / "tokenizer.json").is_file()
        assert lab.modules(family) and lab.targets(family)
        for module in lab.modules(family):
            config = json.loads((module.path / "adapter_config.json").read_text())
            # A stable id, not the folder the build happened to use.
            assert config["base_model_name_or_path"] == BASE_IDS[family] == lab.base_id(family)
            assert config["r"] == module.rank and sorted(config["target_modules"]) == sorted(module.targets)
            rows = read_examples(module.examples_path)
            assert len(rows) == 20 and all(i.startswith(TASKS[module.task].prefix) for i, _ in rows)
        for target in lab.targets(family):
            few, test = read_examples(target.few_shot), read_examples(target.test)
            assert len(few) == 10 and len(test) == 40
            assert not {i for i, _ in few} & {i for i, _ in test}
    assert {t.kind for t in lab.targets("t5")} == {1, 2, 3}


def test_a_second_build_into_the_same_root_is_a_cache_hit(small_lab):
    stamp = (small_lab.root / MANIFEST).stat().st_mtime_ns
    started = time.perf_counter()
    again = build_lab(small_lab.root, size="small", seed=0)
    assert time.perf_counter() - started < 2.0
    assert again == small_lab and (small_lab.root / MANIFEST).stat().st_mtime_ns == stamp


def test_builds_are_bit_for_bit_reproducible_in_worker_processes_too(small_lab, tmp_path):
    # The session's lab was built in this process; this one in two worker processes.
    other = build_lab(tmp_path / "again", size="small", seed=0, workers=2)
    mine, theirs = _files(small_lab.root), _files(other.root)
    assert sorted(mine) == sorted(theirs)
    assert any(name.endswith("adapter_model.safetensors") for name in mine)
    assert [name for name in mine if mine[name] != theirs[name]] == []


def test_every_module_lowers_the_loss_of_its_own_task(small_lab):
    for family in ("t5", "llama"):
        tokenizer, base = load_base(small_lab.base_dir(family))
        for module in small_lab.modules(family):
            held_out = sample_examples(TASKS[module.task], stream_rng(1, "test-loss", module.task), 64, "test")
            data = encode(family, tokenizer, held_out)
            before, after = mean_loss(base, data), mean_loss(_with_adapter(small_lab, family, module.path), data)
            assert after < 0.5 * before, (family, module.task, before, after)


def test_exact_match_scores_greedy_generations_for_both_families(small_lab):
    for family in ("t5", "llama"):
        tokenizer, base = load_base(small_lab.base_dir(family))
        module = small_lab.modules(family)[0]
        model = _with_adapter(small_lab, family, module.path)
        inputs = [i for i, _ in read_examples(module.examples_path)]
        predicted = generate(model, tokenizer, inputs, max_new_tokens=12, batch_size=7)
        assert exact_match(model, tokenizer, list(zip(inputs, predicted)), max_new_tokens=12) == 1.0
        wrong = [{"input": i, "output": p + "x"} for i, p in zip(inputs, predicted)]
        assert exact_match(model, tokenizer, wrong) == 0.0
        assert exact_match(model, tokenizer, []) == 0.0
        assert tokenizer.padding_side == "right"  # restored after left-padded causal generation
        # The trained module beats the base model on its own task.
        rows = read_examples(module.examples_path)
        assert exact_match(model, tokenizer, rows) > exact_match(base, tokenizer, rows)


def test_oracles_of_the_small_lab_are_trained_on_first_use_and_kept(small_lab):
    target = small_lab.target("t5", "k2-l2d+low")
    path = small_lab.oracle_dir("t5", target)
    assert (path / "adapter_model.safetensors").is_file()
    stamp = (path / "adapter_model.safetensors").stat().st_mtime_ns
    assert small_lab.oracle_dir("t5", "k2-l2d+low") == path
    assert (path / "adapter_model.safetensors").stat().st_mtime_ns == stamp


def test_register_lab_pushes_every_module_with_its_examples(small_lab, home):
    from loramgr import Hub
    from loramgr.examples.lab.registry import register_lab

    hub = Hub(home)
    versions = register_lab(small_lab, hub, family="llama")
    assert len(versions) == len(small_lab.modules("llama"))
    found = hub.search(base=BASE_IDS["llama"])
    assert sorted(v.task for v in found) == sorted(m.task for m in small_lab.modules("llama"))


def test_errors_name_what_is_wrong(tmp_path, small_lab):
    with pytest.raises(LabNotBuilt, match="no lab at"):
        Lab.load(tmp_path)
    with pytest.raises(InvalidArgument, match="unknown lab size"):
        build_lab(tmp_path, size="huge")
    with pytest.raises(InvalidArgument, match="no family"):
        small_lab.modules("gpt")
    with pytest.raises(InvalidArgument, match="no target"):
        small_lab.target("t5", "nope")


def test_targets_are_defined_as_documented():
    kind3 = per_class("l2d", "low", "mixed", "")
    rng = stream_rng(0, "doc")
    for _ in range(50):
        source, output = kind3.sample(rng, "train")
        payload = source.split(" ", 1)[1]
        assert source.startswith("l2d:low: ") and len(output) == len(payload)
        assert output == "".join(str("abcdefghij".index(c)) if c.islower() else c.lower() for c in payload)
    mixed = union("rev", "up").examples(stream_rng(0, "u"), 100, "test")
    assert {i.split(":")[0] for i, _ in mixed} == {"rev", "up"}
    assert all(payload_split(i.split(" ", 1)[1]) == "test" for i, _ in mixed)
    assert {t.kind for t in TARGETS.values()} == {1, 2, 3}
