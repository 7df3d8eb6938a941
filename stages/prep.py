"""prep: raw table -> prepared train/test features, normalization and vocabulary.

Split first, then fit: normalization bounds and vocabularies come from the
training rows only, so nothing of the hold-out leaks into training.
"""

import logging

import polars as pl
from sklearn.model_selection import train_test_split

from stages import features, params, paths, schema
from stages.errors import PipelineError, run_stage
from stages.outputs import write_json, write_parquet

log = logging.getLogger("reel_driver.prep")

ID_COLUMNS = ("imdb_id", "media_title")
LABEL = "label"


def select_rows(raw: pl.DataFrame, settings: params.PrepParams) -> pl.DataFrame:
    """Rows of the kept media types, anomalous ones out, label as 1/0."""
    rows = raw.filter(pl.col("media_type").cast(pl.String).is_in(settings.media_types))
    if settings.drop_anomalous and "anomalous" in rows.columns:
        rows = rows.filter(~pl.col("anomalous").fill_null(False))
    return rows.with_columns((pl.col(LABEL) == schema.POSITIVE_LABEL).cast(pl.Int8).alias(LABEL))


def split(rows: pl.DataFrame, settings: params.SplitParams) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Stratified hold-out, fixed by seed; both parts sorted by imdb_id."""
    labels = rows.get_column(LABEL).to_numpy()
    try:
        train_index, test_index = train_test_split(
            range(rows.height), test_size=settings.test_size, stratify=labels, random_state=settings.seed
        )
    except ValueError as error:
        counts = dict(rows.get_column(LABEL).value_counts().iter_rows())
        raise PipelineError(
            f"split: cannot take a stratified test_size={settings.test_size} hold-out "
            f"from {rows.height} rows (label counts {counts}): {error}"
        ) from error
    return rows[sorted(train_index)], rows[sorted(test_index)]


def prepared(rows: pl.DataFrame, spec: features.FeatureSpec) -> pl.DataFrame:
    """Identifiers, label and the feature build, one row per movie."""
    return pl.concat([rows.select(*ID_COLUMNS, LABEL), features.build(rows, spec)], how="horizontal")


def main() -> None:
    settings = params.load()
    raw = pl.read_parquet(paths.RAW)
    rows = select_rows(raw, settings.prep)
    train, test = split(rows, settings.split)
    spec = features.fit(train, settings.prep)

    write_parquet(prepared(train, spec), paths.PREPARED_TRAIN)
    write_parquet(train.drop("media_type", "human_labeled", "anomalous", strict=False), paths.PREPARED_TRAIN_RAW)
    write_parquet(prepared(test, spec), paths.PREPARED_TEST)
    write_json(spec.features_json(), paths.FEATURES)
    write_json(spec.normalization_json(), paths.NORMALIZATION)
    log.info(
        "%d of %d raw rows kept (%d positive); train %d, test %d; %d features",
        rows.height, raw.height, rows.get_column(LABEL).sum(), train.height, test.height, len(spec.columns),
    )


if __name__ == "__main__":
    run_stage(main)
