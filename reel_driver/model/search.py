"""The hyperparameter search over the params.yaml grid, with stratified, seeded CV.

Every configuration gets one booster per fold, grown round by round and scored
at each n_estimators value on the way (a booster's first n trees are the n-tree
model), so one growth scores a configuration at every tree count. Boosters grow
in parallel, `search.jobs` at a time, one XGBoost thread each: on a few thousand
rows, one fit per core beats two threads per fit (measured on 2 cores: 0.19 s
against 0.75 s for 200 trees at depth 3 with another process busy, 0.21 s
against 0.24 s on an idle machine).

Strategies:
- halving (default): successive halving over the n_estimators values. A
  Latin-hypercube sample of `search.budget` configurations (every value of a
  key drawn about equally often) grows to the smallest n_estimators on every
  fold; the best 1/`search.reduction` of them grow on to the next value, and so
  on. Every decision uses all folds, never one noisy fold.
- tpe: Optuna's TPE proposes `search.budget` configurations one at a time, each
  grown to the largest n_estimators; with `search.prune`, Optuna's MedianPruner
  stops one that trails after its first folds.
- grid: every configuration to the largest n_estimators (small grids only).
"""

import itertools
import json
import logging
import math
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import xgboost as xgb
from sklearn.model_selection import StratifiedKFold
from tqdm import tqdm

from reel_driver.config.errors import PipelineError
from reel_driver.config.params import SearchParams
from reel_driver.model import metrics
from reel_driver.preparation import features

log = logging.getLogger("reel_driver.search")

N_ESTIMATORS = "n_estimators"


@dataclass(frozen=True)
class Fold:
    train: xgb.DMatrix
    valid: xgb.DMatrix
    labels: np.ndarray
    held: np.ndarray  # row positions of the validation part


@dataclass
class Candidate:
    """One configuration: a booster per fold, grown in place, and its scores per tree count."""

    trial: int
    config: dict
    boosters: list[xgb.Booster | None]
    rounds: list[int]
    scores: dict[int, list[float]]  # n_estimators -> score of each fold (nan: not grown that far)
    probabilities: dict[int, np.ndarray]  # n_estimators -> out-of-fold probability of each training row

    def mean(self, trees: int) -> float:
        return float(np.mean(self.scores[trees]))

    def complete(self, trees: int) -> bool:
        return not np.isnan(self.scores[trees]).any()


@dataclass
class Outcome:
    """What the search tried: one row per grid cell scored, and the best cell."""

    rows: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    best_score: float = float("-inf")
    best_probabilities: np.ndarray | None = None  # the best cell's out-of-fold probabilities
    configurations: int = 0
    fits: int = 0  # boosters grown (one per configuration and fold)
    rounds: int = 0  # boosting rounds run, over all boosters
    pruned: int = 0


def matrix(frame: pl.DataFrame, labels: np.ndarray | None = None) -> xgb.DMatrix:
    """Features as XGBoost reads them, named as the columns, categoricals as categories."""
    return xgb.DMatrix(frame.to_pandas(), label=labels, enable_categorical=True)


