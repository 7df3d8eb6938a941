"""prep and the feature build, on small frames with known answers."""

import json

import numpy as np
import polars as pl
import pytest
import yaml

from reel_driver.config import params, paths
from reel_driver.config.errors import PipelineError
from reel_driver.data import schema
from reel_driver.preparation import features, rows, training_set
from stages import prep
from tests.conftest import REPO

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


# ---- which rows train ---------------------------------------------------------------


def classified(settings: params.PrepParams | None = None, **columns: list) -> pl.DataFrame:
    return rows.classify(raw_rows(**columns), settings or prep_settings())


def test_training_rows_keep_media_types_drop_anomalous_and_encode_label() -> None:
    table = classified(
        media_type=["movie", "tv_show", "movie", "movie", "tv_season"],
        label=["would_watch", "would_watch", "would_not_watch", "would_watch", "would_not_watch"],
        anomalous=[False, False, False, True, False],
    )
    kept = training_set.training_rows(table)
    assert kept.get_column("imdb_id").to_list() == ["tt1000000", "tt1000002"]
    assert kept.get_column("label").to_list() == [1, 0]
    assert rows.KIND not in kept.columns and rows.TRAINING not in kept.columns

    settings = prep_settings(drop_anomalous=False, media_types=["movie", "tv_season"])
    with_flagged = training_set.training_rows(rows.classify(table.drop(rows.ADDED), settings))
    assert with_flagged.get_column("imdb_id").to_list() == ["tt1000000", "tt1000002", "tt1000003", "tt1000004"]


def test_no_reviewed_true_at_all_is_one_error_naming_the_count_and_the_switch() -> None:
    table = classified(label=["would_watch", "would_not_watch", None], reviewed=[False, None, False])
    with pytest.raises(PipelineError) as error:
        training_set.check_rows(table, prep_settings())
    assert str(error.value) == (
        "column reviewed: none of the 2 labeled rows is reviewed (TRUE), so no label was confirmed by a person; "
        "confirm labels in the review screens, or set prep.include_unreviewed: true to train on the 2 unconfirmed labels"
    )
    # with the switch the same table trains on both
    settings = prep_settings(include_unreviewed=True)
    training_set.check_rows(classified(settings, label=["would_watch", "would_not_watch", None], reviewed=[False, None, False]), settings)


def test_a_table_with_no_label_at_all_has_no_training_rows() -> None:
    with pytest.raises(PipelineError, match=r"prep: no training rows among 2: 0 labeled"):
        training_set.check_rows(classified(label=[None, None]), prep_settings())


# ---- split ---------------------------------------------------------------------------


def labeled_rows(n: int, positives: int, first: int = 1000000) -> pl.DataFrame:
    return raw_rows(
        imdb_id=[f"tt{first + i}" for i in range(n)],
        label=["would_watch"] * positives + ["would_not_watch"] * (n - positives),
    ).with_columns((pl.col("label") == "would_watch").cast(pl.Int8))


def test_split_is_seeded_sorted_and_close_to_test_size() -> None:
    table = labeled_rows(4000, 400)
    train, test = training_set.split(table, params.SplitParams(test_size=0.15, seed=42))
    assert train.height + test.height == 4000
    assert set(train.get_column("imdb_id")).isdisjoint(test.get_column("imdb_id"))
    assert train.get_column("imdb_id").is_sorted() and test.get_column("imdb_id").is_sorted()
    # a Bernoulli(0.15) draw per movie: 600 +- 23 expected, 60 +- 7 positives
    assert abs(test.height - 600) < 70 and abs(test.get_column("label").sum() - 60) < 21
    again, _ = training_set.split(table, params.SplitParams(test_size=0.15, seed=42))
    other, _ = training_set.split(table, params.SplitParams(test_size=0.15, seed=43))
    assert again.equals(train) and not other.equals(train)


