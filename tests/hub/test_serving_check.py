"""``check_serving`` and ``loramgr check`` on real PEFT adapters (loramgr.hub.serving_check)."""

import dataclasses
import json

import pytest
from click.testing import CliRunner

from loramgr.cli import main
from loramgr.hub import serving_check
from loramgr.hub.adapter import read_adapter
from loramgr.hub.errors import InvalidArgument
from loramgr.hub.serving_check import check_folder, check_serving

from .. import factories


@pytest.fixture(scope="module")
def adapters(llama_dir, t5_dir, tmp_path_factory):
    """Real PEFT adapters, saved by PEFT, built once for the module on first use."""
    made = {}

    def make(name, base=None, **config):
        if name not in made:
            made[name] = factories.make_lora(base or llama_dir, tmp_path_factory.mktemp(name), **config)
        return made[name]

    return make


def config(**fields):
    return {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], **fields}


def test_rank_8_loads_everywhere_without_remarks(adapters):
    path = adapters("r8", r=8)
    for target in ("vllm", "lorax", "peft"):
        report = check_folder(path, target)
        assert report.ok and report.problems == [] and report.notes == [], (target, report)


def test_rank_4_is_fine_for_vllm(llama_lora):
    # vLLM's allowed ranks constrain the server's --max-lora-rank; adapters of lower rank are padded.
    report = check_folder(llama_lora, "vllm")
    assert report.ok and "zero-pads" in report.notes[0]
    [note] = check_folder(llama_lora, "lorax").notes
    assert note == "LoRAX pads rank 4 to 8 for its SGMV kernels (zeros: same outputs)"


def test_vllm_rank_against_max_lora_rank(adapters):
    path = adapters("r24", r=24)
    report = check_folder(path, "vllm")
    assert report.ok and any("--max-lora-rank 32" in note for note in report.notes)
    report = check_folder(path, "vllm", max_lora_rank=16)
    [problem] = report.problems
    assert "rank 24 is above the server's --max-lora-rank 16" in problem
    assert "--max-lora-rank 32" in problem and "--rank 16" in problem
    assert check_folder(path, "vllm", max_lora_rank=32).ok
    with pytest.raises(InvalidArgument, match="one of 1, 8, 16"):
        check_folder(path, "vllm", max_lora_rank=12)
    [problem] = check_serving(config(r=1024), "vllm").problems
    assert "above 512" in problem and "--rank 512" in problem


def test_dora_is_refused_by_vllm_and_lorax(adapters):
    path = adapters("dora", r=8, use_dora=True)
    assert read_adapter(path).use_dora
    [problem] = check_folder(path, "vllm").problems
    assert "DoRA" in problem and "merge_and_unload" in problem
    [problem] = check_folder(path, "lorax").problems
    assert "DoRA magnitude vectors" in problem
    assert check_folder(path, "peft").ok


def test_modules_to_save_is_refused_by_vllm_and_lorax(adapters):
    path = adapters("saved", r=8, modules_to_save=["lm_head"])
    [problem] = check_folder(path, "vllm").problems
    assert "modules_to_save: lm_head" in problem
    [problem] = check_folder(path, "lorax").problems
    assert "modules_to_save: lm_head" in problem
    assert check_folder(path, "peft").ok
    # vLLM accepts the heads of classification models.
    assert check_serving(config(modules_to_save=["score"], task_type="SEQ_CLS"), "vllm").ok


def test_lora_biases_are_refused(adapters):
    path = adapters("bias", r=8, lora_bias=True)
    assert "lora_bias" in check_folder(path, "vllm").problems[0]
    assert "bias terms" in check_folder(path, "lorax").problems[0]
    assert "bias='all'" in check_serving(config(bias="all"), "vllm").problems[0]


