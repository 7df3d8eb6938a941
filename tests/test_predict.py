"""reel-driver predict: raw rows from a file or the backlog of a real PostgreSQL, scored as evaluate scores."""

from pathlib import Path

import numpy as np
import polars as pl
import psycopg
import pytest

from reel_driver.commands import predict
from reel_driver.config import paths
from reel_driver.config.errors import PipelineError
from reel_driver.model import scoring
from tests.conftest import insert_rows
from tests.test_scoring import hold_out_raw


def test_predict_gives_evaluates_probabilities(in_pipeline: Path, tmp_path: Path) -> None:
    raw = tmp_path / "new.parquet"
    hold_out_raw(in_pipeline).write_parquet(raw)
    out = tmp_path / "scored.parquet"
    predict.predict(raw, False, None, False, out)

    scored = pl.read_parquet(out)
    expected = pl.read_parquet(paths.PREDICTIONS)
    joined = expected.join(scored, on="imdb_id", suffix="_predict")
    assert joined.height == expected.height == scored.height
    assert np.allclose(joined["probability"], joined["probability_predict"], atol=1e-6, rtol=0)
    assert joined["prediction"].to_list() == joined["prediction_predict"].to_list()


def test_predict_from_the_database_scores_the_backlog(in_pipeline, atp_db: str, tmp_path) -> None:
    raw = pl.read_parquet(paths.RAW)
    insert_rows(atp_db, raw)
    backlog = raw.filter(pl.col("media_type") == "movie", pl.col("label").is_null() | ~pl.col("reviewed"))
    assert backlog.get_column("label").null_count() > 0 and backlog.get_column("label").drop_nulls().len() > 0

    out = tmp_path / "scored.parquet"
    predict.predict(None, True, None, False, out)
    scored = pl.read_parquet(out)
    assert scored.get_column("imdb_id").to_list() == backlog.get_column("imdb_id").to_list()
    assert scored.get_column("label").to_list() == backlog.get_column("label").cast(pl.String).to_list()
    assert scored.get_column("kind").cast(pl.String).to_list() == [
        "unlabeled" if label is None else "unreviewed" for label in backlog.get_column("label")
    ]
    direct = scoring.Scorer.load(paths.FEATURES, paths.NORMALIZATION, paths.MODEL, paths.ENSEMBLE).scored(backlog, 0.35)
    assert scored.get_column("probability").to_list() == pytest.approx(direct.get_column("probability").to_list(), abs=1e-6)

    predict.predict(None, True, None, True, out)
    assert pl.read_parquet(out).height == raw.height

    with psycopg.connect(atp_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE atp.candidates AS SELECT * FROM atp.training")
        conn.execute("ALTER TABLE atp.candidates DROP COLUMN genre")
    with pytest.raises(PipelineError, match=r"table atp.candidates lacks required column\(s\) genre"):
        predict.predict(None, True, "atp.candidates", False, out)
