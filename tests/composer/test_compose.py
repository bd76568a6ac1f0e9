"""compose end to end: hub candidates, search, export, registration with lineage, CLI errors."""

import json

import pytest
import torch
from click.testing import CliRunner

from loramgr.cli import main
from loramgr.composer.compose import compose
from loramgr.composer.examples import Example
from loramgr.composer.objective import few_shot_loss, tokenize_examples
from loramgr.hub.registry import Registry
from loramgr.hub.settings import Settings

from .. import factories

ROWS_A = [("abc", "cba"), ("dog", "god"), ("xyz", "zyx"), ("fox", "xof"), ("lazy", "yzal"), ("quick", "kciuq")]
ROWS_B = [("abc", "ABC"), ("dog", "DOG"), ("xyz", "XYZ"), ("fox", "FOX"), ("lazy", "LAZY"), ("quick", "QUICK")]


@pytest.fixture
def registry(home):
    registry = Registry(Settings.load(home=str(home)))
    yield registry
    registry.close()


def register_pool(registry, base_dir, tmp_path, *, ranks=(4, 8)):
    for index, (task, rows) in enumerate((("reverse", ROWS_A), ("upper", ROWS_B))):
        adapter = factories.make_lora(base_dir, tmp_path / task, r=ranks[index], seed=index, init_scale=0.3)
        examples = factories.write_examples(tmp_path / f"{task}.jsonl", rows)
        registry.push(adapter, name=f"lab/{task}", task=task, examples=examples)


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_exported_adapter_reproduces_the_searched_loss(family, registry, tmp_path, request):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    base_dir = request.getfixturevalue(f"{family}_dir")
    register_pool(registry, base_dir, tmp_path)
    examples = [Example(i, o) for i, o in ROWS_A[:3] + ROWS_B[:3]]
    result = compose(str(base_dir), ["lab/reverse", "lab/upper"], examples, shots=None, budget=12, seed=1,
                     output=tmp_path / "out", name="lab/composed", registry=registry)
    # the default search: the screen (plain sum, each module alone), then 12 gradient steps
    assert result.search.evaluations == 3 + 12 and len(result.weights) == 2

    auto = AutoModelForSeq2SeqLM if family == "t5" else AutoModelForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    loaded = PeftModel.from_pretrained(auto.from_pretrained(base_dir), tmp_path / "out").eval()
    batch = tokenize_examples(loaded, tokenizer, examples)
    assert few_shot_loss(loaded, batch) == pytest.approx(result.loss, abs=1e-4)
    assert result.loss <= result.base_loss

    version = registry.show("lab/composed")
    # The examples were given, not drawn from the sources' tasks: the result's task is not theirs.
    assert version.source == "composed" and version.task == "composed"
    assert [s.ref for s in version.lineage.sources] == ["lab/reverse@1", "lab/upper@1"]
    assert [s.weight for s in version.lineage.sources] == pytest.approx(list(result.weights))
    assert version.lineage.seed == 1 and version.lineage.details["options"]["budget"] == 12
    assert version.lineage.examples_digest == result.examples_digest


def test_same_seed_same_weights_and_bytes(registry, llama_dir, tmp_path):
    register_pool(registry, llama_dir, tmp_path)
    examples = [{"input": i, "output": o} for i, o in ROWS_A]
    runs = [compose(str(llama_dir), ["lab/reverse", "lab/upper"], examples, shots=4, budget=8, seed=7,
                    output=tmp_path / f"run{k}", registry=registry) for k in range(2)]
    assert runs[0].weights == runs[1].weights
    for name in ("adapter_model.safetensors", "adapter_config.json", "README.md"):
        assert (tmp_path / "run0" / name).read_bytes() == (tmp_path / "run1" / name).read_bytes()


def test_screen_top_scores_alone_only_the_steepest_candidates(llama_dir, tmp_path):
    folders = [factories.make_lora(llama_dir, tmp_path / f"m{seed}", seed=seed, init_scale=0.3) for seed in range(5)]
    examples = [Example(i, o) for i, o in ROWS_A]
    result = compose(str(llama_dir), [str(f) for f in folders], examples, shots=None, budget=2, screen_top=1,
                     output=tmp_path / "out")
    screened = [e.weights for e in result.search.history[:2]]
    assert screened[0] == (1.0,) * 5 and sum(screened[1]) == 1.0 and max(screened[1]) == 1.0
    assert result.search.evaluations == 1 + 1 + 2  # the plain sum, one alone, 2 steps
    assert result.lineage().details["options"]["screen_top"] == 1
    for top, alone in ((3, 3), (None, 5)):  # the default screens every one
        run = compose(str(llama_dir), [str(f) for f in folders], examples, shots=None, budget=2, screen_top=top)
        assert run.search.evaluations == 1 + alone + 2


