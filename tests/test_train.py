"""The search and the train stage: known best cells, determinism, MLflow records."""

import hashlib
import json
import shutil

import mlflow
import numpy as np
import polars as pl
import pytest
import xgboost as xgb
from sklearn.metrics import fbeta_score
from sklearn.model_selection import StratifiedKFold

from reel_driver.config import params, paths
from reel_driver.config.errors import PipelineError
from reel_driver.data import sample
from reel_driver.model import fitting, search
from reel_driver.preparation import features, rows, training_set
from reel_driver.tracking import registry
from stages import analyze, evaluate, extract, prep, train
from tests.conftest import model_identity
from tests.test_prep import SETTINGS

TINY_GRID = {
    "scale_pos_weight": [1.0, 9.0],
    "max_depth": [2, 4],
    "n_estimators": [20, 60],
    "min_child_weight": [1.0],
    "learning_rate": [0.1, 0.3],
    "gamma": [0.0],
    "reg_alpha": [0.0],
    "subsample": [0.8],
    "max_delta_step": [0.0],
    "colsample_bytree": [1.0],
    "colsample_bylevel": [1.0],
}


def search_settings(**changes: object) -> params.SearchParams:
    base = {"strategy": "grid", "cv_folds": 3, "scoring": "f2", "threshold": 0.35, "precision_floor": 0.5,
            "budget": 100, "reduction": 3, "prune": False, "seed": 7, "jobs": 2}
    return params.SearchParams(**{**base, **changes})


@pytest.fixture(scope="module")
def data():
    training = training_set.training_rows(rows.classify(sample.generate(1500, 3), SETTINGS.prep))
    spec = features.fit(training, SETTINGS.prep)
    return features.build(training, spec), training.get_column("label").to_numpy()


def brute_force(features_, labels, grid, settings) -> dict[tuple, float]:
    """Every cell scored the slow, obvious way: sklearn's XGBClassifier per fold and cell,
    each fit in one go (the search grows its boosters in steps, side by side)."""
    features_ = features_.to_pandas()
    keys = list(grid)
    cells = [dict(zip(keys, values)) for values in np.array(np.meshgrid(*grid.values()), dtype=object).T.reshape(-1, len(keys))]
    splitter = StratifiedKFold(settings.cv_folds, shuffle=True, random_state=settings.seed)
    scores = {}
    for cell in cells:
        per_fold = []
        for fit_rows, held in splitter.split(features_, labels):
            model = xgb.XGBClassifier(**cell, tree_method="hist", enable_categorical=True,
                                      random_state=settings.seed, n_jobs=1, seed_per_iteration=True)
            model.fit(features_.iloc[fit_rows], labels[fit_rows])
            predicted = model.predict_proba(features_.iloc[held])[:, 1] >= settings.threshold
            per_fold.append(fbeta_score(labels[held], predicted, beta=2, zero_division=0))
        scores[tuple(cell[k] for k in keys)] = float(np.mean(per_fold))
    return scores


def test_grid_search_finds_the_brute_force_best_cell(data) -> None:
    features_, labels = data
    settings = search_settings()
    outcome = search.search(search.make_folds(features_, labels, 3, settings.seed), TINY_GRID, settings, "cpu")

    expected = brute_force(features_, labels, TINY_GRID, settings)
    assert len(outcome.rows) == len(expected) == 16
    found = {tuple(row[k] for k in TINY_GRID): row["cv_mean"] for row in outcome.rows}
    assert found == pytest.approx(expected, abs=1e-9)
    best = max(expected.values())
    assert outcome.best_score == pytest.approx(best)
    assert expected[tuple(outcome.best[k] for k in TINY_GRID)] == pytest.approx(best)
    assert outcome.fits == 8 * 3  # one booster per configuration and fold: n_estimators comes free
    assert outcome.rounds == 8 * 3 * 60


