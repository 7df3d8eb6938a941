"""`reel-driver publish`: a prediction for every training row, into the owner's
atp.prediction (read by the review screens through atp.movies), replaced in one transaction."""

import logging
from collections.abc import Callable

import polars as pl
from psycopg import sql

from reel_driver.config import params, paths
from reel_driver.data import database
from reel_driver.model import metrics
from reel_driver.tracking import runs

log = logging.getLogger("reel_driver.publish")

ID = "imdb_id"


def predictions_table(table: sql.Identifier) -> sql.Composed:
    """The owner's predictions table (imdb_id, prediction, probability, cm_value, created_at),
    plus the model's identity and how each row was scored."""
    return sql.SQL("""
        CREATE TABLE IF NOT EXISTS {table} (
            imdb_id      VARCHAR(10) PRIMARY KEY,
            prediction   SMALLINT NOT NULL CHECK (prediction IN (0, 1)),
            probability  DOUBLE PRECISION NOT NULL CHECK (probability BETWEEN 0 AND 1),
            cm_value     CHAR(2) NOT NULL CHECK (cm_value IN ('TP', 'FP', 'TN', 'FN')),
            scored_by    VARCHAR(12) NOT NULL,
            model_sha256 CHAR(64) NOT NULL,
            created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        -- an older table gains the two columns; only then: ALTER TABLE locks out
        -- readers until the commit, and they should see the old rows meanwhile
        DO $publish$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {name}::regclass
                           AND attname = 'model_sha256' AND NOT attisdropped) THEN
                ALTER TABLE {table} ADD COLUMN IF NOT EXISTS scored_by VARCHAR(12),
                                    ADD COLUMN IF NOT EXISTS model_sha256 CHAR(64);
            END IF;
        END $publish$
    """).format(table=table, name=sql.Literal(table.as_string()))


def labeled(out_of_fold: pl.DataFrame, hold_out: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Every labeled movie once: training rows with their out-of-fold probability,
    hold-out rows with the trained model's, a 0/1 prediction and its confusion cell."""
    rows = pl.concat([
        out_of_fold.select(ID, "label", "probability").with_columns(scored_by=pl.lit("out_of_fold")),
        hold_out.select(ID, "label", "probability").with_columns(scored_by=pl.lit("hold_out")),
    ]).sort(ID)
    predicted = pl.col("probability") >= threshold
    return rows.select(
        ID,
        predicted.cast(pl.Int8).alias("prediction"),
        "probability",
        metrics.confusion_cell(pl.col("label"), predicted).alias("cm_value"),
        "scored_by",
    )


def publish(table_name: str | None, before_commit: Callable[[], None] | None = None) -> None:
    """Replace ``table_name`` (default publish.table); ``before_commit`` runs in its transaction
    (the weekly job moves the champion alias there, so the two change together)."""
    settings = params.load()
    rows = labeled(
        pl.read_parquet(paths.OUT_OF_FOLD), pl.read_parquet(paths.PREDICTIONS), settings.evaluate.threshold
    ).with_columns(model_sha256=pl.lit(runs.model_sha256(paths.MODEL, paths.ENSEMBLE)))
    table = database.identifier(table_name or settings.publish.table)
    with database.connect() as conn:
        written = database.replace_rows(conn, table, predictions_table(table), rows.iter_slices(settings.publish.batch_rows),
                                        before_commit)
    log.info("%d training rows -> %s (threshold %.2f; the hold-out's by the model, the rest out of fold)",
             written, table_name or settings.publish.table, settings.evaluate.threshold)
