"""evaluate: the model on hold-out rows only, at evaluate.threshold: the metrics
contract, per-row predictions, DVC plot data; and the owner's review lists, from the
training rows' out-of-fold probabilities (never from the hold-out, which they would bias)."""

import logging

import polars as pl

from reel_driver.config import params, paths
from reel_driver.config.errors import run_stage
from reel_driver.data.outputs import write_json, write_parquet, write_text
from reel_driver.model import ensemble, metrics, reporting, scoring
from reel_driver.tracking import records

log = logging.getLogger("reel_driver.evaluate")

# where each of reporting.plot_data's plots goes (dvc.yaml's plots)
PLOTS = {"confusion": paths.PLOT_CONFUSION, "precision_recall": paths.PLOT_PRECISION_RECALL, "roc": paths.PLOT_ROC,
         "threshold_sweep": paths.PLOT_THRESHOLDS, "feature_importance": paths.PLOT_IMPORTANCE}


def main() -> None:
    settings = params.load().evaluate
    test = pl.read_parquet(paths.PREPARED_TEST)
    booster = scoring.load_booster(paths.MODEL)
    # the booster's probabilities, averaged with the ensemble's members where train.ensemble lists any
    probabilities = scoring.model_probabilities(booster, ensemble.load(paths.ENSEMBLE), test)
    labels = test.get_column("label").to_numpy()
    scores = metrics.evaluation(labels, probabilities, settings.threshold)
    scored = reporting.predictions(test, probabilities, settings.threshold)
    plots = reporting.plot_data(labels, probabilities, settings.threshold, booster.get_score(importance_type="gain"))

    write_json(scores, paths.EVALUATE_METRICS)
    write_parquet(scored, paths.PREDICTIONS)
    for name, rows in plots.items():
        write_json(rows, PLOTS[name])
    out_of_fold = pl.read_parquet(paths.OUT_OF_FOLD)
    training = reporting.predictions(out_of_fold, out_of_fold.get_column("probability").to_numpy(), settings.threshold)
    write_text(reporting.review(training, scored, settings.threshold, settings.review_below), paths.REVIEW)
    log.info("hold-out at %.2f: recall %.3f precision %.3f f2 %.3f AP %.3f (%d rows)", settings.threshold,
             scores["recall"], scores["precision"], scores["f2"], scores["average_precision"], scores["n_test"])
    records.evaluate_run(settings, scores, [*PLOTS.values(), paths.REVIEW, paths.EVALUATE_METRICS],
                         model=paths.MODEL, ensemble=paths.ENSEMBLE)


if __name__ == "__main__":
    run_stage(main)
