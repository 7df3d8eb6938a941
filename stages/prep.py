"""prep: raw table -> prepared train/test features, normalization, vocabulary and the
data metrics.

Only training rows (reel_driver.preparation.rows: a label a person confirmed) are
prepared, split into the stable hold-out of reel_driver.preparation.training_set.
Split first, then fit: normalization bounds and vocabularies come from the training
rows only, so nothing of the hold-out leaks into training.
"""

import logging

import polars as pl

from reel_driver.config import params, paths
from reel_driver.config.errors import run_stage
from reel_driver.data import schema
from reel_driver.data.outputs import write_json, write_parquet
from reel_driver.preparation import features, rows, training_set

log = logging.getLogger("reel_driver.prep")


def main() -> None:
    settings = params.load()
    raw = pl.read_parquet(paths.RAW)
    classified = rows.classify(raw, settings.prep)
    training_set.check_rows(classified, settings.prep)
    train, test = training_set.split(training_set.training_rows(classified), settings.split)
    spec = features.fit(train, settings.prep)
    summary = training_set.data_metrics(classified, train, test)
    if unknown := [name for name, bounds in spec.normalization.items() if bounds.min is None]:
        # not an error: XGBoost treats the column as missing everywhere, which it is
        log.warning("column(s) %s NULL in every training row: their features carry no signal", ", ".join(unknown))
    if summary["labels"]["reviewed_without_label"]:
        log.warning("%d reviewed rows have no label: not training rows (predict --from-db scores them)",
                    summary["labels"]["reviewed_without_label"])
    if summary["training"]["unreviewed"]:
        log.warning("%d training rows carry labels no person confirmed (prep.include_unreviewed: true)",
                    summary["training"]["unreviewed"])

    write_parquet(training_set.prepared(train, spec), paths.PREPARED_TRAIN)
    write_parquet(train.drop(*training_set.FLAG_COLUMNS, strict=False), paths.PREPARED_TRAIN_RAW)
    write_parquet(training_set.prepared(test, spec), paths.PREPARED_TEST)
    write_json(spec.features_json(), paths.FEATURES)
    write_json(spec.normalization_json(), paths.NORMALIZATION)
    write_json(summary, paths.DATA_METRICS)
    log.info(
        "%d of %d raw rows are training rows (%d positive; %d unreviewed and %d unlabeled rows left out); "
        "train %d, hold-out %d; %d features",
        train.height + test.height, raw.height, summary["training"][schema.LABELS[0]],
        summary["labels"][rows.UNREVIEWED] - summary["training"]["unreviewed"], summary["labels"][rows.UNLABELED],
        train.height, test.height, len(spec.columns),
    )


if __name__ == "__main__":
    run_stage(main)
