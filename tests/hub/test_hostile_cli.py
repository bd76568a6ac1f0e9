"""Hostile arguments on the command line (issue 12): one line on stderr and exit 1, never a
traceback, and nothing stored."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from loramgr.cli import main

from ..hostile import write_adapter
from .test_cli import one_error_line


@pytest.fixture
def run(home):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def pushed(run, tmp_path):
    assert run("push", write_adapter(tmp_path / "good"), "--name", "acme/good", "--task", "t").exit_code == 0
    return "acme/good"


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("ref", ["acme/good@²", "acme/good@" + "9" * 30, "acme/good@١٢"])
def test_odd_version_numbers(run, pushed, ref):
    assert "invalid version" in one_error_line(run("show", ref))


@pytest.mark.parametrize("flag", ["--rank", "--min-rank", "--max-rank", "--limit"])
def test_numbers_past_the_store(run, pushed, flag):
    assert flag in one_error_line(run("search", flag, 10 ** 20))


@pytest.mark.parametrize("grace", ["nan", "-1", "inf", "1e999"])
def test_gc_grace_must_be_a_finite_non_negative_number(run, pushed, grace):
    assert "grace" in one_error_line(run("gc", "--grace", grace))
    assert run("verify", "--json").exit_code == 0


def test_numeric_tags_are_refused(run, pushed, tmp_path):
    assert "only digits" in one_error_line(run("tag", "acme/good@1", "2"))
    assert "only digits" in one_error_line(run("push", write_adapter(tmp_path / "b"), "--name", "acme/b",
                                               "--task", "t", "--tag", "7"))
    assert run("tag", "acme/good@1", "v2").exit_code == 0


def test_push_of_a_symlinked_readme_is_refused(run, tmp_path):
    folder = write_adapter(tmp_path / "a")
    os.symlink("/etc/passwd", folder / "README.md")
    assert "symbolic link" in one_error_line(run("push", folder, "--name", "acme/leak", "--task", "t"))
    assert strict_json(run("ls", "--json").stdout) == []


def test_push_of_an_infinite_alpha_is_refused(run, tmp_path):
    folder = write_adapter(tmp_path / "a", config_text='{"peft_type": "LORA", "r": 2, "lora_alpha": 1e999, '
                                                       '"base_model_name_or_path": "tiny/base"}')
    assert "lora_alpha" in one_error_line(run("push", folder, "--name", "acme/inf", "--task", "t"))
    assert strict_json(run("ls", "--json").stdout) == []


def test_show_json_is_strict_json(run, pushed):
    shown = strict_json(run("show", pushed, "--json").stdout)
    assert shown["alpha"] == 4.0


def test_emit_json_never_writes_nan_or_infinity(capsys):
    from loramgr.cli.output import emit_json

    emit_json({"loss": float("nan"), "scores": [float("inf"), 1.5], "nested": {"x": float("-inf")}})
    assert strict_json(capsys.readouterr().out) == {"loss": None, "scores": [None, 1.5], "nested": {"x": None}}


@pytest.mark.parametrize("make", ["dangling", "loop", "under_a_file"])
def test_pull_into_impossible_places(run, pushed, tmp_path, make):
    if make == "dangling":
        target = tmp_path / "link"
        os.symlink(tmp_path / "nowhere" / "deeper", target)
    elif make == "loop":
        target = tmp_path / "loop"
        os.symlink(target, target)
    else:
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "out"
    line = one_error_line(run("pull", pushed, "-o", target))
    assert str(target) in line


@pytest.mark.parametrize("fields", [{"target_modules": 12345}, {"target_modules": {"q_proj": 1}}])
def test_check_for_peft_refuses_configs_peft_cannot_load(run, tmp_path, fields):
    folder = write_adapter(tmp_path / "a", config_fields=fields)
    assert "target_modules" in one_error_line(run("check", folder, "--for", "peft"))


def test_check_for_peft_refuses_zero_size_tensors(run, tmp_path):
    import numpy as np

    from ..hostile import lora_tensors

    tensors = lora_tensors()
    tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = np.zeros((2, 0), np.float32)
    tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"] = np.zeros((0, 2), np.float32)
    folder = write_adapter(tmp_path / "a", tensors=tensors)
    assert "zero-size" in one_error_line(run("check", folder, "--for", "peft"))
