"""The composition report: a self-contained HTML page drawn from a lineage, and `loramgr show --report`."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from loramgr.cli import main
from loramgr.hub.errors import InvalidArgument
from loramgr.hub.report import history_points, nice_ticks, render_composition_report, write_composition_report

from .hub_content import history, populate


def composed(**lineage) -> dict:
    base = {"sources": [{"ref": "acme/a@1", "weight": 0.8, "digest": None},
                        {"ref": "acme/b@2", "weight": -0.25, "digest": None}],
            "mode": "lorahub", "objective": "few_shot_loss", "score": 0.75, "seed": 3,
            "examples_digest": "d" * 64, "details": {"history": history(12), "budget": 12}}
    return {"ref": "acme/mix@4", "base_model": "org/base", "task": "t", "created_at": "2026-01-01T00:00:00+00:00",
            "digest": "f" * 64, "lineage": {**base, **lineage}}


def test_the_report_draws_weights_and_the_loss_curve_inline():
    html = render_composition_report(composed())
    assert html.startswith("<!doctype html>") and html.count("<svg") == 2
    assert html.count("<rect") == 2 and "+0.800" in html and "-0.250" in html
    assert html.count("<circle") == 12 + 1  # each evaluation, and the legend's dot
    assert re.search(r'<path d="M[\d.]+,[\d.]+(H[\d.]+V[\d.]+){11}"', html)  # best so far, one step per evaluation
    for fact in ("lorahub", "0.75", ">3<", "d" * 64, "12 evaluations", "budget"):
        assert fact in html
    # Nothing is fetched when it is viewed: no scripts, no external references.
    assert "<script" not in html and not re.search(r'(src|href)="(https?:)?//', html)


def test_sources_link_to_the_hub_when_there_is_one():
    html = render_composition_report(composed(), hub_url="http://hub.internal:8000/")
    assert '<a href="http://hub.internal:8000/adapters/acme/a?version=1"' in html
    assert "<a href" not in render_composition_report(composed())


def test_without_history_the_page_says_so():
    html = render_composition_report(composed(details={"budget": 3}))
    assert html.count("<svg") == 1 and "No search history was recorded" in html
    empty = render_composition_report(composed(sources=[], details={}, score=None, seed=None))
    assert "names no sources" in empty and "not recorded" in empty


def test_odd_history_entries_are_skipped_and_names_escaped():
    details = {"history": [{"loss": 2.0}, {"loss": float("nan")}, "junk", {"loss": "x"}, {"loss": 1.0, "best": 1.0},
                           {"loss": float("inf")}, {"loss": 1.5}]}
    assert history_points(details) == [(1, 2.0, 2.0), (5, 1.0, 1.0), (7, 1.5, 1.0)]
    html = render_composition_report(composed(
        details=details, sources=[{"ref": "<script>alert(1)</script>", "weight": float("nan")}],
        mode="<img src=x onerror=alert(1)>"))
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html and "not a number" in html


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0, 1, 5) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(-0.4, 0.8, 6) == [-0.4, -0.2, 0, 0.2, 0.4, 0.6, 0.8]
    assert nice_ticks(3, 3) == [3, 3.2, 3.4, 3.6, 3.8, 4.0]


def test_a_version_that_is_not_composed_is_refused():
    with pytest.raises(InvalidArgument, match="not a composed version"):
        render_composition_report({**composed(), "lineage": None})


def test_show_writes_the_report(home, tmp_path):
    made = populate(home, tmp_path / "scratch")
    report = tmp_path / "mix.html"
    result = CliRunner().invoke(main, ["show", made["mix"], "--report", str(report)])
    assert result.exit_code == 0, result.output
    html = report.read_text()
    assert "acme/sentiment@2" in html and "30 evaluations" in html and html.count("<svg") == 2
    assert not list(tmp_path.glob(".mix.html.*"))  # the temp file is gone

    refused = CliRunner().invoke(main, ["show", made["sentiment"], "--report", str(tmp_path / "no.html")])
    assert refused.exit_code == 1 and "not a composed version" in refused.output
    assert "Traceback" not in refused.output and not (tmp_path / "no.html").exists()
    missing = CliRunner().invoke(main, ["show", made["mix"], "--report", str(tmp_path / "nope" / "r.html")])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_write_refuses_a_folder(tmp_path):
    with pytest.raises(InvalidArgument, match="is a folder"):
        write_composition_report(composed(), tmp_path)
