"""train: search the params.yaml grid with stratified CV, refit the best cell on all
training rows, write the model (XGBoost JSON; the ensemble's members beside it where
train.ensemble lists any), the search summary and every cell tried."""

import json
import logging
import time
import warnings

import numpy as np
import polars as pl
import xgboost as xgb

from stages import ensemble, features, metrics, params, paths, search, tracking
from stages.errors import run_stage
from stages.outputs import write_bytes, write_json, write_parquet

log = logging.getLogger("reel_driver.train")


def training_matrix(prepared: pl.DataFrame, columns: list[str]) -> tuple[pl.DataFrame, np.ndarray]:
    """Features in the recorded column order and 0/1 labels."""
    return prepared.select(columns), prepared.get_column("label").to_numpy()


def timed_search(features: pl.DataFrame, labels: np.ndarray, settings: params.Params) -> tuple[search.Outcome, float]:
    """The search over the grid, and its seconds: the fold matrices built and every configuration
    scored (what the log and MLflow report, and what bench/search.py times)."""
    settings.search.check_folds(int(np.bincount(labels, minlength=2).min()))
    started = time.perf_counter()
    folds = search.make_folds(features, labels, settings.search.cv_folds, settings.search.seed)
    outcome = search.search(folds, settings.grid, settings.search, settings.train.device)
    return outcome, time.perf_counter() - started


def refit(features: pl.DataFrame, labels: np.ndarray, outcome: search.Outcome, settings: params.Params) -> xgb.Booster:
    """The best cell fitted on every training row."""
    return search.fit(search.matrix(features, labels), outcome.best, settings.search.seed, settings.train.device)


def with_members(training_features: pl.DataFrame, labels: np.ndarray, outcome: search.Outcome,
                 settings: params.Params) -> tuple[list[ensemble.Member], np.ndarray]:
    """The ensemble's members (train.ensemble) at the best cell, fitted on every training row, and the
    ensemble's out-of-fold probabilities: each member fitted on the search's folds, as the booster was,
    and averaged with the best cell's out-of-fold probabilities. Without members, the booster's own."""
    oof = outcome.best_probabilities
    if not settings.train.ensemble:
        return [], oof
    folds = search.fold_rows(labels, settings.search.cv_folds, settings.search.seed)
    members, member_oofs = [], []
    for family in settings.train.ensemble:
        member_oof = np.zeros(len(labels))
        for fit, held in folds:
            member = ensemble.fit(family, training_features[fit], labels[fit], outcome.best, settings.search.seed)
            member_oof[held] = member.probabilities(training_features[held])
        member_oofs.append(member_oof)
        members.append(ensemble.fit(family, training_features, labels, outcome.best, settings.search.seed))
    return members, np.mean([oof, *member_oofs], axis=0)


def summary(outcome: search.Outcome, settings: params.SearchParams) -> dict:
    """metrics/train.json: what was searched and what won; no wall-clock values."""
    return {
        "scoring": metrics.scoring_name(settings.scoring, settings.threshold, settings.precision_floor),
        "best_cv_score": round(outcome.best_score, 6),
        "best_params": outcome.best,
        "candidates": len(outcome.rows),
        "configurations": outcome.configurations,
        "pruned": outcome.pruned,
        "fits": outcome.fits,
        "boosting_rounds": outcome.rounds,
        "cv_folds": settings.cv_folds,
        "strategy": settings.strategy,
    }


def cv_results(outcome: search.Outcome) -> pl.DataFrame:
    """Every grid cell scored, best first (ties in trial order)."""
    return pl.DataFrame(outcome.rows).sort(["cv_mean", "trial", "n_estimators"], descending=[True, False, False])


