"""prep and the feature build, on small frames with known answers."""

import json

import polars as pl
import pytest

from stages import features, params, paths, prep, schema
from stages.errors import PipelineError
from tests.conftest import REPO
import yaml

SETTINGS = params.parse(yaml.safe_load((REPO / "params.yaml").read_text()))


def prep_settings(**changes: object) -> params.PrepParams:
    return SETTINGS.prep.model_copy(update=changes)


def raw_rows(**columns: list) -> pl.DataFrame:
    """A raw table of len(first column) rows: the given columns, defaults for the rest."""
    n = len(next(iter(columns.values())))
    defaults = {
        "imdb_id": [f"tt{1000000 + i}" for i in range(n)],
        "label": ["would_not_watch"] * n,
        "media_type": ["movie"] * n,
        "media_title": [f"Title {i}" for i in range(n)],
        "release_year": [2000] * n,
        "created_at": [None] * n,
        "updated_at": [None] * n,
    }
    frame = {**defaults, **columns}
    return pl.DataFrame(
        {c.name: frame.get(c.name, [None] * n) for c in schema.COLUMNS if c.required or c.name in frame},
        schema={c.name: c.dtype for c in schema.COLUMNS if c.required or c.name in frame},
    )


# ---- select_rows ---------------------------------------------------------------------


def test_select_rows_keeps_media_types_drops_anomalous_and_encodes_label() -> None:
    raw = raw_rows(
        media_type=["movie", "tv_show", "movie", "movie", "tv_season"],
        label=["would_watch", "would_watch", "would_not_watch", "would_watch", "would_not_watch"],
        anomalous=[False, False, False, True, False],
    )
    kept = prep.select_rows(raw, prep_settings())
    assert kept.get_column("imdb_id").to_list() == ["tt1000000", "tt1000002"]
    assert kept.get_column("label").to_list() == [1, 0]

    with_flagged = prep.select_rows(raw, prep_settings(drop_anomalous=False, media_types=["movie", "tv_season"]))
    assert with_flagged.get_column("imdb_id").to_list() == ["tt1000000", "tt1000002", "tt1000003", "tt1000004"]


def test_select_rows_without_the_flag_column() -> None:
    raw = raw_rows(media_type=["movie", "movie"], label=["would_watch", "would_not_watch"])
    assert "anomalous" not in raw.columns
    assert prep.select_rows(raw, prep_settings()).get_column("label").to_list() == [1, 0]


# ---- split ---------------------------------------------------------------------------


def test_split_is_stratified_seeded_and_sorted() -> None:
    rows = raw_rows(label=(["would_watch"] * 20 + ["would_not_watch"] * 180)).with_columns(
        (pl.col("label") == "would_watch").cast(pl.Int8)
    )
    train, test = prep.split(rows, params.SplitParams(test_size=0.15, seed=42))
    assert (train.height, test.height) == (170, 30)
    assert test.get_column("label").sum() == 3  # 15% of the 20 positives
    assert set(train.get_column("imdb_id")).isdisjoint(test.get_column("imdb_id"))
    assert train.get_column("imdb_id").is_sorted() and test.get_column("imdb_id").is_sorted()
    again, _ = prep.split(rows, params.SplitParams(test_size=0.15, seed=42))
    other, _ = prep.split(rows, params.SplitParams(test_size=0.15, seed=43))
    assert again.equals(train) and not other.equals(train)


def test_split_with_too_few_positives_says_so() -> None:
    rows = raw_rows(label=["would_watch"] + ["would_not_watch"] * 9).with_columns(
        (pl.col("label") == "would_watch").cast(pl.Int8)
    )
    with pytest.raises(PipelineError, match=r"split: cannot take a stratified test_size=0.15 hold-out from 10 rows"):
        prep.split(rows, params.SplitParams(test_size=0.15, seed=42))


# ---- normalization ---------------------------------------------------------------------


def test_normalization_comes_from_training_rows_only() -> None:
    train = raw_rows(imdb_votes=[10, 20, 30], budget=[0, 100, 300], release_year=[2000, 2000, 2000])
    test = raw_rows(imdb_votes=[40], budget=[200], release_year=[2010])
    spec = features.fit(train, prep_settings())

    assert spec.normalization["imdb_votes"] == features.MinMax(min=10, max=30)
    assert spec.normalization["budget"] == features.MinMax(min=100, max=300)  # 0 is unknown
    built = features.build(test, spec)
    assert built.get_column("imdb_votes_norm").to_list() == [1.5]  # beyond the training range, unclipped
    assert built.get_column("budget_norm").to_list() == [0.5]
    assert built.get_column("release_year_norm").to_list() == [10.0]  # constant in training: span 1
    assert features.build(train, spec).get_column("budget_norm").to_list() == [None, 0.0, 1.0]