def fold_rows(labels: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, shuffled folds as (fit, held) row positions."""
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def make_folds(table: pl.DataFrame, labels: np.ndarray, n_folds: int, seed: int) -> list[Fold]:
    """``fold_rows``' folds; their matrices are built once for the whole search."""
    values, types = features.model_values(table)

    def part(rows: np.ndarray, labelled: bool) -> xgb.DMatrix:
        return xgb.DMatrix(values[rows], label=labels[rows] if labelled else None, feature_types=types,
                           enable_categorical=True, nthread=1)

    return [Fold(part(fit, True), part(held, False), labels[held], held) for fit, held in fold_rows(labels, n_folds, seed)]


def booster_params(config: dict, seed: int, device: str) -> dict:
    """Grid names (sklearn's) -> XGBoost's native training params; n_estimators is the round count.
    One thread: the search runs fits side by side instead, and the refit uses the same
    arithmetic as the fits it was chosen by."""
    return {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "device": device,
        "seed": seed,
        "nthread": 1,
        # boosters grow in steps, side by side; reseeding each round from (seed, round) makes
        # that equal to one uninterrupted xgb.train (without it, interleaved growth changed
        # 2 of 3 models in a test here: the random state is per thread, not per booster)
        "seed_per_iteration": True,
        "eta": config["learning_rate"],
        "alpha": config["reg_alpha"],
        **{k: v for k, v in config.items() if k not in ("learning_rate", "reg_alpha", N_ESTIMATORS)},
    }


def fit(training: xgb.DMatrix, config: dict, seed: int, device: str) -> xgb.Booster:
    return xgb.train(booster_params(config, seed, device), training, num_boost_round=int(config[N_ESTIMATORS]))


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


def latin_hypercube(space: dict[str, list], count: int, seed: int) -> list[dict]:
    """`count` distinct configurations, each key's values drawn about equally often;
    every configuration when the grid has no more than `count`."""
    cells = math.prod(len(values) for values in space.values())
    if cells <= count:
        return [dict(zip(space, values)) for values in itertools.product(*space.values())]
    rng = np.random.default_rng(seed)
    columns = {k: rng.permutation(np.resize(np.arange(len(v)), count)) for k, v in space.items()}
    configs, seen = [], set()
    for row in range(count):
        key = tuple(int(columns[k][row]) for k in space)
        while key in seen:  # rare on a large grid: redraw this one at random
            key = tuple(int(rng.integers(len(v))) for v in space.values())
        seen.add(key)
        configs.append({k: space[k][i] for k, i in zip(space, key)})
    return configs


class Search:
    """The search's state: folds, settings, the thread pool and what was found."""

    def __init__(self, folds: list[Fold], grid: dict[str, list], settings: SearchParams, device: str):
        self.folds, self.settings, self.device = folds, settings, device
        self.trees = sorted(int(n) for n in grid[N_ESTIMATORS])
        self.space = {k: v for k, v in grid.items() if k != N_ESTIMATORS}
        self.rows = sum(len(fold.held) for fold in folds)
        self.outcome = Outcome()
        self.best_seen = float("-inf")  # for the progress bar

    def candidate(self, trial: int, config: dict) -> Candidate:
        self.outcome.configurations += 1
        n_folds = len(self.folds)
        return Candidate(trial, config, [None] * n_folds, [0] * n_folds,
                         {n: [math.nan] * n_folds for n in self.trees},
                         {n: np.full(self.rows, math.nan) for n in self.trees})

    def _grow(self, task: tuple[Candidate, int, int]) -> tuple[xgb.Booster, dict[int, np.ndarray]]:
        """Grow one booster to `stop` rounds; the validation probabilities at each tree count passed."""
        candidate, index, stop = task
        fold = self.folds[index]
        booster = candidate.boosters[index]
        if booster is None:
            booster = xgb.Booster(booster_params(candidate.config, self.settings.seed, self.device), [fold.train])
        for iteration in range(candidate.rounds[index], stop):
            booster.update(fold.train, iteration)
        passed = [n for n in self.trees if candidate.rounds[index] < n <= stop]
        return booster, {n: booster.predict(fold.valid, iteration_range=(0, n)) for n in passed}

    def grow(self, pool: ThreadPoolExecutor, tasks: list[tuple[Candidate, int, int]]) -> None:
        """Run the tasks side by side, then record their scores in task order (deterministic)."""
        settings = self.settings
        for (candidate, index, stop), (booster, predicted) in zip(tasks, pool.map(self._grow, tasks)):
            fold = self.folds[index]
            if candidate.boosters[index] is None:
                self.outcome.fits += 1
            self.outcome.rounds += stop - candidate.rounds[index]
            candidate.boosters[index], candidate.rounds[index] = booster, stop
            for n, probabilities in predicted.items():
                candidate.scores[n][index] = metrics.objective(
                    settings.scoring, fold.labels, probabilities, settings.threshold, settings.precision_floor)
                candidate.probabilities[n][fold.held] = probabilities

    def record(self, candidate: Candidate, state: str) -> None:
        """One row per tree count scored; the best complete cell so far."""
        for n in self.trees:
            scored = [s for s in candidate.scores[n] if not math.isnan(s)]
            if not scored:
                continue
            row = {"trial": candidate.trial, **candidate.config, N_ESTIMATORS: n, "cv_mean": float(np.mean(scored)),
                   "cv_std": float(np.std(scored)), "folds": len(scored), "state": state}
            self.outcome.rows.append(row)
            # ties go to the first found, which with sorted trees is the smaller model
            if candidate.complete(n) and row["cv_mean"] > self.outcome.best_score:
                self.outcome.best_score, self.outcome.best = row["cv_mean"], {**candidate.config, N_ESTIMATORS: n}
                self.outcome.best_probabilities = candidate.probabilities[n]
        candidate.boosters = [None] * len(self.folds)  # memory: a recorded candidate grows no more

    def halving(self, pool: ThreadPoolExecutor, configs: list[dict], reduction: int, progress: tqdm) -> None:
        alive = [self.candidate(trial, config) for trial, config in enumerate(configs)]
        for step, trees in enumerate(self.trees):
            self.grow(pool, [(c, index, trees) for c in alive for index in range(len(self.folds))])
            progress.update(len(alive))
            if step == len(self.trees) - 1:
                break
            ranked = sorted(alive, key=lambda c: (-c.mean(trees), c.trial))
            keep = math.ceil(len(ranked) / reduction)
            for stopped in ranked[keep:]:
                self.record(stopped, "complete")
            alive = sorted(ranked[:keep], key=lambda c: c.trial)
            self.show_best(progress, ranked[0].mean(trees))
        for candidate in alive:
            self.record(candidate, "complete")

    def tpe(self, pool: ThreadPoolExecutor, trials: int, progress: tqdm) -> None:
        import optuna  # here: only this strategy needs it, and importing it costs 0.3 s

        settings, jobs, seen = self.settings, self.settings.jobs, {}

        def score(trial: optuna.Trial) -> float:
            config = {k: trial.suggest_categorical(k, values) for k, values in self.space.items()}
            key = tuple(config.values())
            progress.update(1)
            if key in seen:  # TPE may propose a configuration again: it costs nothing twice
                return seen[key]
            candidate = self.candidate(trial.number, config)
            for first in range(0, len(self.folds), jobs):
                chunk = range(first, min(first + jobs, len(self.folds)))
                self.grow(pool, [(candidate, index, self.trees[-1]) for index in chunk])
                done = chunk.stop
                trial.report(max(float(np.mean(s[:done])) for s in candidate.scores.values()), done - 1)
                if settings.prune and done < len(self.folds) and trial.should_prune():
                    self.outcome.pruned += 1
                    self.record(candidate, "pruned")
                    raise optuna.TrialPruned()
            self.record(candidate, "complete")
            seen[key] = max(candidate.mean(n) for n in self.trees)
            self.show_best(progress, self.outcome.best_score)
            return seen[key]

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1) if settings.prune else optuna.pruners.NopPruner()
        sampler = optuna.samplers.TPESampler(seed=settings.seed)
        optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner).optimize(score, n_trials=trials)

    def show_best(self, progress: tqdm, score: float) -> None:
        self.best_seen = max(self.best_seen, score)
        progress.set_postfix_str(f"best {self.best_seen:.4f}", refresh=False)