def test_a_movie_stays_on_its_side_when_rows_arrive_leave_or_change_label() -> None:
    settings = params.SplitParams(test_size=0.15, seed=42)
    before = labeled_rows(2000, 200)
    _, test = training_set.split(before, settings)
    # 500 new movies, 300 gone, every label flipped: the movies both hold keep their side
    after = pl.concat([before.slice(300), labeled_rows(500, 50, first=5000000)]).with_columns(label=1 - pl.col("label"))
    _, test_after = training_set.split(after, settings)
    kept = set(after.get_column("imdb_id"))
    assert set(test.get_column("imdb_id")) & kept == set(test_after.get_column("imdb_id")) & set(before.get_column("imdb_id"))
    assert training_set.held_out(pl.Series(["tt1000007"]), settings).to_list() == training_set.held_out(
        pl.Series(["tt0000001", "tt1000007"]), settings).to_list()[1:]


def test_a_side_without_both_classes_says_so() -> None:
    table = labeled_rows(10, 1)
    with pytest.raises(PipelineError, match=r"split: the (training|hold-out) side of split.test_size=0.15 \(seed 42\) holds"):
        training_set.split(table, params.SplitParams(test_size=0.15, seed=42))


# ---- data metrics ----------------------------------------------------------------------


def test_data_metrics_count_every_kind_of_row() -> None:
    table = classified(
        media_type=["movie"] * 7 + ["tv_show", "tv_episode_pack"],
        label=["would_watch", "would_not_watch", "would_watch", "would_not_watch", None, None, "would_watch",
               "would_watch", None],
        reviewed=[True, True, True, False, False, True, True, True, False],
        anomalous=[False, False, False, False, False, False, True, False, False],
    )
    train = training_set.training_rows(table).head(2)
    test = training_set.training_rows(table).tail(1)
    assert training_set.data_metrics(table, train, test) == {
        "rows": 9,
        "media_types": {"movie": 7, "tv_show": 1, "tv_season": 0, "tv_episode_pack": 1},
        "labels": {"reviewed": 5, "unreviewed": 1, "unlabeled": 3, "reviewed_without_label": 1},
        "anomalous_dropped": 1,
        "training": {"rows": 3, "would_watch": 2, "would_not_watch": 1, "unreviewed": 0},
        "train": {"rows": 2, "would_watch": 1, "would_not_watch": 1},
        "hold_out": {"rows": 1, "would_watch": 1, "would_not_watch": 0},
        # the unreviewed movie and the two unlabeled movies (the episode pack is not a kept type)
        "backlog": 3,
    }


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


def test_the_text_branch_learns_from_training_rows_and_builds_the_same_after_json() -> None:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    overview = ["A heist in the city", "a heist at night", "Love in the city", "love letters at night", "a storm at sea", None]
    tagline = ["Crime pays", None, "romance", "Romance", "the sea", None]
    train = raw_rows(overview=overview, tagline=tagline, genre=[["Drama"]] * 6, original_language=["en"] * 6)
    spec = features.fit(train, prep_settings(min_count=1, text_columns=["overview", "tagline"], text_components=3))
    # terms of at least 2 rows, stop words out: "sea" is twice in one row, so once
    assert spec.text.vocabulary == ["city", "heist", "love", "night", "romance"]
    assert spec.text.columns == ["text_svd_0", "text_svd_1", "text_svd_2"]
    first = spec.columns.index("text_svd_0")  # after the one-hot, before the categoricals
    assert spec.columns[first - 1] == "genre_drama" and spec.columns[first + 3:] == list(spec.categoricals)

    built = features.build(train, spec).select(spec.text.columns).to_numpy()
    joined = [f"{o or ''} {t or ''}" for o, t in zip(overview, tagline)]
    tfidf = TfidfVectorizer(sublinear_tf=True, stop_words="english", min_df=2).fit_transform(joined)
    expected = TruncatedSVD(3, random_state=0).fit_transform(tfidf)
    np.testing.assert_allclose(built, expected, atol=1e-12)
    assert not built[5].any()  # no text: zeros

    restored = features.FeatureSpec.from_json(json.loads(json.dumps(spec.features_json())), spec.normalization_json())
    new = raw_rows(overview=["a heist in winter", "nothing known here"], tagline=[None, None])
    assert features.build(new, restored).equals(features.build(new, spec))
    assert features.build(new, restored).select(spec.text.columns).row(1) == (0.0, 0.0, 0.0)


