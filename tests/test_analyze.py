"""The feature analysis: statistics with known answers, training rows only, the stage's outputs."""

import json

import numpy as np
import polars as pl
import pytest

from reel_driver.config import paths
from reel_driver.data import sample
from reel_driver.preparation import rows, training_set
from reel_driver.selection import analysis
from stages import analyze, extract, prep
from tests.test_prep import SETTINGS


def test_identical_categoricals_have_cramers_v_one() -> None:
    a = pl.Series("a", ["x", "y", "z"] * 30)
    v, chi2, p = analysis.cramers_v(a, a.alias("b"))
    assert v == pytest.approx(1.0) and p < 1e-10


def test_an_independent_categorical_has_a_high_chi2_p() -> None:
    rng = np.random.default_rng(1)
    a = pl.Series("a", rng.choice(["x", "y", "z"], 600))
    labels = pl.Series("label", rng.integers(0, 2, 600))
    v, _, p = analysis.cramers_v(a, labels)
    assert p > 0.05 and v < 0.1


def test_anova_finds_a_planted_group_difference() -> None:
    rng = np.random.default_rng(2)
    groups = pl.Series("g", ["a"] * 100 + ["b"] * 100)
    measure = pl.Series("y", np.r_[rng.normal(0, 1, 100), rng.normal(2, 1, 100)])
    f, p = analysis.anova(groups, measure)
    assert f > 100 and p < 1e-20
    f_flat, p_flat = analysis.anova(groups, pl.Series("y", rng.normal(0, 1, 200)))
    assert f_flat < 10 and p_flat > 0.001


def test_a_long_text_is_kept_for_the_text_branch_only_when_it_ranks_the_labels() -> None:
    rng = np.random.default_rng(3)
    labels = pl.Series("label", (rng.random(600) < 0.15).astype(np.int8))
    words = np.array(["river", "city", "night", "storm", "letter", "garden", "train", "winter", "friend", "secret"])

    def texts(planted: bool) -> pl.Series:
        lines = [" ".join(rng.choice(words, 12)) + (" heist" if planted and y else "") for y in labels]
        return pl.Series("overview", lines)

    settings = SETTINGS.analysis
    for planted, kept in ((True, True), (False, False)):
        feature = analysis.Feature("overview", "text")
        analysis.text_target_test(feature, texts(planted), labels, settings)
        measured = feature.tests["target_text_cv"]
        assert measured["positive_share"] == pytest.approx(float(labels.mean()), abs=1e-6)
        assert feature.keep is kept and (measured["mann_whitney_p"] < settings.text_max_p) is kept
        assert (measured["ap"] > 0.9) is planted  # words the label never chose: about the positive share


def test_categories_group_rare_values_and_nulls() -> None:
    grouped = analysis.categories(pl.Series("c", ["a", "a", "b", None, "a"]), min_count=2)
    assert grouped.to_list() == ["a", "a", analysis.OTHER, analysis.MISSING, "a"]


@pytest.fixture(scope="module")
def training_rows() -> pl.DataFrame:
    return training_set.training_rows(rows.classify(sample.generate(1200, 5), SETTINGS.prep)).drop("media_type")


def dtypes() -> dict[str, str]:
    return {name: "test" for name in (*analysis.CONTINUOUS, *analysis.LISTS, *analysis.CATEGORICALS, *analysis.TEXTS)}


def test_two_identical_continuous_features_lose_one(training_rows: pl.DataFrame) -> None:
    twins = training_rows.with_columns(tmdb_votes=pl.col("imdb_votes"))
    found, inter = analysis.analyse(twins, SETTINGS.analysis, [], 5, dtypes())
    by_name = {f.name: f for f in found}
    pearson = {row["feature"]: row for row in inter["pearson"]}
    assert pearson["imdb_votes"]["tmdb_votes"] == pytest.approx(1.0)
    dropped = [name for name in ("imdb_votes", "tmdb_votes") if not by_name[name].keep]
    assert len(dropped) == 1 and "correlated with" in by_name[dropped[0]].reason


def test_every_feature_gets_a_decision_and_its_rule(training_rows: pl.DataFrame) -> None:
    found, _ = analysis.analyse(training_rows, SETTINGS.analysis, ["budget", "revenue", "runtime"], 5, dtypes())
    assert [f.name for f in found] == [*analysis.CONTINUOUS, *analysis.LISTS, *analysis.CATEGORICALS, *analysis.TEXTS]
    for feature in found:
        assert feature.steps and all(step["rule"] for step in feature.steps)
        assert feature.keep or feature.reason.split(":")[0] in {s["stage"] for s in feature.steps}
    by_name = {f.name: f for f in found}
    assert not by_name["production_status"].keep  # movies are all "Released": one useful category
    # the sample's overviews are words drawn without regard to the label: measured, and dropped
    overview = by_name["overview"]
    assert overview.figures["text_branch"] and "target_text_cv" in overview.tests
    assert not overview.keep and overview.reason.startswith("target analysis: the text says little of the label")
    assert by_name["imdb_votes"].keep  # the planted signal: many votes, would watch
    assert by_name["budget"].figures["null_share"] > 0.7  # 0 counts as unknown


def test_selection_maps_features_to_model_columns(training_rows: pl.DataFrame) -> None:
    from reel_driver.preparation import features

    spec = features.fit(training_rows, SETTINGS.prep)
    found, _ = analysis.analyse(training_rows, SETTINGS.analysis, [], 5, dtypes())
    applied = analysis.selection(found, spec, apply=True)
    dropped_columns = {c for name in applied["dropped"] for c in analysis.encoded_columns(name, spec)}
    assert applied["columns"] == [c for c in spec.columns if c not in dropped_columns]
    not_applied = analysis.selection(found, spec, apply=False)
    assert not_applied["columns"] == spec.columns and not not_applied["dropped"]


def test_the_stage_reads_training_rows_only(workdir) -> None:
    workdir(extract={"sample_rows": 1200})
    extract.main()
    prep.main()
    analyze.main()
    first = paths.ANALYSIS_METRICS.read_bytes()
    report = (paths.ANALYSIS_REPORT / "report.md").read_text()
    plots = list((paths.ANALYSIS_REPORT / "plots").glob("*.png"))
    assert len(plots) >= 20
    for name in (*analysis.CONTINUOUS, *analysis.LISTS, *analysis.CATEGORICALS, *analysis.TEXTS):
        assert f"## {name} (" in report
    selection = json.loads(paths.SELECTION.read_text())
    assert selection["applied"] is False and selection["columns"] == json.loads(paths.FEATURES.read_text())["columns"]
    train_ids = set(pl.read_parquet(paths.PREPARED_TRAIN).get_column("imdb_id"))
    assert json.loads(first)["rows"] == len(train_ids)

    # the hold-out and the raw table are not read: garbling them changes nothing
    paths.PREPARED_TEST.write_bytes(b"not parquet")
    paths.RAW.write_bytes(b"not parquet")
    analyze.main()
    assert paths.ANALYSIS_METRICS.read_bytes() == first