def _log_run(settings: params.Params, summary_: dict, seconds: float, booster, columns: list[str],
             training_rows: int) -> None:
    # imported here: tracking.open_in_background has loaded them beside the search
    import mlflow
    import mlflow.xgboost

    from stages import registry

    with tracking.run("train"):
        mlflow.log_params({
            **{f"grid.{k}": v for k, v in settings.grid.items()},
            **{f"search.{k}": v for k, v in settings.search.model_dump().items()},
            "train.device": settings.train.device,
            "train.ensemble": ",".join(settings.train.ensemble) or "none",
            **{f"best.{k}": v for k, v in summary_["best_params"].items()},
        })
        mlflow.set_tags({"model_sha256": tracking.model_sha256(paths.MODEL, paths.ENSEMBLE),
                         "train_data_sha256": tracking.sha256(paths.PREPARED_TRAIN)})
        mlflow.log_metrics({"cv_best_score": summary_["best_cv_score"], "search_seconds": seconds,
                            "configurations": summary_["configurations"], "fits": summary_["fits"],
                            "boosting_rounds": summary_["boosting_rounds"]})
        mlflow.log_artifact(str(paths.CV_RESULTS))
        mlflow.log_artifact(str(paths.TRAIN_METRICS))
        spec = features.FeatureSpec.load(paths.FEATURES, paths.NORMALIZATION)
        built = registry.feature_example(spec, columns)
        example = built.to_pandas()
        # MLflow tries the example as a JSON serving request, which cannot carry the
        # pandas categories the booster reads, and warns; this flavor is for loading
        # the booster, not for serving raw rows, so those warnings are noise here.
        # mlflow.pyfunc announces at INFO, on every run, that it checks the serving
        # model's example against its signature: a failed check still raises.
        for noisy, level in (("mlflow.models.model", logging.ERROR), ("mlflow.utils.requirements_utils", logging.ERROR),
                             ("mlflow.pyfunc", logging.WARNING)):
            logging.getLogger(noisy).setLevel(level)
        with warnings.catch_warnings():
            # the integer columns are the one-hot ones, which the feature build never leaves empty
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
            signature = mlflow.models.infer_signature(example, booster.predict(search.matrix(built)))
        mlflow.xgboost.log_model(booster, name="model", model_format="json", input_example=example,
                                 pip_requirements=tracking.requirements(), signature=signature)
        version = registry.log_served_model(
            {"features": paths.FEATURES, "normalization": paths.NORMALIZATION, "model": paths.MODEL,
             "ensemble": paths.ENSEMBLE}, spec, training_rows, settings.train.ensemble,
        )
        log.info("registered %s version %s (`reel-driver promote` makes it the served champion)",
                 registry.REGISTERED_MODEL, version)


def main() -> None:
    settings = params.load()
    search.check_device(settings.train.device)
    ensemble.check_installed(settings.train.ensemble)
    mlflow_ready = tracking.open_in_background()
    # the analysis' selection when analysis.apply_selection is true, else every column of prep
    columns = json.loads(paths.SELECTION.read_text())["columns"]
    prepared = pl.read_parquet(paths.PREPARED_TRAIN)
    training_features, labels = training_matrix(prepared, columns)
    outcome, seconds = timed_search(training_features, labels, settings)
    model = refit(training_features, labels, outcome, settings)
    # what publish writes back for training rows: the best cell's fold models (with the members' where
    # there are any), none of which saw its row
    members, oof = with_members(training_features, labels, outcome, settings)

    result = summary(outcome, settings.search)
    # the same objective on every training row's out-of-fold probability, and AP beside it
    result["out_of_fold"] = {
        "score": round(metrics.objective(settings.search.scoring, labels, oof, settings.search.threshold,
                                         settings.search.precision_floor), 6),
        "average_precision": round(metrics.objective("average_precision", labels, oof, 0.5, 0.0), 6),
        "columns": len(columns),
    }
    write_bytes(bytes(model.save_raw("json")), paths.MODEL)
    write_json(ensemble.to_json(members), paths.ENSEMBLE)
    write_parquet(cv_results(outcome), paths.CV_RESULTS)
    write_parquet(prepared.select("imdb_id", "media_title", "label").with_columns(probability=oof), paths.OUT_OF_FOLD)
    write_json(result, paths.TRAIN_METRICS)
    log.info("best %s %.4f with %s; %d cells, %d boosting rounds in %.1f s",
             result["scoring"], outcome.best_score, outcome.best, result["candidates"], outcome.rounds, seconds)
    if members:
        log.info("averaged with %s at the best cell: out-of-fold %s %.4f, AP %.4f", ", ".join(settings.train.ensemble),
                 result["scoring"], result["out_of_fold"]["score"], result["out_of_fold"]["average_precision"])
    mlflow_ready()
    _log_run(settings, result, seconds, model, columns, prepared.height)


if __name__ == "__main__":
    run_stage(main)
