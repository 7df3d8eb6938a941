"""train: search the params.yaml grid with stratified CV, refit the best cell on all
training rows, write the model (XGBoost JSON; the ensemble's members beside it where
train.ensemble lists any), the search summary and every cell tried."""

import json
import logging

import polars as pl

from reel_driver.config import params, paths
from reel_driver.config.errors import run_stage
from reel_driver.data.outputs import write_bytes, write_json, write_parquet
from reel_driver.model import ensemble, fitting, search
from reel_driver.tracking import records, runs

log = logging.getLogger("reel_driver.train")


def main() -> None:
    settings = params.load()
    search.check_device(settings.train.device)
    ensemble.check_installed(settings.train.ensemble)
    mlflow_ready = runs.open_in_background()
    # the analysis' selection when analysis.apply_selection is true, else every column of prep
    columns = json.loads(paths.SELECTION.read_text())["columns"]
    prepared = pl.read_parquet(paths.PREPARED_TRAIN)
    training_features, labels = fitting.training_matrix(prepared, columns)
    outcome, seconds = fitting.timed_search(training_features, labels, settings.grid, settings.search,
                                           settings.train.device)
    model = fitting.refit(training_features, labels, outcome, settings.search.seed, settings.train.device)
    # what publish writes back for training rows: the best cell's fold models (with the members' where
    # there are any), none of which saw its row
    members, oof = fitting.with_members(training_features, labels, outcome, settings.train.ensemble,
                                        settings.search)

    result = fitting.summary(outcome, settings.search) | {
        "out_of_fold": fitting.out_of_fold_summary(labels, oof, settings.search, len(columns))}
    write_bytes(bytes(model.save_raw("json")), paths.MODEL)
    write_json(ensemble.to_json(members), paths.ENSEMBLE)
    write_parquet(fitting.cv_results(outcome), paths.CV_RESULTS)
    write_parquet(prepared.select("imdb_id", "media_title", "label").with_columns(probability=oof), paths.OUT_OF_FOLD)
    write_json(result, paths.TRAIN_METRICS)
    log.info("best %s %.4f with %s; %d cells, %d boosting rounds in %.1f s",
             result["scoring"], outcome.best_score, outcome.best, result["candidates"], outcome.rounds, seconds)
    if members:
        log.info("averaged with %s at the best cell: out-of-fold %s %.4f, AP %.4f", ", ".join(settings.train.ensemble),
                 result["scoring"], result["out_of_fold"]["score"], result["out_of_fold"]["average_precision"])
    mlflow_ready()
    served = {"features": paths.FEATURES, "normalization": paths.NORMALIZATION, "model": paths.MODEL,
              "ensemble": paths.ENSEMBLE}
    records.train_run(settings, result, seconds, model, columns, prepared.height, served,
                      training_data=paths.PREPARED_TRAIN, artifacts=[paths.CV_RESULTS, paths.TRAIN_METRICS])


if __name__ == "__main__":
    run_stage(main)
