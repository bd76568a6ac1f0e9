"""One options object for compose, the library doing the CLI's whole job, and a composition run
again from its lineage alone."""

import json

import pytest
from click.testing import CliRunner

from loramgr.cli import main
from loramgr.composer import choices, gradient, injection, objective, search, shortlist
from loramgr.composer.compose import REGISTERED, compose, compose_again
from loramgr.composer.errors import CompositionError, ExamplesError
from loramgr.composer.options import ComposeOptions
from loramgr.hub.errors import InvalidAdapter

from .. import factories
from .test_compose import ROWS_A, ROWS_B, register_pool, registry  # noqa: F401  (fixture)


def test_the_light_constants_match_the_modules_that_implement_them():
    assert set(choices.MODES) == set(injection.MODES)
    assert choices.GRANULARITIES == gradient.GRANULARITIES
    assert choices.DEFAULT_OPTIMIZER == search.DEFAULT_OPTIMIZER
    assert choices.DEFAULT_BOUNDS == search.DEFAULT_BOUNDS
    assert choices.DEFAULT_L1 == objective.DEFAULT_L1
    assert choices.DEFAULT_LEARNING_RATE == gradient.DEFAULT_LEARNING_RATE
    assert choices.DEFAULT_SHORTLIST == shortlist.DEFAULT_K


@pytest.mark.parametrize("bad", [dict(budget=0), dict(workers=0), dict(mode="sum"), dict(search="grid"),
                                 dict(prompt_format="xml"), dict(l1=-1.0), dict(l1=float("nan")),
                                 dict(bounds=(0.5, 1.0)), dict(search="nevergrad", granularity="block"),
                                 dict(optimizer="CMA", granularity="block"), dict(search="gradient", optimizer="CMA"),
                                 dict(shots=0), dict(seed=-1), dict(budget=True), dict(patience=-1),
                                 dict(screen="yes"), dict(screen_top=-1), dict(search="nevergrad", screen_top=3),
                                 dict(mode="lorahub", screen_top=2), dict(shots_per_step=0),
                                 dict(search="nevergrad", shots_per_step=1)])
def test_options_are_validated_once_at_the_boundary(bad):
    with pytest.raises(CompositionError):
        ComposeOptions(**bad)


def test_each_search_gets_its_own_defaults_and_naming_an_optimizer_picks_nevergrad():
    default = ComposeOptions()
    assert (default.search, default.granularity, default.budget, default.patience) == ("gradient", "block", 20, 0)
    assert default.stop_after is None and ComposeOptions(patience=None) == default
    faithful = ComposeOptions(optimizer="NGOpt", screen=False, workers=1, mode="lorahub")  # LoraHub's procedure
    assert (faithful.search, faithful.granularity, faithful.budget, faithful.patience) == ("nevergrad", "module", 40, 0)
    assert faithful.stop_after is None  # the whole budget
    assert ComposeOptions(search="nevergrad") == ComposeOptions(optimizer="NGOpt")
    assert ComposeOptions(search="gradient", patience=4).stop_after == 4
    assert ComposeOptions(budget=7).budget == 7 and ComposeOptions(search="nevergrad", patience=3).patience == 3


def test_a_lineage_written_before_the_default_changed_runs_as_it_ran_then():
    # what to_dict() wrote when nevergrad was the default: patience None meant "spend the budget"
    earlier = {"shots": 5, "budget": 40, "mode": "delta", "search": "nevergrad", "optimizer": "NGOpt", "workers": 1,
               "granularity": "module", "patience": None, "seed": 3}
    assert ComposeOptions.from_dict(earlier) == ComposeOptions(search="nevergrad", seed=3)
    assert ComposeOptions.from_dict(earlier | {"shots": None}).shots is None  # None there still means all given
    gradient = earlier | {"search": "gradient", "budget": 20, "granularity": "block"}
    assert ComposeOptions.from_dict(gradient).patience == 0  # no early stop, as then
    assert ComposeOptions.from_dict({"shots": 2}).search == "nevergrad"  # from before there was a choice
    new = ComposeOptions(seed=3)
    assert ComposeOptions.from_dict(json.loads(json.dumps(new.to_dict()))) == new


def test_options_round_trip_through_a_dict_and_ignore_unknown_keys():
    options = ComposeOptions(search="gradient", granularity="block", budget=7, bounds=(-1.0, 2.0))
    data = json.loads(json.dumps(options.to_dict()))
    assert ComposeOptions.from_dict(data | {"from_a_later_version": 1}) == options


def test_compose_rejects_an_unknown_setting_by_name(llama_dir):
    with pytest.raises(CompositionError, match="unknown compose setting budjet"):
        compose(str(llama_dir), [str(llama_dir)], [{"input": "a", "output": "b"}], budjet=3)