def test_the_ensemble_averages_members_fitted_as_the_booster_was_on_each_fold(data) -> None:
    from lightgbm import LGBMClassifier

    from reel_driver.model import ensemble

    features_, labels = data
    settings = SETTINGS.model_copy(update={
        "search": search_settings(), "train": SETTINGS.train.model_copy(update={"ensemble": ["lightgbm", "catboost"]})})
    outcome = search.search(search.make_folds(features_, labels, 3, 7), TINY_GRID, settings.search, "cpu")
    members, oof = fitting.with_members(features_, labels, outcome, settings.train.ensemble, settings.search)
    assert [member.family for member in members] == ["lightgbm", "catboost"]

    # the mean of three out-of-fold probabilities: the booster's, and each member's from the same folds,
    # which are sklearn-API models on the same rows and settings
    from catboost import CatBoostClassifier

    cell, categorical = outcome.best, [c for c, dtype in features_.schema.items() if isinstance(dtype, pl.Enum)]
    trees, depth, rate, weight = int(cell["n_estimators"]), int(cell["max_depth"]), cell["learning_rate"], cell["scale_pos_weight"]
    as_text = features_.with_columns(pl.col(categorical).cast(pl.String).fill_null("(missing)")).to_pandas()
    expected = {family: np.zeros(len(labels)) for family in ("lightgbm", "catboost")}
    for fit, held in StratifiedKFold(3, shuffle=True, random_state=7).split(features_, labels):
        light = LGBMClassifier(n_estimators=trees, max_depth=depth, num_leaves=2**depth, learning_rate=rate,
                               scale_pos_weight=weight, random_state=7, n_jobs=1, deterministic=True, verbose=-1)
        light.fit(features_[fit].to_pandas(), labels[fit])
        expected["lightgbm"][held] = light.predict_proba(features_[held].to_pandas())[:, 1]
        cat = CatBoostClassifier(iterations=trees, depth=depth, learning_rate=rate, scale_pos_weight=weight,
                                 random_seed=7, thread_count=1, verbose=0, allow_writing_files=False)
        cat.fit(as_text.iloc[fit], labels[fit], cat_features=categorical)
        expected["catboost"][held] = cat.predict_proba(as_text.iloc[held])[:, 1]
    assert oof == pytest.approx((outcome.best_probabilities + expected["lightgbm"] + expected["catboost"]) / 3, abs=1e-9)
    assert not np.allclose(oof, outcome.best_probabilities)

    # written and read back, each member scores as it did
    restored = [ensemble.Member.from_json(entry) for entry in ensemble.to_json(members)["members"]]
    for member, again in zip(members, restored, strict=True):
        assert np.array_equal(member.probabilities(features_[:50]), again.probabilities(features_[:50]))
    assert fitting.with_members(features_, labels, outcome, [], settings.search) == ([], outcome.best_probabilities)


def test_halving_grows_only_the_best_third_and_scores_them_as_one_fit_would(data) -> None:
    features_, labels = data
    settings = search_settings(strategy="halving", budget=8, reduction=3)
    outcome = search.search(search.make_folds(features_, labels, 3, settings.seed), TINY_GRID, settings, "cpu")

    expected = brute_force(features_, labels, TINY_GRID, settings)
    first = sorted((row for row in outcome.rows if row["n_estimators"] == 20), key=lambda row: -row["cv_mean"])
    grown = [row for row in outcome.rows if row["n_estimators"] == 60]
    assert len(first) == 8 and len(grown) == 3  # ceil(8 / 3) grow on to 60 trees
    assert {row["trial"] for row in grown} == {row["trial"] for row in first[:3]}
    for row in outcome.rows:  # a booster grown 20 rounds, then 40 more beside others, is the 60-round fit
        assert row["cv_mean"] == pytest.approx(expected[tuple(row[k] for k in TINY_GRID)], abs=1e-9)
    assert outcome.rounds == 8 * 3 * 20 + 3 * 3 * 40
    assert outcome.best_score == max(row["cv_mean"] for row in outcome.rows)


