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


def check_rows(raw: pl.DataFrame, rows: pl.DataFrame, settings: params.PrepParams) -> None:
    """What the schema cannot see row by row: repeated ids, nothing to learn from, one class only."""
    if raw.height == 0:
        raise PipelineError("prep: the raw table has no rows (is the source table empty?)")
    repeated = raw.group_by("imdb_id").len().filter(pl.col("len") > 1).sort("imdb_id")
    if repeated.height:
        first, times = repeated.row(0)
        raise PipelineError(
            f"column imdb_id: {first} appears {times} times ({repeated.height} repeated ids); each movie must be one row"
        )
    if rows.height == 0:
        found = ", ".join(sorted(raw.get_column("media_type").cast(pl.String).unique()))
        raise PipelineError(
            f"prep: no rows left of {raw.height}: prep.media_types = {settings.media_types}, "
            f"prep.drop_anomalous = {str(settings.drop_anomalous).lower()}; the raw media types: {found}"
        )
    if rows.get_column(LABEL).n_unique() < 2:
        only = schema.LABELS[0] if rows.item(0, LABEL) else schema.LABELS[1]
        raise PipelineError(
            f"column label: all {rows.height} kept rows are {only}; the model needs both would_watch and would_not_watch"
        )


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
    check_rows(raw, rows, settings.prep)
    train, test = split(rows, settings.split)
    spec = features.fit(train, settings.prep)
    if unknown := [name for name, bounds in spec.normalization.items() if bounds.min is None]:
        # not an error: XGBoost treats the column as missing everywhere, which it is
        log.warning("column(s) %s NULL in every training row: their features carry no signal", ", ".join(unknown))

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
