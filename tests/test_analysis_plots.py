"""The analysis report's plots: log axes where the data is heavy-tailed, and each category's
rows split by label with its would_watch share. The figures are inspected before saving."""

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest

from reel_driver.data import sample
from reel_driver.preparation import training_set
from reel_driver.preparation.rows import classify
from reel_driver.selection import analysis, analysis_plots
from tests.test_prep import SETTINGS

RNG = np.random.default_rng(7)


@pytest.mark.parametrize(
    ("values", "heavy"),
    [
        (RNG.lognormal(8, 2, 2000), True),                # votes-like: one spike on a linear axis
        (np.r_[np.zeros(50), RNG.lognormal(8, 2, 2000)], True),  # with zeros (log1p keeps them)
        (RNG.normal(60, 15, 2000), False),               # a score
        (2025 - RNG.lognormal(2, 1, 2000), False),       # skewed left, like release_year
        (np.r_[-1.0, RNG.lognormal(8, 2, 2000)], False),  # a negative value: no log axis
        (np.full(100, 5.0), False),                      # constant
    ],
    ids=["lognormal", "lognormal with zeros", "normal", "left skew", "negative", "constant"],
)
def test_heavy_tails_are_found_from_the_data(values: np.ndarray, heavy: bool) -> None:
    assert analysis.heavy_tailed(values) is heavy


def test_label_shares_count_rows_per_label_and_the_share() -> None:
    column = pl.Series("genre", ["Drama"] * 4 + ["Comedy"] * 2 + [None] + ["War"])
    labels = pl.Series("label", [1, 0, 0, 0, 1, 1, 1, 0])
    shares = analysis.label_shares(column, labels, top=2)
    assert shares.select("genre", "rows", "would_not_watch", "would_watch", "share").rows() == [
        ("Drama", 4, 3, 1, 0.25), ("Comedy", 2, 0, 2, 1.0),
    ]


@pytest.fixture(scope="module")
def rows() -> pl.DataFrame:
    return training_set.training_rows(classify(sample.generate(1500, 3), SETTINGS.prep)).drop("media_type")


def _figures(rows: pl.DataFrame, name: str) -> dict[str, plt.Figure]:
    found = analysis.Feature(name, analysis.feature_class(name))
    return analysis_plots.figures(found, analysis.values(rows, name, ["budget", "revenue", "runtime"]), rows["label"])


def _tick_labels(axis) -> list[str]:
    return [tick.get_text() for tick in axis.get_ticklabels()]


@pytest.mark.parametrize("name", ["imdb_votes", "budget"])
def test_heavy_tailed_features_are_drawn_on_a_log_axis(rows: pl.DataFrame, name: str) -> None:
    drawn = _figures(rows, name)
    histogram = drawn[f"{name}_histogram.png"].axes[0]
    violin = drawn[f"{name}_violin.png"].axes[0]
    assert histogram.get_xlabel() == violin.get_ylabel() == f"{name} (log scale)"
    assert {"10k", "1M"} <= set(_tick_labels(histogram.xaxis)) and {"10k", "1M"} <= set(_tick_labels(violin.yaxis))
    known = analysis.values(rows, name, ["budget"]).drop_nulls().to_numpy()
    # the view holds the data, not the empty decades down to 0
    low, high = violin.get_ylim()
    assert low > np.log10(1 + known.min()) - 0.5 and high < np.log10(1 + known.max()) + 0.5
    # the histogram is split by label
    assert [h.get_label() for h in histogram.get_legend().legend_handles] == ["would_not_watch", "would_watch"]
    plt.close("all")


def test_a_bounded_score_stays_linear(rows: pl.DataFrame) -> None:
    drawn = _figures(rows, "rt_score")
    assert drawn["rt_score_violin.png"].axes[0].get_ylabel() == "rt_score"
    plt.close("all")


def test_category_bars_are_split_by_label_beside_the_would_watch_share(rows: pl.DataFrame) -> None:
    figure = _figures(rows, "genre")["genre_bar.png"]
    counts, share = figure.axes
    expected = analysis.label_shares(analysis.values(rows, "genre", []), rows["label"], analysis_plots.TOP_CATEGORIES)
    by_label = [[bar.get_width() for bar in container] for container in counts.containers]
    assert by_label == [expected["would_not_watch"].to_list()[::-1], expected["would_watch"].to_list()[::-1]]
    assert [bar.get_width() for bar in share.containers[0]] == pytest.approx(expected["share"].to_list()[::-1])
    base = float(rows["label"].mean())
    assert share.get_xlabel() == f"would_watch share (dashed: all rows, {base:.0%})"
    assert share.lines[0].get_xdata()[0] == pytest.approx(base)
    plt.close("all")
