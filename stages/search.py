"""The hyperparameter search over the params.yaml grid, with stratified, seeded CV.

The grid is searched as Optuna categorical choices (TPE, random, or every
cell). n_estimators is not a search dimension: one fit at the largest value is
scored at every listed value (a booster's first n trees are the n-tree model),
which scores three grid cells for the price of one fit.
"""

import json
import logging
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np
import optuna
import pandas as pd
import xgboost as xgb
from sklearn.model_selection import StratifiedKFold

from stages import metrics
from stages.errors import PipelineError
from stages.params import SearchParams

log = logging.getLogger("reel_driver.search")

N_ESTIMATORS = "n_estimators"


@dataclass(frozen=True)
class Fold:
    train: xgb.DMatrix
    valid: xgb.DMatrix
    labels: np.ndarray
    held: np.ndarray  # row positions of the validation part


@dataclass
class Outcome:
    """What the search tried: one row per grid cell scored, and the best cell."""

    rows: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    best_score: float = float("-inf")
    configurations: int = 0
    fits: int = 0
    pruned: int = 0


def matrix(features: pd.DataFrame, labels: np.ndarray | None = None) -> xgb.DMatrix:
    return xgb.DMatrix(features, label=labels, enable_categorical=True)


def make_folds(features: pd.DataFrame, labels: np.ndarray, n_folds: int, seed: int) -> list[Fold]:
    """Stratified, shuffled folds; their matrices are built once for the whole search."""
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [
        Fold(matrix(features.iloc[fit], labels[fit]), matrix(features.iloc[held], labels[held]), labels[held], held)
        for fit, held in splitter.split(features, labels)
    ]


def booster_params(config: dict, seed: int, jobs: int, device: str) -> dict:
    """Grid names (sklearn's) -> XGBoost's native training params; n_estimators is the round count."""
    return {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "device": device,
        "seed": seed,
        "nthread": jobs,
        "eta": config["learning_rate"],
        "alpha": config["reg_alpha"],
        **{k: v for k, v in config.items() if k not in ("learning_rate", "reg_alpha", N_ESTIMATORS)},
    }


def fit(features: xgb.DMatrix, config: dict, seed: int, jobs: int, device: str) -> xgb.Booster:
    return xgb.train(booster_params(config, seed, jobs, device), features, num_boost_round=int(config[N_ESTIMATORS]))


def out_of_fold(folds: list[Fold], config: dict, seed: int, jobs: int, device: str) -> np.ndarray:
    """Each row's probability from the model of the fold that held it out: none saw its own row."""
    probabilities = np.full(sum(len(fold.held) for fold in folds), np.nan)
    for fold in folds:
        probabilities[fold.held] = fit(fold.train, config, seed, jobs, device).predict(fold.valid)
    return probabilities


def check_device(device: str) -> None:
    """XGBoost falls back to the CPU with only a warning; here a missing GPU is an error."""
    if device == "cpu":
        return
    probe = xgb.DMatrix(np.arange(8, dtype=float).reshape(4, 2), label=[0, 1, 0, 1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        booster = xgb.train({"device": device, "tree_method": "hist", "objective": "binary:logistic"}, probe, 1)
    used = json.loads(booster.save_config())["learner"]["generic_param"]["device"]
    if not used.startswith(device):
        reason = " ".join(str(w.message) for w in caught) or f"XGBoost used {used}"
        raise PipelineError(
            f"train.device = {device!r}, but XGBoost has no CUDA GPU here ({reason.strip()}); "
            "allowed: cpu, cuda (with an NVIDIA GPU and a CUDA build of xgboost)"
        )


def _sampler(settings: SearchParams, space: dict[str, list]) -> optuna.samplers.BaseSampler:
    if settings.strategy == "tpe":
        return optuna.samplers.TPESampler(seed=settings.seed)
    if settings.strategy == "random":
        return optuna.samplers.RandomSampler(seed=settings.seed)
    return optuna.samplers.GridSampler(space, seed=settings.seed)


def search(folds: list[Fold], grid: dict[str, list], settings: SearchParams, device: str) -> Outcome:
    """Find the grid cell with the best mean CV score."""
    trees = sorted(int(n) for n in grid[N_ESTIMATORS])
    space = {k: v for k, v in grid.items() if k != N_ESTIMATORS}
    configurations = int(np.prod([len(v) for v in space.values()]))
    trials = configurations if settings.strategy == "grid" else min(settings.budget, configurations)
    outcome = Outcome()
    seen: dict[tuple, float] = {}

    def score(trial: optuna.Trial) -> float:
        config = {k: trial.suggest_categorical(k, values) for k, values in space.items()}
        key = tuple(config.values())
        if key in seen:  # TPE may propose a configuration again: it costs nothing twice
            return seen[key]
        outcome.configurations += 1
        per_trees: dict[int, list[float]] = {n: [] for n in trees}
        state = "complete"
        for step, fold in enumerate(folds):
            booster = fit(fold.train, {**config, N_ESTIMATORS: trees[-1]}, settings.seed, settings.jobs, device)
            outcome.fits += 1
            for n in trees:
                probabilities = booster.predict(fold.valid, iteration_range=(0, n))
                per_trees[n].append(
                    metrics.objective(settings.scoring, fold.labels, probabilities, settings.threshold, settings.precision_floor)
                )
            trial.report(max(np.mean(s) for s in per_trees.values()), step)
            if step < len(folds) - 1 and trial.should_prune():
                state = "pruned"
                break
        for n, scores in per_trees.items():
            row = {"trial": trial.number, **config, N_ESTIMATORS: n, "cv_mean": float(np.mean(scores)),
                   "cv_std": float(np.std(scores)), "folds": len(scores), "state": state}
            outcome.rows.append(row)
            # ties go to the first found, which with sorted trees is the smaller model
            if state == "complete" and row["cv_mean"] > outcome.best_score:
                outcome.best_score, outcome.best = row["cv_mean"], {**config, N_ESTIMATORS: n}
        if state == "pruned":
            outcome.pruned += 1
            raise optuna.TrialPruned()
        seen[key] = max(np.mean(s) for s in per_trees.values())
        return seen[key]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1) if settings.prune else optuna.pruners.NopPruner()
    study = optuna.create_study(direction="maximize", sampler=_sampler(settings, space), pruner=pruner)
    log.info("searching %d of %d configurations x %d n_estimators values (%s, %d folds)",
             trials, configurations, len(trees), settings.strategy, len(folds))
    # a progress bar on a terminal; nothing in CI logs
    study.optimize(score, n_trials=trials, show_progress_bar=sys.stderr.isatty())
    if not outcome.best:
        raise PipelineError("search: every configuration was pruned; set search.prune: false or raise search.budget")
    return outcome
