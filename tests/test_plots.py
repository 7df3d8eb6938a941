"""The DVC plots as a reader sees them: dvc.yaml and the templates in .dvc/plots/, through
`dvc plots diff` (two revisions) and rendered with vl-convert as `reel-driver plots` and
`reel-driver review` render them. The assertions read the drawn SVG, not the spec."""

import itertools
import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import vl_convert
import yaml

from reel_driver.config import paths
from reel_driver.review import report

SWEEP = "Recall, precision and F2 by threshold (hold-out)"
GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """SVG of every plot of `dvc plots diff HEAD` in a repository copy whose workspace moved
    three hold-out rows to other cells, lowered every sweep value and gave five features of the
    importance other names; with the data behind it."""
    from tests.conftest import REPO

    root = tmp_path_factory.mktemp("plots") / "repo"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True, text=True).stdout
    for name in filter(None, tracked.split("\0")):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes((REPO / name).read_bytes())
    env = {**os.environ, **GIT}
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "baseline"]):
        subprocess.run(command, cwd=root, env=env, check=True)
    baseline = {name: json.loads((root / name).read_text())
                for name in (paths.PLOT_CONFUSION, paths.PLOT_THRESHOLDS, paths.PLOT_IMPORTANCE)}
    confusion = [dict(row) for row in baseline[paths.PLOT_CONFUSION]]
    flip = {"would_watch": "would_not_watch", "would_not_watch": "would_watch"}
    for row in confusion[:3]:
        row["predicted"] = flip[row["predicted"]]
    sweep = [{k: (v if k == "threshold" else round(v * 0.9, 6)) for k, v in row.items()}
             for row in baseline[paths.PLOT_THRESHOLDS]]
    (root / paths.PLOT_CONFUSION).write_text(json.dumps(confusion))
    (root / paths.PLOT_THRESHOLDS).write_text(json.dumps(sweep))
    importance = [dict(row, feature=f"renamed_{n}") if n < 5 else row for n, row in enumerate(baseline[paths.PLOT_IMPORTANCE])]
    (root / paths.PLOT_IMPORTANCE).write_text(json.dumps(importance))

    previous = Path.cwd()
    os.chdir(root)
    try:
        plots = report._dvc_plots(["HEAD"])
    finally:
        os.chdir(previous)
    svgs = {plot_id: vl_convert.vegalite_to_svg(spec) for plot_id, spec in report._vega_specs(plots)}
    return {"plots": plots, "svg": svgs, "confusion": {"workspace": confusion, "HEAD": baseline[paths.PLOT_CONFUSION]},
            "importance": {"workspace": importance, "HEAD": baseline[paths.PLOT_IMPORTANCE]},
            "definitions": yaml.safe_load((root / "dvc.yaml").read_text())["plots"]}