def test_shots_per_step_back_propagates_a_group_and_scores_every_example_once_a_pass(llama_dir, tmp_path):
    folders = [factories.make_lora(llama_dir, tmp_path / f"m{seed}", seed=seed, init_scale=0.3) for seed in range(3)]
    examples = [Example(i, o) for i, o in ROWS_A[:4]]  # groups of 2: 2 steps a pass
    result = compose(str(llama_dir), [str(f) for f in folders], examples, shots=None, budget=6, shots_per_step=2,
                     output=tmp_path / "out")
    assert result.search.evaluations == 1 + 3 + 6 // 2  # the plain sum, 3 alone, one full forward per pass
    assert result.lineage().details["options"]["shots_per_step"] == 2
    every = compose(str(llama_dir), [str(f) for f in folders], examples, shots=None, budget=6)
    assert every.search.evaluations == 1 + 3 + 6 and every.lineage().details["options"]["shots_per_step"] is None


@pytest.fixture
def cli(home):
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_compose_from_tasks_uses_registered_examples(cli, registry, llama_dir, tmp_path):
    register_pool(registry, llama_dir, tmp_path)
    result = cli("compose", "--tasks", "reverse,upper", "--model", llama_dir, "--shots", "2", "--budget", "6",
                 "--name", "lab/ru", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [m["source"] for m in data["modules"]] == ["lab/reverse@1", "lab/upper@1"]
    assert data["examples"] == 4 and 3 < data["evaluations"] <= 3 + 6  # the screen, then up to 6 steps
    assert data["version"]["ref"] == "lab/ru@1"
    stochastic = json.loads(cli("compose", "--tasks", "reverse,upper", "--model", llama_dir, "--shots", "2",
                                "--budget", "4", "--shots-per-step", "1", "--json").stdout)
    assert stochastic["examples"] == 4 and stochastic["evaluations"] == 3 + 4 // 4  # 1 example a step: one pass
    shown = cli("show", "lab/ru")
    assert "prompt format plain" in shown.stdout and "lab/reverse@1" in shown.stdout
    table = cli("compose", "--tasks", "reverse,upper", "--model", llama_dir, "--budget", "3", "-o", tmp_path / "o")
    assert "lab/reverse@1" in table.stdout and "composed" in table.stdout
    assert (tmp_path / "o" / "adapter_model.safetensors").exists()


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output
    return lines[0]


def test_cli_compose_errors_register_nothing(cli, registry, llama_dir, t5_dir, tmp_path):
    register_pool(registry, llama_dir, tmp_path)
    run = lambda *args: cli("compose", "--model", llama_dir, "--budget", "2", "--name", "lab/x", *args)  # noqa: E731
    assert "no adapters registered for task nope" in error_line(run("--tasks", "reverse,nope"))
    assert "--mode delta" in error_line(run("--tasks", "reverse,upper", "--mode", "lorahub"))
    assert "only 6 examples" in error_line(run("--tasks", "reverse", "--shots", "7"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "output": "b"}\n{"input": 3}\n')
    assert "line 2" in error_line(run("--tasks", "reverse", "--examples", bad, "--shots", "1"))
    assert run("--tasks", "reverse", "--budget", "0").exit_code == 2  # a usage error: click's range
    assert "shots_per_step needs search 'gradient'" in error_line(
        run("--tasks", "reverse,upper", "--optimizer", "NGOpt", "--shots-per-step", "1"))
    other = factories.make_lora(t5_dir, tmp_path / "t5lora")
    registry.push(other, name="lab/t5-reverse", task="reverse")
    assert "different base models" in error_line(run("--tasks", "reverse,upper"))
    assert cli("compose", "--budget", "2").exit_code == 2  # neither --tasks nor --adapters
    assert [v.ref for v in registry.search(source="composed")] == []


def test_cli_compose_max_rank_recompresses_to_fit(cli, registry, llama_dir, tmp_path):
    register_pool(registry, llama_dir, tmp_path, ranks=(8, 16))
    result = cli("compose", "--tasks", "reverse,upper", "--model", llama_dir, "--budget", "4", "--max-rank", "8",
                 "-o", tmp_path / "small", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    config = json.loads((tmp_path / "small" / "adapter_config.json").read_text())
    assert data["rank"] == config["r"] == 8
    assert data["truncation_error"] is not None  # 8 + 16 re-compressed to 8: always reported
    assert cli("check", tmp_path / "small", "--for", "vllm").exit_code == 0


def test_cli_lorahubs_own_procedure_is_still_one_set_of_flags_away(cli, registry, llama_dir, tmp_path):
    # Naming an optimizer picks the nevergrad search, whatever the default search is (the pool's ranks
    # differ, so the mode stays delta; ComposeOptions' tests cover --mode lorahub).
    register_pool(registry, llama_dir, tmp_path)
    result = cli("compose", "--tasks", "reverse,upper", "--model", llama_dir, "--shots", "2", "--budget", "5",
                 "--optimizer", "NGOpt", "--no-screen", "--workers", "1", "--name", "lab/lh",
                 "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["evaluations"] == 5  # no screen, no early stop: the whole budget
    options = registry.show("lab/lh").lineage.details["options"]
    assert (options["search"], options["optimizer"], options["screen"], options["patience"]) == \
        ("nevergrad", "NGOpt", False, 0)
    assert (options["granularity"], options["bounds"], options["l1"]) == ("module", [-1.5, 1.5], 0.05)
    refused = CliRunner().invoke(main, ["compose", "--tasks", "reverse", "--model", str(llama_dir),
                                        "--search", "gradient", "--optimizer", "CMA"])
    assert refused.exit_code != 0 and "nevergrad setting" in refused.output