def test_library_compose_by_tasks_with_registered_examples_and_run_again_from_lineage(registry, llama_dir,
                                                                                       tmp_path):
    register_pool(registry, llama_dir, tmp_path)
    first = compose(str(llama_dir), tasks=["reverse", "upper"], examples=REGISTERED, registry=registry,
                    options=ComposeOptions(shots=2, budget=6, seed=3), name="lab/ru")
    version = registry.show("lab/ru")
    details = version.lineage.details
    assert version.task == "reverse+upper"  # the examples are the sources' own
    assert details["shots"] == 4 and details["examples_source"] == REGISTERED and len(details["examples"]) == 4
    assert details["options"]["budget"] == 6 and len(details["history"]) == 3 + 6  # the screen, then the steps
    assert [h["best"] for h in details["history"]] == sorted((h["best"] for h in details["history"]), reverse=True)

    again = compose_again(registry, "lab/ru", model=str(llama_dir))
    assert again.weights == first.weights and again.loss == pytest.approx(first.loss, abs=1e-6)
    assert again.examples_digest == first.examples_digest


def test_compose_task_names_the_result(registry, llama_dir, tmp_path):
    register_pool(registry, llama_dir, tmp_path)
    result = CliRunner().invoke(main, ["compose", "--adapters", "lab/reverse", "--adapters", "lab/upper", "--model",
                                       str(llama_dir), "--examples", str(factories.write_examples(
                                           tmp_path / "few.jsonl", ROWS_A[:3])), "--shots", "3", "--budget", "3", "--task", "flip",
                                       "--name", "lab/flip", "--report", str(tmp_path / "r.html"), "--json"])
    assert result.exit_code == 0, result.output
    assert registry.show("lab/flip").task == "flip"
    page = (tmp_path / "r.html").read_text()
    assert "<svg" in page and "lab/reverse@1" in page


def test_adapter_folders_are_validated_with_the_hubs_reader(llama_dir, tmp_path):
    folder = factories.make_lora(llama_dir, tmp_path / "a")
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": "eight"}')
    with pytest.raises(InvalidAdapter):
        compose(str(llama_dir), adapters=[str(folder)], examples=[{"input": "a", "output": "b"}])


def test_registered_examples_in_another_prompt_format_are_refused(registry, llama_dir, tmp_path):
    adapter = factories.make_lora(llama_dir, tmp_path / "chatty")
    examples = tmp_path / "chat.jsonl"
    examples.write_text("".join(json.dumps({"input": i, "output": o, "prompt_format": "chat"}) + "\n"
                                for i, o in ROWS_B))
    registry.push(adapter, name="lab/chatty", task="upper", examples=examples)
    with pytest.raises(ExamplesError, match="--prompt-format chat"):
        compose(str(llama_dir), tasks=["upper"], registry=registry, options=ComposeOptions(shots=2, budget=2))


def test_chat_format_needs_a_chat_template(llama_dir, tmp_path):
    adapter = factories.make_lora(llama_dir, tmp_path / "a")
    with pytest.raises(CompositionError, match="chat template"):
        compose(str(llama_dir), [str(adapter)], [{"input": "a", "output": "b"}], shots=None, prompt_format="chat")


def test_the_chat_format_scores_the_chat_template_text(llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loramgr.composer.examples import Example
    from loramgr.composer.objective import tokenize_examples
    from loramgr.composer.prompts import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    tokenizer.chat_template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}[assistant] {% endif %}")
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    examples = [Example("abc", "cba"), Example("dog", "god")]
    plain = tokenize_examples(model, tokenizer, examples, prompt_format="plain")
    chat = tokenize_examples(model, tokenizer, examples, prompt_format="chat")
    assert chat.inputs["input_ids"].numel() > plain.inputs["input_ids"].numel()
    assert plain.label_tokens == chat.label_tokens  # the same answers are scored, after other prompts
    assert render_prompt(tokenizer, "abc", "chat", shots=[("dog", "god")]) == \
        "[user] dog\n[assistant] god\n[user] abc\n[assistant] "


def test_compose_from_the_whole_hub_shortlists_and_records_it(registry, llama_dir, tmp_path):
    register_pool(registry, llama_dir, tmp_path)
    result = compose(str(llama_dir), all_adapters=True, examples=[{"input": i, "output": o} for i, o in ROWS_A[:3]],
                     registry=registry, options=ComposeOptions(shots=None, budget=3, shortlist=1), name="lab/auto")
    assert len(result.candidates) == 1 and len(result.shortlist) == 1
    details = registry.show("lab/auto").lineage.details
    assert details["shortlist"] == [{"source": result.shortlist[0][0], "loss": pytest.approx(result.shortlist[0][1])}]
    with pytest.raises(CompositionError, match="registry"):
        compose(str(llama_dir), all_adapters=True, examples=[{"input": "a", "output": "b"}], shots=None)
