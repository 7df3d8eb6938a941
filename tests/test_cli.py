"""reel-driver plots: DVC's own plot specs, rendered to a page that needs no network."""

import re

from stages import cli

SPEC = {
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "data": {"values": [{"threshold": 0.1, "recall": 0.9}, {"threshold": 0.5, "recall": 0.6}]},
    "mark": "line",
    "encoding": {"x": {"field": "threshold", "type": "quantitative"}, "y": {"field": "recall", "type": "quantitative"}},
}


def test_offline_page_inlines_every_plot_and_loads_nothing() -> None:
    page = cli.render_offline({"sweep <1>": [{"type": "vega", "content": SPEC}], "image": [{"type": "image"}]})
    assert page.count("<svg") == 1
    assert "<h2>sweep &lt;1&gt;</h2>" in page
    assert not re.search(r"<script|<link|src=", page)


def test_no_plots_says_what_to_do() -> None:
    assert "run <code>dvc repro</code> first" in cli.render_offline({})


def test_help_names_the_commands(capsys) -> None:
    parser = cli.parser()
    assert parser.parse_args(["plots", "main", "-o", "x.html"]).revisions == ["main"]
    parser.print_help()
    assert "plots" in capsys.readouterr().out