def test_parallel_growth_changes_nothing(data) -> None:
    features_, labels = data
    folds = search.make_folds(features_, labels, 3, 7)
    alone = search.search(folds, TINY_GRID, search_settings(strategy="halving", budget=8, jobs=1), "cpu")
    side_by_side = search.search(folds, TINY_GRID, search_settings(strategy="halving", budget=8, jobs=2), "cpu")
    assert alone.rows == side_by_side.rows
    assert np.array_equal(alone.best_probabilities, side_by_side.best_probabilities)


def test_latin_hypercube_draws_every_value_about_equally_and_never_twice() -> None:
    space = {"a": [1, 2, 3], "b": [0.1, 0.2], "c": [5, 6, 7, 8]}
    configs = search.latin_hypercube(space, 12, seed=0)
    assert len({tuple(c.values()) for c in configs}) == 12
    for key, values in space.items():
        counts = [sum(c[key] == v for c in configs) for v in values]
        assert max(counts) - min(counts) <= 1, key
    assert len(search.latin_hypercube(space, 100, seed=0)) == 24  # a small grid: every cell


def test_tpe_is_deterministic_and_records_every_cell_it_scores(data) -> None:
    features_, labels = data
    settings = search_settings(strategy="tpe", budget=8)
    # two searches on folds built separately: the same cells, scores and winner
    first = search.search(search.make_folds(features_, labels, 3, settings.seed), TINY_GRID, settings, "cpu")
    second = search.search(search.make_folds(features_, labels, 3, settings.seed), TINY_GRID, settings, "cpu")
    assert first.rows == second.rows and first.best == second.best
    # each configuration scored once (TPE's repeats cost nothing), at both n_estimators values, on 3 folds
    tried = {tuple(row[k] for k in TINY_GRID if k != "n_estimators") for row in first.rows}
    assert len(tried) == first.configurations and 2 <= first.configurations <= 8
    assert len(first.rows) == 2 * first.configurations and first.fits == 3 * first.configurations
    assert {row["state"] for row in first.rows} == {"complete"} and first.pruned == 0


def test_tpe_prunes_configurations_whose_first_folds_trail(data) -> None:
    features_, labels = data
    # one booster at a time: each fold is reported before the next, so the median pruner can stop a trial
    settings = search_settings(strategy="tpe", budget=16, prune=True, jobs=1)
    outcome = search.search(search.make_folds(features_, labels, 3, settings.seed), TINY_GRID, settings, "cpu")
    pruned = [row for row in outcome.rows if row["state"] == "pruned"]
    assert outcome.pruned > 0 and {row["trial"] for row in pruned} and all(row["folds"] < 3 for row in pruned)
    assert outcome.fits < 3 * outcome.configurations  # pruned trials grew fewer boosters
    assert outcome.best  # the winner is a complete configuration
    winner = [row for row in outcome.rows if row["cv_mean"] == outcome.best_score]
    assert winner and all(row["state"] == "complete" and row["folds"] == 3 for row in winner)


def test_a_pinned_value_is_the_only_one_tried(data) -> None:
    features_, labels = data
    grid = {**TINY_GRID, "scale_pos_weight": [9.0]}
    outcome = search.search(search.make_folds(features_, labels, 3, 7), grid, search_settings(), "cpu")
    assert {row["scale_pos_weight"] for row in outcome.rows} == {9.0}
    assert outcome.best["scale_pos_weight"] == 9.0


def test_cuda_without_a_gpu_is_one_clear_error() -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine may have a GPU")
    with pytest.raises(PipelineError, match=r"train.device = 'cuda', but XGBoost has no CUDA GPU here"):
        search.check_device("cuda")


