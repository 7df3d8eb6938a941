"""evaluate's steps on scored hold-out rows: per-row predictions, the JSON behind each DVC
plot, and the owner's review lists from the training rows' out-of-fold probabilities."""

import numpy as np
import polars as pl
from sklearn.metrics import precision_recall_curve, roc_curve

from reel_driver.model import metrics

# The threshold sweep plot: every 0.05 from 0.05 to 0.95.
SWEEP = np.round(np.arange(0.05, 0.951, 0.05), 2)
TOP_FEATURES = 30
DECIMALS = 6  # plot data rounded: stable bytes, no false precision


def predictions(test: pl.DataFrame, probabilities: np.ndarray, threshold: float) -> pl.DataFrame:
    """One row per hold-out movie: probability, 0/1 prediction and its confusion cell."""
    predicted = metrics.flagged(probabilities, threshold)
    return test.select("imdb_id", "media_title", "label").with_columns(
        pl.Series("probability", probabilities, dtype=pl.Float64),
        pl.Series("prediction", predicted, dtype=pl.Int8),
    ).with_columns(metrics.confusion_cell(pl.col("label"), pl.col("prediction") == 1).alias("cm_value"))


def plot_data(labels: np.ndarray, probabilities: np.ndarray, threshold: float, importance: dict[str, float]) -> dict:
    """The JSON behind each DVC plot, keyed by its name (``PLOTS``)."""
    names = {0: "would_not_watch", 1: "would_watch"}
    predicted = metrics.flagged(probabilities, threshold)
    precision, recall, _ = precision_recall_curve(labels, probabilities)
    fpr, tpr, _ = roc_curve(labels, probabilities)
    sweep = [metrics.evaluation(labels, probabilities, float(t)) for t in SWEEP]
    ranked = sorted(importance.items(), key=lambda item: (-item[1], item[0]))[:TOP_FEATURES]
    r = lambda value: round(float(value), DECIMALS)  # noqa: E731
    return {
        "confusion": [{"actual": names[a], "predicted": names[p]} for a, p in zip(labels, predicted)],
        "precision_recall": [{"recall": r(x), "precision": r(y)} for x, y in zip(recall, precision)],
        "roc": [{"fpr": r(x), "tpr": r(y)} for x, y in zip(fpr, tpr)],
        "threshold_sweep": [
            {"threshold": float(t), "recall": r(s["recall"]), "precision": r(s["precision"]), "f2": r(s["f2"])}
            for t, s in zip(SWEEP, sweep)
        ],
        "feature_importance": [{"feature": name, "gain": r(gain)} for name, gain in ranked],
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def review(training: pl.DataFrame, hold_out: pl.DataFrame, threshold: float, below: float) -> str:
    """Markdown for the owner's relabelling: the training rows' false negatives, then those just
    below the threshold, by out-of-fold probability (``predictions`` of train_oof.parquet).

    Hold-out rows are counted, never listed: relabeling exactly the rows the model gets wrong
    there would move the test set toward the model's view.
    """
    def table(rows: pl.DataFrame) -> str:
        lines = ["| probability | title | imdb_id | label |", "|---:|---|---|---|"]
        lines += [
            f"| {row['probability']:.3f} | {_cell(row['media_title'])} | {row['imdb_id']} | "
            f"{'would_watch' if row['label'] else 'would_not_watch'} |"
            for row in rows.sort("probability", descending=True).iter_rows(named=True)
        ]
        return "\n".join(lines) if rows.height else "(none)"

    false_negatives = training.filter(pl.col("cm_value") == "FN")
    near = training.filter((pl.col("probability") < threshold) & (pl.col("probability") >= threshold - below))
    held_back = hold_out.filter(pl.col("cm_value") == "FN").height
    return (
        f"# Review lists (training rows, out-of-fold probabilities, threshold {threshold:g})\n\n"
        "Each probability comes from a cross-validation model that did not see the row. "
        f"The hold-out's {held_back} false negatives are not listed, so that relabeling leaves the test set "
        "as the model found it.\n\n"
        f"## False negatives: would watch, scored below {threshold:g} ({false_negatives.height})\n\n"
        f"{table(false_negatives)}\n\n"
        f"## Just below the threshold: {threshold - below:g} <= probability < {threshold:g} ({near.height})\n\n"
        f"{table(near)}\n"
    )
