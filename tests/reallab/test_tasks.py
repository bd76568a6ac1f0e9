"""The real-model lab's task conversion, on task files written here (no model, no download)."""

import json
from collections import Counter

from loramgr.examples.reallab.build import LabConfig
from loramgr.examples.reallab.tasks import TASK_FORMAT, load_task


def _task_file(tmp_path, rows):
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"task_prefix": "Pick one.", "examples": rows}))
    return path


def test_options_are_shuffled_so_a_file_that_lists_the_answer_first_teaches_no_position(tmp_path):
    # As date_understanding and emoji_movie do: the right option always first in the file.
    rows = [{"input": f"question {i}", "target_scores": {f"right {i}": 1, f"wrong {i}a": 0, f"wrong {i}b": 0,
                                                          f"wrong {i}c": 0}} for i in range(200)]
    task = load_task("first", _task_file(tmp_path, rows))
    positions = Counter(e.options.index(e.output) for e in task.examples)
    assert all(e.output.startswith("right") for e in task.examples)
    assert set(positions) == {0, 1, 2, 3} and max(positions.values()) < 0.4 * len(rows)
    for example in task.examples:  # the prompt lists the options in the shuffled order
        listed = [line[2:] for line in example.input.splitlines() if line.startswith("- ")]
        assert listed == list(example.options)


def test_the_order_depends_on_the_example_alone(tmp_path):
    rows = [{"input": f"q{i}", "target_scores": {"a": 1, "b": 0, "c": 0, "d": 0, "e": 0}} for i in range(30)]
    first = load_task("t", _task_file(tmp_path, rows))
    again = load_task("t", _task_file(tmp_path, list(reversed(rows))))
    assert {e.input: e.options for e in first.examples} == {e.input: e.options for e in again.examples}
    assert len({e.options for e in first.examples}) > 1


def test_the_task_format_is_part_of_the_lab_key():
    # A lab built with another conversion must not be reused: its modules learnt other prompts.
    assert LabConfig().to_dict()["task_format"] == TASK_FORMAT