# ---- the stage -------------------------------------------------------------------------


def test_prep_stage_on_the_sample(workdir) -> None:
    from stages import extract

    extract.main()
    prep.main()

    train = pl.read_parquet(paths.PREPARED_TRAIN)
    test = pl.read_parquet(paths.PREPARED_TEST)
    spec = json.loads(paths.FEATURES.read_text())
    normalization = json.loads(paths.NORMALIZATION.read_text())
    assert train.columns == [*training_set.ID_COLUMNS, training_set.LABEL, *spec["columns"]] == test.columns
    assert set(train.get_column("imdb_id")).isdisjoint(test.get_column("imdb_id"))
    assert abs(test.height / (train.height + test.height) - 0.15) < 0.02
    rate = train.get_column("label").mean()
    assert 0.08 < rate < 0.13
    assert abs(test.get_column("label").mean() - rate) < 0.03
    assert list(normalization) == list(features.CONTINUOUS)
    assert train.get_column("imdb_votes_norm").min() == 0.0 and train.get_column("imdb_votes_norm").max() == 1.0
    assert "genre_drama" in spec["columns"] and not any(c.startswith("production_company") for c in spec["columns"])


def test_only_confirmed_labels_reach_the_prepared_rows(workdir) -> None:
    from stages import extract

    extract.main()
    prep.main()
    raw = pl.read_parquet(paths.RAW)
    prepared_ids = pl.concat([pl.read_parquet(p, columns=["imdb_id"]) for p in (paths.PREPARED_TRAIN, paths.PREPARED_TEST)])
    confirmed = raw.filter(pl.col("reviewed"), pl.col("label").is_not_null(), ~pl.col("anomalous"), pl.col("media_type") == "movie")
    # the sample holds unreviewed and unlabeled rows; none of them is prepared
    assert raw.filter(~pl.col("reviewed")).height > 300
    assert sorted(prepared_ids.get_column("imdb_id")) == sorted(confirmed.get_column("imdb_id"))
    data = json.loads(paths.DATA_METRICS.read_text())
    assert data["training"]["rows"] == confirmed.height == prepared_ids.height
    assert data["labels"]["unreviewed"] == raw.filter(~pl.col("reviewed"), pl.col("label").is_not_null()).height


def test_new_arrivals_and_pipeline_labels_leave_the_prepared_files_byte_identical(workdir) -> None:
    import hashlib

    from reel_driver.data.outputs import write_parquet
    from stages import extract

    extract.main()
    prep.main()
    outputs = (paths.PREPARED_TRAIN, paths.PREPARED_TEST, paths.PREPARED_TRAIN_RAW, paths.FEATURES, paths.NORMALIZATION)
    digest = lambda: {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in outputs}  # noqa: E731
    before, data_before = digest(), json.loads(paths.DATA_METRICS.read_text())

    raw = pl.read_parquet(paths.RAW)
    drawn = raw.filter(pl.col("reviewed")).head(60).with_columns(
        imdb_id=pl.format("tt8{}", pl.int_range(1000000, 1000060)), reviewed=pl.lit(False),
        label=pl.when(pl.int_range(60) < 30).then(pl.col("label")).otherwise(None),  # 30 scored by the pipeline, 30 new
    )
    write_parquet(pl.concat([raw, drawn]).sort("imdb_id"), paths.RAW)
    prep.main()

    assert digest() == before
    data_after = json.loads(paths.DATA_METRICS.read_text())
    assert data_after["labels"]["unreviewed"] == data_before["labels"]["unreviewed"] + 30
    assert data_after["labels"]["unlabeled"] == data_before["labels"]["unlabeled"] + 30
    assert data_after["training"] == data_before["training"]