def test_t5_modules_are_not_served_by_vllm_or_lorax(adapters, t5_dir):
    path = adapters("t5", base=t5_dir, r=8)
    [problem] = check_folder(path, "vllm").problems
    assert "(q, v)" in problem and "q_proj" in problem
    assert "(q, v)" in check_folder(path, "lorax").problems[0]
    assert check_folder(path, "peft").ok


def test_per_module_ranks(adapters):
    path = adapters("pattern", r=8, rank_pattern={"v_proj": 4}, alpha_pattern={"v_proj": 2})
    assert read_adapter(path).module_ranks["model.layers.0.self_attn.v_proj"] == 4
    report = check_folder(path, "vllm")
    assert report.ok and "rank_pattern" in report.notes[0]
    [problem] = check_folder(path, "lorax").problems
    assert "rank_pattern/alpha_pattern" in problem


def test_embedding_lora(adapters):
    path = adapters("embed", r=8, targets=["embed_tokens", "q_proj"])
    report = check_folder(path, "vllm")
    assert report.ok and any("embedding_modules" in note for note in report.notes)
    assert "embedding LoRA" in check_folder(path, "lorax").problems[0]


def test_dtypes_for_vllm(llama_lora):
    manifest = read_adapter(llama_lora)
    assert check_serving(dataclasses.replace(manifest, dtype="bfloat16"), "vllm").ok
    [problem] = check_serving(dataclasses.replace(manifest, dtype="float8_e4m3fn"), "vllm").problems
    assert "float8_e4m3fn" in problem and "bfloat16" in problem


def test_peft_config_keys_against_the_installed_peft(llama_lora, monkeypatch):
    manifest = read_adapter(llama_lora)
    assert check_serving(manifest, "peft").notes == [
        "no adapter_config.json given: config keys not checked against the installed PEFT"]
    report = check_serving(manifest, "peft", config={**config(), "future_knob": None, "peft_version": "99.0"})
    assert report.ok and "future_knob" in report.notes[0] and "99.0" in report.notes[1]
    monkeypatch.setattr(serving_check, "PEFT_BEHAVIOUR_KEYS", ("use_future_trick",))
    [problem] = check_serving(manifest, "peft", config={**config(), "use_future_trick": True}).problems
    assert "use_future_trick" in problem and "pip install -U peft" in problem


def test_bad_arguments():
    with pytest.raises(InvalidArgument, match="one of vllm, lorax, peft"):
        check_serving(config(), "tgi")
    with pytest.raises(InvalidArgument, match="not a LoRA"):
        check_serving({"peft_type": "IA3"}, "vllm")


# ---------------------------------------------------------------- the command


@pytest.fixture
def run(home):
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_check_command(run, llama_lora, adapters):
    assert run("push", llama_lora, "--name", "acme/small", "--task", "t").exit_code == 0
    assert run("push", adapters("dora", r=8, use_dora=True), "--name", "acme/dora", "--task", "t").exit_code == 0

    result = run("check", "acme/small", "--for", "vllm")
    assert result.exit_code == 0 and result.stdout.splitlines()[-1] == "acme/small@1: loads in vllm"

    result = run("check", "acme/dora:latest", "--for", "vllm")
    assert result.exit_code == 1
    assert result.stderr.startswith("problem: uses DoRA") and len(result.stderr.splitlines()) == 1
    assert "acme/dora@1: will not load (1 problem) in vllm" in result.stdout

    result = run("check", "acme/dora", "--for", "lorax", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["ref"], report["target"], report["ok"]) == ("acme/dora@1", "lorax", False)
    assert run("check", "acme/dora", "--for", "peft").exit_code == 0

    assert run("check", llama_lora, "--for", "vllm", "--max-lora-rank", "8").exit_code == 0  # a folder
    assert run("check", "acme/small", "--for", "vllm", "--max-lora-rank", "12").exit_code == 2
    assert run("check", "acme/small", "--for", "tgi").exit_code == 2
    result = run("check", "acme/none", "--for", "vllm")
    assert result.exit_code == 1 and result.stderr.startswith("Error: no adapter named acme/none")
