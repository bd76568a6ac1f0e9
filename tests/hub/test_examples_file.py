"""The one parser of examples files, and every way one reaches the hub: ``push --examples``, an
``examples.jsonl`` inside a pushed folder, blobs registered with ``push_stored``; read back with
``Hub.examples()`` and the composer's ``read_examples``."""

from __future__ import annotations

import shutil

import pytest

from loramgr.composer.errors import ExamplesError
from loramgr.composer.examples import Example, read_examples
from loramgr.hub.errors import InvalidArgument
from loramgr.hub.examples_file import ExampleRecord, check_examples_file, parse_examples
from loramgr.hub_api import Hub

GOOD = '{"input": "a", "output": "b"}\n\n{"input": "c", "output": "d", "note": "kept out"}\n'


@pytest.mark.parametrize("line, problem", [
    ('{"input": "a", "output": ', "not valid JSON"),
    ('["a", "b"]', "expected a JSON object"),
    ('{"input": "a"}', 'missing "output"'),
    ('{"input": 3, "output": "b"}', '"input" must be a string, got int'),
    ("[" * 100_000, "nested too deeply"),
])
def test_a_bad_line_is_named_with_its_source(line, problem):
    with pytest.raises(InvalidArgument) as raised:
        parse_examples(GOOD + line + "\n", "acme/x/examples.jsonl")
    assert str(raised.value).startswith("acme/x/examples.jsonl, line 4: ") and problem in str(raised.value)
    assert raised.value.details == {"path": "acme/x/examples.jsonl", "line": 4}


def test_records_are_what_the_composer_takes(tmp_path):
    path = tmp_path / "ex.jsonl"
    path.write_text(GOOD)
    assert parse_examples(GOOD.encode(), "x") == [ExampleRecord("a", "b"), ExampleRecord("c", "d")]
    assert read_examples(path) == [Example("a", "b"), Example("c", "d")] == check_examples_file(path)


def test_files_that_cannot_be_read_or_hold_nothing(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"input": "caf\xe9", "output": "b"}\n')
    for name, says in [("empty.jsonl", "no examples"), ("missing.jsonl", "does not exist"),
                       ("latin1.jsonl", "not UTF-8"), (".", "not a regular file")]:
        with pytest.raises(InvalidArgument, match=says):
            check_examples_file(tmp_path / name)
        with pytest.raises(ExamplesError, match=says):  # the composer's wrapper keeps the message
            read_examples(tmp_path / name)


def test_examples_jsonl_inside_a_pushed_folder_is_checked_like_examples(registry, llama_lora, tmp_path):
    folder = tmp_path / "with-examples"
    shutil.copytree(llama_lora, folder)
    (folder / "examples.jsonl").write_text('{"input": "a", "output": "b"}\n{"input": 1}\n')
    with pytest.raises(InvalidArgument) as raised:
        registry.push(folder, name="acme/a", task="t")
    assert str(raised.value).startswith(f"{folder}/examples.jsonl, line 2: ")
    assert registry.ls() == [] and list(registry.blobs.digests()) == []

    (folder / "examples.jsonl").write_text(GOOD)
    registry.push(folder, name="acme/a", task="t")
    hub = Hub(settings=registry.settings)
    assert hub.examples("acme/a") == [ExampleRecord("a", "b"), ExampleRecord("c", "d")]


def test_push_stored_checks_the_examples_blob(registry, llama_lora):
    files = {name: registry.blobs.put_file(llama_lora / name)[0]
             for name in ("adapter_config.json", "adapter_model.safetensors")}
    files["examples.jsonl"], _ = registry.blobs.put_chunks([b'{"input": "a", "output": "b"}\nnot json\n'])
    with pytest.raises(InvalidArgument) as raised:
        registry.push_stored(files, name="acme/a", task="t")
    assert str(raised.value).startswith("acme/a/examples.jsonl, line 2: not valid JSON")
    assert raised.value.details["line"] == 2
    assert registry.ls() == []
