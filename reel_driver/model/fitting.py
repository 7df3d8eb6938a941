"""train's steps between reading the prepared rows and writing the model: the search over the
grid, the refit of its best cell, the ensemble's members and the search summary."""

import time

import numpy as np
import polars as pl
import xgboost as xgb

from reel_driver.config import params
from reel_driver.model import ensemble, metrics, search


def training_matrix(prepared: pl.DataFrame, columns: list[str]) -> tuple[pl.DataFrame, np.ndarray]:
    """Features in the recorded column order and 0/1 labels."""
    return prepared.select(columns), prepared.get_column("label").to_numpy()


def timed_search(features: pl.DataFrame, labels: np.ndarray, grid: dict, settings: params.SearchParams,
                 device: str) -> tuple[search.Outcome, float]:
    """The search over the grid, and its seconds: the fold matrices built and every configuration
    scored (what the log and MLflow report, and what bench/search.py times)."""
    settings.check_folds(int(np.bincount(labels, minlength=2).min()))
    started = time.perf_counter()
    folds = search.make_folds(features, labels, settings.cv_folds, settings.seed)
    outcome = search.search(folds, grid, settings, device)
    return outcome, time.perf_counter() - started


def refit(features: pl.DataFrame, labels: np.ndarray, outcome: search.Outcome, seed: int, device: str) -> xgb.Booster:
    """The best cell fitted on every training row."""
    return search.fit(search.matrix(features, labels), outcome.best, seed, device)


def with_members(training_features: pl.DataFrame, labels: np.ndarray, outcome: search.Outcome,
                 families: list[str], settings: params.SearchParams) -> tuple[list[ensemble.Member], np.ndarray]:
    """The ensemble's members (``families``, train.ensemble) at the best cell, fitted on every training
    row, and the ensemble's out-of-fold probabilities: each member fitted on the search's folds, as the
    booster was, and averaged with the best cell's out-of-fold probabilities. Without members, the
    booster's own."""
    oof = outcome.best_probabilities
    if not families:
        return [], oof
    folds = search.fold_rows(labels, settings.cv_folds, settings.seed)
    members, member_oofs = [], []
    for family in families:
        member_oof = np.zeros(len(labels))
        for fit, held in folds:
            member = ensemble.fit(family, training_features[fit], labels[fit], outcome.best, settings.seed)
            member_oof[held] = member.probabilities(training_features[held])
        member_oofs.append(member_oof)
        members.append(ensemble.fit(family, training_features, labels, outcome.best, settings.seed))
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


def out_of_fold_summary(labels: np.ndarray, oof: np.ndarray, settings: params.SearchParams, columns: int) -> dict:
    """The search's objective on every training row's out-of-fold probability, and AP beside it."""
    return {
        "score": round(metrics.objective(settings.scoring, labels, oof, settings.threshold, settings.precision_floor), 6),
        "average_precision": round(metrics.objective("average_precision", labels, oof, 0.5, 0.0), 6),
        "columns": columns,
    }
