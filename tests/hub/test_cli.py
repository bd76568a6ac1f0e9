"""The registry commands through click's CliRunner: output, --json and one-line errors."""

import json
import shutil

import pytest
from click.testing import CliRunner

from loramgr.cli import main


@pytest.fixture
def run(home):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_push_search_show_pull_json(run, llama_lora, tmp_path):
    pushed = run("push", llama_lora, "--name", "acme/a", "--task", "sql", "--tag", "stable", "--json")
    assert pushed.exit_code == 0
    assert json.loads(pushed.stdout)["ref"] == "acme/a@1"
    found = json.loads(run("search", "--task", "sql", "--json").stdout)
    assert [v["ref"] for v in found] == ["acme/a@1"]
    shown = json.loads(run("show", "acme/a:stable", "--json").stdout)
    assert shown["rank"] == 4 and sorted(shown["tags"]) == ["latest", "stable"]
    pulled = json.loads(run("pull", "acme/a", "-o", tmp_path / "out", "--json").stdout)
    assert pulled["path"] == str(tmp_path / "out") and (tmp_path / "out" / "adapter_config.json").exists()
    assert "acme/a@1" in run("ls").stdout
    assert run("verify", "--json").exit_code == 0
    assert json.loads(run("gc", "--json").stdout)["removed_blobs"] == 0


def test_human_output(run, llama_lora):
    assert run("push", llama_lora, "--name", "acme/a", "--task", "sql").stdout.startswith("pushed acme/a@1")
    table = run("search", "--rank", "4").stdout.splitlines()
    assert table[0].split()[:4] == ["ref", "task", "base", "rank"] and table[2].startswith("acme/a@1")
    assert "q_proj, v_proj" in run("show", "acme/a").stdout


def test_errors_are_one_line_with_exit_code_1(run, llama_lora, tmp_path):
    assert "adapter_config.json" in one_error_line(run("push", tmp_path, "--name", "acme/a", "--task", "t"))
    assert "NAMESPACE/NAME" in one_error_line(run("push", llama_lora, "--name", "acme/../x", "--task", "t"))
    assert "no adapter named acme/none" in one_error_line(run("pull", "acme/none"))
    run("push", llama_lora, "--name", "acme/a", "--task", "t")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert "--force" in one_error_line(run("pull", "acme/a", "-o", busy))
    bad = tmp_path / "bad"
    shutil.copytree(llama_lora, bad)
    (bad / "adapter_model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    assert "header" in one_error_line(run("push", bad, "--name", "acme/b", "--task", "t"))
    assert run("ls", "--json").stdout.count('"ref"') == 1  # nothing else was registered


def test_usage_errors_exit_2(run):
    assert run("push").exit_code == 2
    assert run("search", "--rank", "eight").exit_code == 2


def test_verify_exits_1_when_a_blob_is_missing(run, llama_lora, home):
    run("push", llama_lora, "--name", "acme/a", "--task", "t")
    for blob in (home / "blobs" / "sha256").glob("*/*"):
        blob.unlink()
        break
    result = run("verify")
    assert result.exit_code == 1 and "missing" in result.stderr


def test_help_documents_every_setting():
    from loramgr.hub.settings import SETTINGS

    text = CliRunner().invoke(main, ["--help"]).output
    for _, variable, _ in SETTINGS:
        assert variable in text
