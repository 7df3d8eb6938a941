"""evaluate: the model on hold-out rows only, at evaluate.threshold: the metrics
contract, per-row predictions, DVC plot data; and the owner's review lists, from the
training rows' out-of-fold probabilities (never from the hold-out, which they would bias)."""

import logging

import mlflow
import numpy as np
import polars as pl
from sklearn.metrics import precision_recall_curve, roc_curve

from stages import ensemble, metrics, params, paths, registry, scoring, tracking
from stages.errors import run_stage
from stages.outputs import write_json, write_parquet, write_text

log = logging.getLogger("reel_driver.evaluate")

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
    """The JSON behind each DVC plot, keyed by its path."""
    names = {0: "would_not_watch", 1: "would_watch"}
    predicted = metrics.flagged(probabilities, threshold)
    precision, recall, _ = precision_recall_curve(labels, probabilities)
    fpr, tpr, _ = roc_curve(labels, probabilities)
    sweep = [metrics.evaluation(labels, probabilities, float(t)) for t in SWEEP]
    ranked = sorted(importance.items(), key=lambda item: (-item[1], item[0]))[:TOP_FEATURES]
    r = lambda value: round(float(value), DECIMALS)  # noqa: E731
    return {
        paths.PLOT_CONFUSION: [{"actual": names[a], "predicted": names[p]} for a, p in zip(labels, predicted)],
        paths.PLOT_PRECISION_RECALL: [{"recall": r(x), "precision": r(y)} for x, y in zip(recall, precision)],
        paths.PLOT_ROC: [{"fpr": r(x), "tpr": r(y)} for x, y in zip(fpr, tpr)],
        paths.PLOT_THRESHOLDS: [
            {"threshold": float(t), "recall": r(s["recall"]), "precision": r(s["precision"]), "f2": r(s["f2"])}
            for t, s in zip(SWEEP, sweep)
        ],
        paths.PLOT_IMPORTANCE: [{"feature": name, "gain": r(gain)} for name, gain in ranked],
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


def main() -> None:
    settings = params.load().evaluate
    test = pl.read_parquet(paths.PREPARED_TEST)
    booster = scoring.load_booster(paths.MODEL)
    # the booster's probabilities, averaged with the ensemble's members where train.ensemble lists any
    probabilities = scoring.model_probabilities(booster, ensemble.load(paths.ENSEMBLE), test)
    labels = test.get_column("label").to_numpy()
    scores = metrics.evaluation(labels, probabilities, settings.threshold)
    scored = predictions(test, probabilities, settings.threshold)
    plots = plot_data(labels, probabilities, settings.threshold, booster.get_score(importance_type="gain"))

    write_json(scores, paths.EVALUATE_METRICS)
    write_parquet(scored, paths.PREDICTIONS)
    for path, rows in plots.items():
        write_json(rows, path)
    out_of_fold = pl.read_parquet(paths.OUT_OF_FOLD)
    training = predictions(out_of_fold, out_of_fold.get_column("probability").to_numpy(), settings.threshold)
    write_text(review(training, scored, settings.threshold, settings.review_below), paths.REVIEW)
    log.info("hold-out at %.2f: recall %.3f precision %.3f f2 %.3f AP %.3f (%d rows)", settings.threshold,
             scores["recall"], scores["precision"], scores["f2"], scores["average_precision"], scores["n_test"])

    with tracking.run("evaluate") as active:
        model_sha256 = tracking.model_sha256(paths.MODEL, paths.ENSEMBLE)
        mlflow.log_params({f"evaluate.{k}": v for k, v in settings.model_dump().items()})
        mlflow.set_tag("model_sha256", model_sha256)
        mlflow.log_metrics({f"test_{k}": v for k, v in scores.items() if v is not None})
        for path in (*plots, paths.REVIEW, paths.EVALUATE_METRICS):
            mlflow.log_artifact(str(path), artifact_path="evaluate")
        # the registered version of this model carries its hold-out metrics and threshold: what promote
        # gates on and what serve answers with
        if active is not None and (version := registry.record_evaluation(model_sha256, scores, active.info.run_id)):
            log.info("hold-out metrics recorded on %s version %s", registry.REGISTERED_MODEL, version)


if __name__ == "__main__":
    run_stage(main)
