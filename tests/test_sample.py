"""The synthetic atp.training: deterministic, shaped like the real table, with the
owner's preferences planted so that a model has something to learn."""

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score
from xgboost import XGBClassifier

from reel_driver.config import params
from reel_driver.data import sample, schema
from reel_driver.preparation import features, rows, training_set
from tests.test_prep import SETTINGS

MOVIE = pl.col("media_type") == "movie"
POSITIVE = pl.col("label") == "would_watch"
# the owner's own labels: the rows a person reviewed (the real export holds only such rows)
REVIEWED = pl.col("reviewed")


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return sample.generate(4000, 42)


@pytest.fixture(scope="module")
def large() -> pl.DataFrame:
    return sample.generate(12000, 1)


def rate(frame: pl.DataFrame, condition: pl.Expr) -> float:
    """The share of would_watch among the reviewed rows that meet ``condition``."""
    return frame.filter(REVIEWED & condition).select(POSITIVE.mean()).item()


def test_deterministic_by_seed(table: pl.DataFrame) -> None:
    assert sample.generate(4000, 42).equals(table)
    assert not sample.generate(4000, 43).equals(table)


def test_has_the_schema_and_ids_no_real_table_has(table: pl.DataFrame) -> None:
    assert table.height == 4000
    assert table.schema == {c.name: c.dtype for c in schema.COLUMNS}
    ids = table.get_column("imdb_id")
    assert ids.is_sorted() and ids.n_unique() == 4000
    assert ids.str.contains(r"^tt9[0-9]{7}$").all()  # valid for the DDL's CHECK, above any issued id
    assert table.get_column("tmdb_id").n_unique() == 3999  # one tmdb_id shared, as in the real table


def test_shaped_like_the_real_table(table: pl.DataFrame) -> None:
    movies = table.filter(MOVIE)
    assert 0.97 < movies.height / table.height < 1.0
    assert set(table.get_column("media_type").unique()) == set(schema.MEDIA_TYPES)
    assert 0.08 < rate(table, MOVIE) < 0.12
    assert 0.7 < (movies.get_column("budget") == 0).mean() < 0.9
    assert 0.6 < movies.get_column("rt_score").is_null().mean() < 0.8
    assert table.filter(~MOVIE).get_column("runtime").is_null().all()
    assert movies.get_column("runtime").null_count() == 0
    assert table.get_column("production_companies").list.len().eq(0).any()  # an empty array
    assert table.get_column("genre").list.eval(pl.element().is_null()).list.any().any()  # a NULL element
    codes = pl.concat([table.get_column(c).explode().drop_nulls() for c in ("origin_country", "spoken_languages")])
    assert codes.str.len_chars().eq(2).all()
    assert set(table.get_column("genre").explode().drop_nulls()) >= {"Drama", "Comedy", "Science Fiction", "TV Movie"}


@pytest.mark.parametrize(
    "measure",
    [
        pl.col("budget").eq(0).mean(),
        pl.col("revenue").eq(0).mean(),
        pl.col("runtime").eq(0).mean(),
        pl.col("tmdb_votes").eq(0).mean(),
        pl.col("rt_score").is_null().mean(),
        pl.col("metascore").is_null().mean(),
        pl.col("imdb_rating").is_null().mean(),
        pl.col("imdb_votes").is_null().mean(),
        pl.col("production_countries").is_null().mean(),
        pl.col("spoken_languages").is_null().mean(),
        pl.col("production_companies").is_null().mean(),
        pl.col("genre").list.len().mean() / 10,
        (pl.col("original_language") == "en").mean(),
        (pl.col("label") == "would_watch").mean(),
        (pl.col("imdb_votes") > 10_000).mean(),
        (pl.col("tmdb_votes") > 1_000).mean(),
        (pl.col("tmdb_votes") > 10_000).mean(),
    ],
    ids=lambda measure: str(measure)[:60],
)
def test_marginals_match_the_real_export(table: pl.DataFrame, real_export: pl.DataFrame, measure: pl.Expr) -> None:
    synthetic = table.filter(MOVIE & REVIEWED).select(measure).item()
    real = real_export.filter(MOVIE).select(measure).item()
    # within 40% of the real rate (or 0.01 for rare ones): a sample without zeros, say, fails
    assert synthetic == pytest.approx(real, rel=0.4, abs=0.01)


def test_between_two_reviews_some_labels_are_the_pipelines_and_some_missing(table: pl.DataFrame) -> None:
    unreviewed = table.filter(~REVIEWED & pl.col("label").is_not_null())
    unlabeled = table.filter(pl.col("label").is_null())
    # realdb.py --today: 300 pipeline-labeled and 150 new rows among 4,200
    assert 0.05 < unreviewed.height / table.height < 0.09
    assert 0.02 < unlabeled.height / table.height < 0.05
    assert not unlabeled.get_column("reviewed").any()
    # the pipeline's labels disagree with the owner's preferences: mostly would_watch
    assert unreviewed.select(POSITIVE.mean()).item() > 0.8 > 0.12 > rate(table, MOVIE)
    # only a person sets human_labeled, and an anomalous label is a verified one
    assert table.filter(pl.col("human_labeled") | pl.col("anomalous")).get_column("reviewed").all()
    assert table.get_column("human_labeled").sum() > 0 and table.get_column("anomalous").sum() > 0


def test_the_owners_preferences_are_planted(large: pl.DataFrame) -> None:
    movies = large.filter(MOVIE)
    votes, rt = pl.col("imdb_votes"), pl.col("rt_score")
    assert rate(movies, votes > 100_000) > 0.6
    assert rate(movies, votes.fill_null(0) < 1_000) < 0.02
    # high RT score with few votes -> no
    assert rate(movies, (rt > 85) & (votes < 1_000)) < 0.01
    # comedies with a low RT score but many votes -> yes, unlike other genres
    comedy = pl.col("genre").list.contains("Comedy")
    low_rt_popular = (rt < 50) & (votes > 50_000)
    assert rate(movies, comedy & low_rt_popular) > rate(movies, ~comedy & low_rt_popular) + 0.25
    # not English only when RT > 90 and votes > 100k
    english = pl.col("original_language") == "en"
    exception = (rt > 90) & (votes > 100_000)
    assert rate(movies, ~english & ~exception.fill_null(False)) < rate(movies, english) / 3


def test_a_model_has_something_to_learn(large: pl.DataFrame) -> None:
    train, test = training_set.split(training_set.training_rows(rows.classify(large, SETTINGS.prep)), params.SplitParams(test_size=0.25, seed=0))
    spec = features.fit(train, SETTINGS.prep)
    model = XGBClassifier(n_estimators=100, max_depth=4, enable_categorical=True, random_state=0, n_jobs=2)
    model.fit(features.build(train, spec).to_pandas(), train.get_column("label").to_numpy())
    scores = model.predict_proba(features.build(test, spec).to_pandas())[:, 1]
    labels = test.get_column("label").to_numpy()
    assert average_precision_score(labels, scores) > 0.5 > 3 * np.mean(labels)


def test_vote_counts_stay_in_the_real_range(large: pl.DataFrame) -> None:
    # the real export's largest counts: 37,460 TMDB votes, 3,042,120 IMDb votes
    assert large.get_column("tmdb_votes").max() <= 40_000
    assert large.get_column("imdb_votes").max() <= 3_100_000