def search(folds: list[Fold], grid: dict[str, list], settings: SearchParams, device: str) -> Outcome:
    """Find the grid cell with the best mean CV score."""
    state = Search(folds, grid, settings, device)
    cells = math.prod(len(v) for v in state.space.values())
    steps = len(state.trees)
    if settings.strategy == "tpe":
        tried = total = min(settings.budget, cells)
    else:  # halving, or grid: halving that keeps every configuration
        configs = latin_hypercube(state.space, cells if settings.strategy == "grid" else settings.budget, settings.seed)
        reduction = settings.reduction if settings.strategy == "halving" else 1
        tried, total = len(configs), sum(math.ceil(len(configs) / reduction**step) for step in range(steps))
    log.info("searching %d of %d configurations x %d n_estimators values (%s, %d folds, %d boosters at a time)",
             tried, cells, steps, settings.strategy, len(folds), settings.jobs)
    # a progress bar (configurations grown to their next n_estimators, best so far) on a terminal; nothing in CI logs
    with ThreadPoolExecutor(max_workers=settings.jobs) as pool, \
            tqdm(total=total, desc="search", unit=" grown", disable=not sys.stderr.isatty()) as progress:
        if settings.strategy == "tpe":
            state.tpe(pool, total, progress)
        else:
            state.halving(pool, configs, reduction, progress)
    # never empty, so no error for it: halving and grid record every configuration complete at the
    # smallest n_estimators, and TPE's first trial always completes (a MedianPruner prunes nothing
    # before one trial has completed); every fold score is a number (F2 and recall_at_precision with
    # zero_division=0, average precision 0.0 on a fold without positives)
    assert state.outcome.best, "a search always completes its first configuration"
    return state.outcome