def test_zero_is_a_value_when_the_params_say_so() -> None:
    train = raw_rows(budget=[0, 100, 200])
    spec = features.fit(train, prep_settings(zero_as_unknown=["runtime"]))
    assert spec.normalization["budget"] == features.MinMax(min=0, max=200)
    assert features.build(train, spec).get_column("budget_norm").to_list() == [0.0, 0.5, 1.0]


def test_a_field_never_known_in_training_is_all_null() -> None:
    train = raw_rows(metascore=[None, None])
    spec = features.fit(train, prep_settings())
    assert spec.normalization["metascore"] == features.MinMax(min=None, max=None)
    assert features.build(raw_rows(metascore=[50]), spec).get_column("metascore_norm").to_list() == [None]


# ---- vocabularies ----------------------------------------------------------------------


def test_list_vocabulary_is_sorted_counts_rows_and_respects_min_count() -> None:
    train = raw_rows(
        genre=[["Drama", "Science Fiction"], ["Drama", "Drama"], ["Comedy", None], ["Science Fiction"], None, []],
        origin_country=[["US"], ["US", "GB"], ["GB"], ["FR"], ["US"], []],
    )
    spec = features.fit(train, prep_settings(min_count=2))
    # Drama appears three times but in two rows; Comedy and FR in one row only
    assert spec.lists["genre"] == features.Encoding(
        values=["Drama", "Science Fiction"], columns=["genre_drama", "genre_science_fiction"]
    )
    assert spec.lists["origin_country"].columns == ["origin_country_gb", "origin_country_us"]
    built = features.build(train, spec)
    assert built.get_column("genre_drama").to_list() == [1, 1, 0, 0, 0, 0]
    assert built.get_column("genre_science_fiction").to_list() == [1, 0, 0, 1, 0, 0]
    assert built.get_column("origin_country_us").dtype == pl.Int8


def test_list_names_use_the_design_prefixes_and_never_collide() -> None:
    train = raw_rows(
        production_countries=[["US"]],
        spoken_languages=[["en"]],
        production_companies=[["Fís Éireann/Screen Ireland", "A-B", "A B", "Ünïcode"]],
    )
    spec = features.fit(
        train, prep_settings(min_count=1, list_columns=["production_countries", "spoken_languages", "production_companies"])
    )
    assert spec.lists["production_countries"].columns == ["production_country_us"]
    assert spec.lists["spoken_languages"].columns == ["spoken_language_en"]
    assert spec.lists["production_companies"].columns == [
        "production_company_a_b", "production_company_a_b_2",
        "production_company_fis_eireann_screen_ireland", "production_company_unicode",
    ]


def test_unseen_values_and_categories_are_handled() -> None:
    train = raw_rows(genre=[["Drama"]] * 3, original_language=["en", "en", "fr"], production_status=["Released"] * 3)
    spec = features.fit(train, prep_settings(min_count=2))
    assert spec.categoricals == {"production_status": ["Released"], "original_language": ["en"]}
    new = raw_rows(genre=[["Western"], None], original_language=["fr", "xx"], production_status=["Released", None])
    built = features.build(new, spec)
    assert built.get_column("genre_drama").to_list() == [0, 0]
    assert built.get_column("original_language").to_list() == [None, None]
    assert built.get_column("original_language").dtype == pl.Enum(["en"])
    assert built.get_column("production_status").to_list() == ["Released", None]


def test_build_follows_the_recorded_column_order_and_round_trips_through_json() -> None:
    train = raw_rows(genre=[["Drama"], ["Comedy"]], origin_country=[["US"], ["US"]], original_language=["en", "en"])
    spec = features.fit(train, prep_settings(min_count=1))
    assert features.build(train, spec).columns == spec.columns
    assert spec.columns[:10] == [f"{c}_norm" for c in features.CONTINUOUS]
    restored = features.FeatureSpec.from_json(
        json.loads(json.dumps(spec.features_json())), json.loads(json.dumps(spec.normalization_json()))
    )
    assert restored == spec


# ---- the stage -------------------------------------------------------------------------


def test_prep_stage_on_the_sample(workdir) -> None:
    from stages import extract

    extract.main()
    prep.main()

    train = pl.read_parquet(paths.PREPARED_TRAIN)
    test = pl.read_parquet(paths.PREPARED_TEST)
    spec = json.loads(paths.FEATURES.read_text())
    normalization = json.loads(paths.NORMALIZATION.read_text())
    assert train.columns == [*prep.ID_COLUMNS, prep.LABEL, *spec["columns"]] == test.columns
    assert set(train.get_column("imdb_id")).isdisjoint(test.get_column("imdb_id"))
    assert abs(test.height / (train.height + test.height) - 0.15) < 0.01
    rate = train.get_column("label").mean()
    assert 0.08 < rate < 0.13
    assert abs(test.get_column("label").mean() - rate) < 0.01
    assert list(normalization) == list(features.CONTINUOUS)
    assert train.get_column("imdb_votes_norm").min() == 0.0 and train.get_column("imdb_votes_norm").max() == 1.0
    assert "genre_drama" in spec["columns"] and not any(c.startswith("production_company") for c in spec["columns"])