def _luminance(colour: str) -> float:
    """WCAG relative luminance of "rgb(r, g, b)", "#rrggbb", "white" or "black"."""
    named = {"white": (255, 255, 255), "black": (0, 0, 0)}
    if colour in named:
        rgb = named[colour]
    elif colour.startswith("#"):
        rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    else:
        rgb = tuple(int(v) for v in re.findall(r"\d+", colour))
    linear = [c / 255 / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _cells(svg: str) -> tuple[dict, dict]:
    """(cell -> rect fill, cell -> (text lines, text fill)) of a confusion matrix; cell =
    (revision facet index, actual, predicted), in drawing order per facet."""
    fills, texts = {}, {}
    rect = r'aria-label="predicted[^:]*: (\w+); actual[^:]*: (\w+); rows[^"]*" role="graphics-symbol" aria-roledescription="rect mark" d="[^"]*" fill="([^"]+)"'
    text = (r'aria-label="predicted[^:]*: (\w+); actual[^:]*: (\w+); cell_text: [^"]*" role="graphics-symbol" '
            r'aria-roledescription="text mark"[^>]* fill="([^"]+)">((?:<tspan[^>]*>[^<]*</tspan>)+)</text>')
    for n, (predicted, actual, fill) in enumerate(re.findall(rect, svg)):
        fills[(n // 4, actual, predicted)] = fill
    for n, (predicted, actual, fill, spans) in enumerate(re.findall(text, svg)):
        texts[(n // 4, actual, predicted)] = (re.findall(r">([^<]*)</tspan>", spans), fill)
    return fills, texts


def test_confusion_cells_show_their_counts_in_each_revision(drawn: dict) -> None:
    fills, texts = _cells(drawn["svg"][str(paths.PLOT_CONFUSION)])
    assert len(fills) == len(texts) == 8  # two revisions, four cells each
    for facet, rev in enumerate(("workspace", "HEAD")):
        counts = Counter((r["actual"], r["predicted"]) for r in drawn["confusion"][rev])
        for (actual, predicted), count in counts.items():
            lines, _ = texts[(facet, actual, predicted)]
            row_total = sum(c for (a, _), c in counts.items() if a == actual)
            assert lines == [f"{count:,d}", f"{count / row_total:.0%} of row"], (rev, actual, predicted)


def test_confusion_colours_tell_the_small_cells_apart_and_text_stays_readable(drawn: dict) -> None:
    fills, texts = _cells(drawn["svg"][str(paths.PLOT_CONFUSION)])
    small = [(0, a, p) for a, p in (("would_watch", "would_watch"), ("would_not_watch", "would_watch"),
                                    ("would_watch", "would_not_watch"))]
    count = {cell: int(texts[cell][0][0].replace(",", "")) for cell in small}
    # TP, FP and FN (tens of rows beside hundreds of TN) are not one pale shade: more rows are
    # darker, and two cells at least twice apart in rows differ clearly (two near-equal counts,
    # 47 and 49, rightly share a shade)
    apart = 0
    for fewer, more in (sorted(pair, key=count.get) for pair in itertools.combinations(small, 2)):
        assert _luminance(fills[fewer]) >= _luminance(fills[more]), (count, fills)
        if count[more] >= 2 * max(count[fewer], 1):
            apart += 1
            # symlog: 0.32 between 3 and 46 rows; a linear scale over the same cells: 0.08
            assert _luminance(fills[fewer]) - _luminance(fills[more]) > 0.15, (count, fills)
    assert apart, count  # the sample always has a few false negatives beside tens of true positives
    for cell, fill in fills.items():
        assert _contrast(texts[cell][1], fill) >= 3, (cell, fill, texts[cell][1])  # WCAG, large text


def test_threshold_lines_are_named_and_told_apart_by_colour_and_shape(drawn: dict) -> None:
    svg = drawn["svg"][SWEEP]
    definition = next(d[SWEEP] for d in drawn["definitions"] if SWEEP in d)
    titles = re.findall(r'font-weight="bold"[^>]*>([^<]*)</text>', svg)
    assert definition["x_label"] in titles and definition["y_label"] in titles and "y" not in titles
    lines = re.findall(r'field: (\w+); revision: (\w+);[^"]*" role="graphics-symbol" aria-roledescription="line mark" '
                       r'd="[^"]*" stroke="([^"]+)" stroke-width="[^"]*" stroke-dasharray="([^"]+)"', svg)
    assert sorted((metric, rev) for metric, rev, _, _ in lines) == sorted(
        (m, r) for m in ("recall", "precision", "f2") for r in ("workspace", "HEAD"))
    colour = {metric: stroke for metric, _, stroke, _ in lines}
    assert len(set(colour.values())) == 3 and all(stroke == colour[m] for m, _, stroke, _ in lines)
    dash = {rev: pattern for _, rev, _, pattern in lines}
    assert dash["workspace"] != dash["HEAD"]  # revisions by stroke dash
    points = re.findall(r'metric: (\w+); revision: \w+;[^"]*" role="graphics-symbol" aria-roledescription="point" '
                        r'transform="[^"]*" d="([^"]+)" fill="([^"]+)"', svg)
    shapes = {metric: (re.sub(r"[\d.\-]+", "", d), fill) for metric, d, fill in points}
    assert len({shape for shape, _ in shapes.values()}) == 3 and {fill for _, fill in shapes.values()} == set(colour.values())
    legend = re.findall(r'role-legend-label.*?</g></g>', svg, flags=re.S)
    labels = re.findall(r">([^<]+)</text>", "".join(legend))
    assert {"recall", "precision", "f2", "workspace", "HEAD"} <= set(labels)


def test_importance_labels_every_feature_of_either_revision_without_overlap(drawn: dict) -> None:
    svg = next(svg for plot_id, svg in drawn["svg"].items() if "feature_importance" in plot_id)
    y_axis = svg[svg.index('aria-label="Y-axis'):]
    ticks = [float(y) for y in re.findall(r'<line transform="translate\(0,([\d.]+)\)" x2="-5"', y_axis)]
    features = {row["feature"] for rows in drawn["importance"].values() for row in rows}
    assert len(ticks) == len(features) == len(drawn["importance"]["HEAD"]) + 5
    assert min(b - a for a, b in zip(ticks, ticks[1:])) >= 12  # 10 px labels, one per row
    bars = re.findall(r'aria-label="gain: [^"]*" role="graphics-symbol" aria-roledescription="bar" d="M(-?[\d.]+),', svg)
    assert len(bars) == 2 * len(drawn["importance"]["HEAD"]) and all(float(x) == 0 for x in bars)  # from zero


def test_every_plot_renders_to_png_and_offline_svg(drawn: dict, tmp_path: Path) -> None:
    # what reel-driver review and reel-driver plots write from the same DVC output
    images = report.write_pngs(drawn["plots"], tmp_path)
    assert len(images) == 5 and all(image.read_bytes().startswith(b"\x89PNG") for _, image in images)
    assert report.render_offline(drawn["plots"]).count("<svg") == 5