@pytest.fixture
def small_pipeline(workdir):
    """extract and prep of a small sample, with a search small enough for a test."""
    workdir(extract={"sample_rows": 1500}, search={"budget": 6, "cv_folds": 3})
    extract.main()
    prep.main()
    analyze.main()
    return workdir


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_and_evaluate_on_the_sample(small_pipeline, tmp_path, capfd, recwarn) -> None:
    train.main()
    # MLflow's hints that do not apply here are not printed on every run
    log = capfd.readouterr().err
    assert "CloudPickle" not in log and "Validating input example" not in log
    assert not [w for w in recwarn if "Inferred schema contains integer" in str(w.message)]
    model_bytes, summary_bytes, identity = sha256(paths.MODEL), sha256(paths.TRAIN_METRICS), model_identity()
    summary = json.loads(paths.TRAIN_METRICS.read_text())
    assert summary["scoring"] == "f2@0.35" and summary["strategy"] == "halving" and summary["cv_folds"] == 3
    assert set(summary["best_params"]) == set(params.GRID_KEYS)
    assert summary["configurations"] == 6 and summary["candidates"] == 6 + 2 + 1  # halving: 6, then 2, then 1
    assert 0.5 < summary["best_cv_score"] <= 1.0
    assert "seconds" not in json.dumps(summary)
    booster = xgb.Booster(model_file=paths.MODEL)
    assert booster.num_boosted_rounds() == summary["best_params"]["n_estimators"]

    evaluate.main()
    scores = json.loads(paths.EVALUATE_METRICS.read_text())
    assert scores["roc_auc"] > 0.85  # the planted preferences were learned
    assert scores["n_test"] == scores["tp"] + scores["fp"] + scores["tn"] + scores["fn"]

    train.main()  # same inputs and params: the same bytes
    assert (sha256(paths.MODEL), sha256(paths.TRAIN_METRICS)) == (model_bytes, summary_bytes)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["reel-driver"], order_by=["attributes.start_time ASC"])
    assert list(runs["tags.stage"]) == ["train", "evaluate", "train"]
    assert set(runs["tags.model_sha256"]) == {identity}
    assert runs["params.search.budget"].iloc[0] == "6"
    assert float(runs["metrics.test_roc_auc"].iloc[1]) == pytest.approx(scores["roc_auc"])
    assert runs["artifact_uri"].iloc[0].startswith((tmp_path / "mlruns").as_uri())
    logged = mlflow.xgboost.load_model(f"runs:/{runs['run_id'].iloc[0]}/model")
    assert logged.num_boosted_rounds() == booster.num_boosted_rounds()
    # the input examples are made up from the feature spec: no training row's id or values go to MLflow
    train_run = runs["run_id"].iloc[0]
    example = pl.from_pandas(mlflow.models.Model.load(f"runs:/{train_run}/model").load_input_example())
    assert example.columns == booster.feature_names and example.height == 2
    prepared = pl.read_parquet(paths.PREPARED_TRAIN)
    training_features = prepared.select(example.columns)
    assert training_features.join(example.cast(dict(training_features.schema)), on=example.columns, how="semi",
                                  nulls_equal=True).is_empty()
    served = pl.from_pandas(mlflow.models.Model.load(f"runs:/{train_run}/serving").load_input_example())
    raw = pl.read_parquet(paths.RAW).select(served.columns)
    assert not set(served["imdb_id"]) & set(raw["imdb_id"])
    values = [c for c in served.columns if c != "imdb_id"]
    assert raw.select(values).join(served.select(values).cast(dict(raw.select(values).schema)), on=values,
                                   how="semi", nulls_equal=True).is_empty()
    assert served.row(0, named=True)["genre"]  # one row shows every field filled, the other the bare id
    # every train run registers its serving model; evaluate records its hold-out metrics on the version
    versions = mlflow.MlflowClient().search_model_versions(f"name = '{registry.REGISTERED_MODEL}'")
    train_runs = set(runs[runs["tags.stage"] == "train"]["run_id"])
    assert {v.run_id for v in versions} == train_runs and len(versions) == 2
    first = registry.Version.of(next(v for v in versions if str(v.version) == "1"))
    assert (first.model_sha256, first.training_rows, first.threshold) == (identity, prepared.height, 0.35)
    assert first.hold_out == scores
    latest = mlflow.pyfunc.load_model(f"models:/{registry.REGISTERED_MODEL}/latest")
    assert latest.metadata.run_id == runs["run_id"].iloc[2]
