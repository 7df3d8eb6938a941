"""reel-driver review and plots: the offline page, the recall gate, the review's images."""

import re

import pytest

from reel_driver.config import params
from reel_driver.review import report

SPEC = {
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "data": {"values": [{"threshold": 0.1, "recall": 0.9}, {"threshold": 0.5, "recall": 0.6}]},
    "mark": "line",
    "encoding": {"x": {"field": "threshold", "type": "quantitative"}, "y": {"field": "recall", "type": "quantitative"}},
}


def test_offline_page_inlines_every_plot_and_loads_nothing() -> None:
    page = report.render_offline({"sweep <1>": [{"type": "vega", "content": SPEC}], "image": [{"type": "image"}]})
    assert page.count("<svg") == 1
    assert "<h2>sweep &lt;1&gt;</h2>" in page
    assert not re.search(r"<script|<link|src=", page)


def test_no_plots_says_what_to_do() -> None:
    assert "run <code>dvc repro</code> first" in report.render_offline({})


GATE = params.ReviewParams(recall_drop_tolerance=0.05, recall_floor=0.6)


@pytest.mark.parametrize(
    ("recall", "verdict", "failure"),
    [
        ({"old": 0.80, "new": 0.78}, "hold-out recall 0.7800 (main: 0.8000)", None),
        ({"old": 0.80, "new": 0.90}, "**pass**", None),
        ({"new": 0.70}, "hold-out recall 0.7000 (main has none)", None),
        ({"old": 0.80, "new": 0.70}, "**fail**",
         "review: hold-out recall fell 0.1000 below main's 0.8000 (review.recall_drop_tolerance 0.05)"),
        ({"old": 0.62, "new": 0.59}, "**fail**", "review: hold-out recall 0.5900 is below review.recall_floor 0.6"),
        ({"old": 0.80}, "no hold-out recall", "review: no recall in metrics/evaluate.json: run dvc repro first"),
    ],
)
def test_recall_gate(recall: dict, verdict: str, failure: str | None) -> None:
    line, failed = report.recall_gate({"metrics/evaluate.json": {"recall": recall}}, GATE, "main")
    assert verdict in line
    assert failed == failure


def test_review_images_are_png_files_named_after_the_plots(tmp_path) -> None:
    plots = {plot_id: [{"type": "vega", "content": SPEC}]
             for plot_id in ("Recall by threshold (hold-out)", "metrics/a/roc.json", "metrics/b/roc.json")}
    written = report.write_pngs(plots, tmp_path)
    assert [path.name for _, path in written] == ["recall_by_threshold_hold_out.png", "roc.png", "roc_1.png"]
    assert all(path.read_bytes().startswith(b"\x89PNG") for _, path in written)
