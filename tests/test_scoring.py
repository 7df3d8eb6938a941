"""Scoring raw rows with the training feature build: parity with evaluate, out-of-fold
probabilities, bad input, and the served model over real HTTP."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import xgboost as xgb
from sklearn.metrics import log_loss

from reel_driver.config import params, paths
from reel_driver.config.errors import PipelineError
from reel_driver.model import ensemble, scoring, search
from reel_driver.tracking import registry
from tests.conftest import free_port


def hold_out_raw(root: Path) -> pl.DataFrame:
    """The raw rows of the hold-out movies, label stripped."""
    test_ids = pl.read_parquet(root / paths.PREDICTIONS).get_column("imdb_id")
    return pl.read_parquet(root / paths.RAW).filter(pl.col("imdb_id").is_in(test_ids.implode())).drop("label")


def test_unseen_values_extra_columns_and_missing_ones(in_pipeline: Path) -> None:
    scorer = scoring.Scorer.load(paths.FEATURES, paths.NORMALIZATION, paths.MODEL, paths.ENSEMBLE)
    rows = hold_out_raw(in_pipeline).head(3)
    odd = rows.with_columns(
        genre=pl.lit(["Space Opera", None], dtype=pl.List(pl.String)),
        original_language=pl.lit("tlh"),
        budget=pl.lit(10**12),  # far beyond the training range
        something_new=pl.lit(1),
    )
    probabilities = scorer.probabilities(odd)
    assert probabilities.shape == (3,) and ((probabilities >= 0) & (probabilities <= 1)).all()
    with pytest.raises(PipelineError, match=r"input rows lack required column\(s\) imdb_votes, genre"):
        scorer.probabilities(rows.drop("genre", "imdb_votes"))
    with pytest.raises(PipelineError, match=r"column release_year: cannot read as Int16"):
        scorer.probabilities(rows.with_columns(release_year=pl.lit("nineteen")))


def test_out_of_fold_rows_are_scored_by_models_that_did_not_see_them() -> None:
    """A planted row a deep model memorises: in-sample it scores high, out of fold it cannot."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=400), rng.normal(size=400)
    labels = np.zeros(400, dtype=int)
    labels[:40] = 1
    x[:40] += 3  # positives live at high x
    x[399], y[399] = -4.0, 9.0  # one positive, alone where every row is negative
    labels[399] = 1
    features_ = pl.DataFrame({"x": x, "y": y})
    config = {"scale_pos_weight": 1.0, "max_depth": 6, "n_estimators": 200, "min_child_weight": 0.0,
              "learning_rate": 0.3, "gamma": 0.0, "reg_alpha": 0.0, "subsample": 1.0, "max_delta_step": 0.0,
              "colsample_bytree": 1.0, "colsample_bylevel": 1.0}
    in_sample = search.fit(search.matrix(features_, labels), config, 0, "cpu").predict(search.matrix(features_))
    settings = params.SearchParams(strategy="grid", cv_folds=5, scoring="f2", threshold=0.35, precision_floor=0.5,
                                   budget=1, reduction=3, prune=False, seed=0, jobs=2)
    grid = {key: [value] for key, value in config.items()}
    oof = search.search(search.make_folds(features_, labels, 5, 0), grid, settings, "cpu").best_probabilities
    assert in_sample[399] > 0.9  # memorised
    assert oof[399] < 0.1  # scored by a model that never saw it
    assert not np.isnan(oof).any()


def test_train_writes_out_of_fold_probabilities_for_every_training_row(in_pipeline: Path) -> None:
    oof = pl.read_parquet(paths.OUT_OF_FOLD)
    prepared = pl.read_parquet(paths.PREPARED_TRAIN)
    assert oof.get_column("imdb_id").to_list() == prepared.get_column("imdb_id").to_list()
    assert oof.get_column("probability").is_between(0, 1).all()
    # not the refit model's own scores: the model that saw every row fits them better than the
    # fold models, each of which never saw the row it scored
    booster = xgb.Booster(model_file=paths.MODEL)
    in_sample = booster.predict(search.matrix(prepared.select(booster.feature_names)))
    labels, out_of_fold = prepared.get_column("label").to_numpy(), oof.get_column("probability").to_numpy()
    assert np.abs(out_of_fold - in_sample).max() > 0.1
    assert log_loss(labels, in_sample) < log_loss(labels, out_of_fold)


