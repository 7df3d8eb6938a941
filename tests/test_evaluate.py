"""evaluate's pure parts: predictions, plot data and review lists on a known frame."""

import numpy as np
import polars as pl

from reel_driver.model import metrics, reporting
from stages import evaluate

TEST = pl.DataFrame({
    "imdb_id": ["tt1000001", "tt1000002", "tt1000003", "tt1000004", "tt1000005", "tt1000006"],
    "media_title": ["Hit", "Sleeper | Cut", "Miss", "Near Miss", "Noise", "Far"],
    "label": pl.Series([1, 1, 0, 0, 0, 1], dtype=pl.Int8),
})
PROBABILITIES = np.array([0.9, 0.30, 0.5, 0.25, 0.05, 0.01])


def test_predictions_carry_the_confusion_cell() -> None:
    scored = reporting.predictions(TEST, PROBABILITIES, 0.35)
    assert scored.get_column("prediction").to_list() == [1, 0, 1, 0, 0, 0]
    assert scored.get_column("cm_value").to_list() == ["TP", "FN", "FP", "TN", "TN", "FN"]
    assert scored.columns == ["imdb_id", "media_title", "label", "probability", "prediction", "cm_value"]


def test_review_lists_false_negatives_and_the_items_just_below() -> None:
    hold_out = reporting.predictions(TEST.with_columns(imdb_id=pl.col("imdb_id") + "9"), PROBABILITIES[::-1], 0.35)
    text = reporting.review(reporting.predictions(TEST, PROBABILITIES, 0.35), hold_out, 0.35, 0.15)
    # the hold-out is counted (two false negatives), never listed
    assert "hold-out's 2 false negatives are not listed" in text and "tt10000019" not in text
    false_negatives, near = text.split("## Just below")
    assert "(2)" in false_negatives
    assert false_negatives.index("Sleeper \\| Cut") < false_negatives.index("Far")  # highest first, pipes escaped
    assert "| 0.300 | Sleeper \\| Cut | tt1000002 | would_watch |" in false_negatives
    assert "0.2 <= probability < 0.35 (2)" in near
    assert "Near Miss" in near and "Noise" not in near and "Hit" not in near


def test_plot_data_matches_the_metrics() -> None:
    labels = TEST.get_column("label").to_numpy()
    plots = reporting.plot_data(labels, PROBABILITIES, 0.35, {"b": 2.0, "a": 2.0, "c": 5.0})
    assert set(plots) == set(evaluate.PLOTS) == {"confusion", "precision_recall", "roc", "threshold_sweep",
                                                 "feature_importance"}
    confusion = plots["confusion"]
    assert confusion[1] == {"actual": "would_watch", "predicted": "would_not_watch"}
    sweep = {row["threshold"]: row for row in plots["threshold_sweep"]}
    assert len(sweep) == 19 and min(sweep) == 0.05 and max(sweep) == 0.95
    at = metrics.evaluation(labels, PROBABILITIES, 0.35)
    assert sweep[0.35]["recall"] == round(at["recall"], 6) and sweep[0.35]["f2"] == round(at["f2"], 6)
    assert [row["feature"] for row in plots["feature_importance"]] == ["c", "a", "b"]
    roc = plots["roc"]
    assert roc[0] == {"fpr": 0.0, "tpr": 0.0} and roc[-1] == {"fpr": 1.0, "tpr": 1.0}
