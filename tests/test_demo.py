"""`loramgr demo` end to end on the small lab, and the quality table's code on it."""

import json

from click.testing import CliRunner

from loramgr.cli import main
from loramgr.examples.quality import METHODS, format_table, quality_table


def test_demo_composes_an_adapter_that_beats_the_base_model(small_lab, home, tmp_path):
    import shutil

    demo_home = tmp_path / "demo"
    shutil.copytree(small_lab.root, demo_home / "lab")  # the demo reuses a built lab (cache hit)
    result = CliRunner().invoke(main, ["demo", "--toy", "--demo-home", str(demo_home), "--size", "small", "--budget", "20",
                                       "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    methods = {m["method"]: m for m in report["methods"]}
    base, composed = methods["base model (zero-shot)"], methods["composed (loramgr)"]
    assert composed["few_shot_loss"] < base["few_shot_loss"]
    assert composed["few_shot_loss"] < methods["uniform average"]["few_shot_loss"]
    assert composed["exact_match"] >= base["exact_match"]
    assert report["version"] == "lab/k2-l2d-low@1"
    assert len(report["predictions"]) == 6 and len(report["modules"]) == 2
    # The demo never touches the user's registry unless asked.
    assert not (home / "registry.db").exists()


def test_quality_table_runs_every_method_on_the_small_lab(small_lab):
    rows = quality_table(small_lab, "t5", seeds=(0, 1), shots=5, budget=4, targets=["k2-l2d+low"])
    by = {r.method: r for r in rows if r.target == "k2-l2d+low"}
    assert list(by) == list(METHODS)
    for row in rows:
        assert row.mean is None or 0.0 <= row.mean <= 1.0
    assert by["compose delta"].seeds == 2 and by["compose delta"].stdev is not None
    assert by["base (zero-shot)"].seeds == 1  # seed-independent methods are measured once
    assert "compose delta" in format_table(rows)