@pytest.mark.slow
def test_served_model_answers_raw_rows_over_http(in_pipeline: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{in_pipeline / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["reel-driver"], filter_string="tags.stage = 'train'")
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{in_pipeline / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{runs['run_id'].iloc[0]}/serving",
         "-h", "127.0.0.1", "-p", str(port), "--env-manager", "local"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the model server did not start"
                time.sleep(0.5)
        rows = hold_out_raw(in_pipeline).drop("created_at", "updated_at")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"dataframe_records": json.loads(rows.write_json())}).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    served = pl.DataFrame(answer)
    expected = pl.read_parquet(paths.PREDICTIONS).join(served, on="imdb_id", suffix="_served")
    assert expected.height == rows.height
    assert np.allclose(expected["probability"], expected["probability_served"], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_the_text_branch_and_the_ensemble_score_alike_in_evaluate_predict_publish_and_the_served_model(
        text_pipeline: Path, atp_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from reel_driver.commands import predict, publish
    from reel_driver.preparation import features
    from tests.conftest import insert_rows
    from tests.test_publish import published

    monkeypatch.chdir(text_pipeline)
    spec = features.FeatureSpec.load(paths.FEATURES, paths.NORMALIZATION)
    booster = xgb.Booster(model_file=str(paths.MODEL))
    assert spec.text.sources == ["overview", "tagline"] and set(spec.text.columns) <= set(booster.feature_names)
    members = ensemble.load(paths.ENSEMBLE)
    assert [member.family for member in members] == ["lightgbm", "catboost"]
    expected = pl.read_parquet(paths.PREDICTIONS).select("imdb_id", "probability")
    # evaluate's probability is the mean of the booster's and each member's on the prepared hold-out rows
    test = pl.read_parquet(paths.PREPARED_TEST)
    built = test.select(booster.feature_names)
    each = [booster.predict(search.matrix(built)), *(member.probabilities(built) for member in members)]
    by_id = expected.join(test.select("imdb_id", mean=pl.Series(np.mean(each, axis=0)), alone=pl.Series(each[0])),
                          on="imdb_id")
    assert by_id.height == test.height and np.abs(by_id["probability"] - by_id["mean"]).max() <= 1e-6
    assert np.abs(by_id["probability"] - by_id["alone"]).max() > 1e-3  # the members change the answer
    raw = hold_out_raw(text_pipeline)

    def agrees(scored: pl.DataFrame) -> bool:
        joined = expected.join(scored.select("imdb_id", pl.col("probability").alias("other")), on="imdb_id")
        return joined.height == expected.height and bool(np.abs(joined["probability"] - joined["other"]).max() <= 1e-6)

    raw.write_parquet(tmp_path / "raw.parquet")
    predict.predict(tmp_path / "raw.parquet", False, None, False, tmp_path / "from_file.parquet")
    assert agrees(pl.read_parquet(tmp_path / "from_file.parquet"))

    insert_rows(atp_db, pl.read_parquet(paths.RAW))
    predict.predict(None, True, None, True, tmp_path / "from_db.parquet")
    assert agrees(pl.read_parquet(tmp_path / "from_db.parquet"))
    publish.publish(None)
    assert agrees(published(atp_db))

    mlflow.set_tracking_uri(f"sqlite:///{text_pipeline / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(f"models:/{registry.REGISTERED_MODEL}/1")
    request = raw.select(scoring.required_columns(spec)).with_columns(pl.col(features.CONTINUOUS).cast(pl.Float64))
    assert agrees(pl.from_pandas(served.predict(request.to_pandas())))  # doubles, as its signature says
