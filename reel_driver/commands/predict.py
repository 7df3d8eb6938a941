"""`reel-driver predict`: score raw movie rows (a parquet file, or the backlog of
atp.training) with exactly the training feature build, into a parquet file."""

import logging
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from reel_driver.config import params, paths
from reel_driver.config.errors import PipelineError
from reel_driver.data import database, schema
from reel_driver.data.outputs import write_parquet_batches
from reel_driver.model import scoring
from reel_driver.preparation import rows

log = logging.getLogger("reel_driver.predict")


def _table_rows(table_name: str, scorer: scoring.Scorer, settings: params.Params, every: bool) -> Iterator[pl.DataFrame]:
    """Rows of a table in the atp.training shape with their label and kind: the backlog
    (reel_driver/preparation/rows.py: kept media types that are not training rows), or ``every`` row."""
    needed = [*scoring.required_columns(scorer.spec), "media_type"]
    with database.reading() as conn:
        available = database.table_columns(conn, table_name)
        missing = [c for c in needed if c not in available]
        if missing:
            raise PipelineError(f"table {table_name} lacks required column(s) {', '.join(missing)}")
        # the label and the flags that decide a row's kind, where the table has them
        columns = [c for c in schema.COLUMNS if c.name in needed or (c.name in rows.DECIDING and c.name in available)]
        for frame in database.read_frames(conn, table_name, columns, available, settings.publish.batch_rows):
            if "label" not in frame.columns:  # a table of new movies only
                frame = frame.with_columns(label=pl.lit(None, pl.String))
            classified = rows.classify(frame, settings.prep)
            yield classified if every else classified.filter(rows.BACKLOG)


def _file_rows(path: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    try:
        source = pq.ParquetFile(path)
    except (OSError, ValueError) as error:
        raise PipelineError(f"cannot read {path} as parquet: {error}") from error
    yielded = False
    for batch in source.iter_batches(batch_size=batch_rows):
        yielded = True
        yield pl.from_arrow(batch)
    if not yielded:  # an empty file still gives an empty, typed output
        yield pl.from_arrow(source.schema_arrow.empty_table())


def predict(source: Path | None, from_db: bool, table_name: str | None, every: bool, out: Path) -> None:
    settings = params.load()
    scorer = scoring.Scorer.load(paths.FEATURES, paths.NORMALIZATION, paths.MODEL, paths.ENSEMBLE)
    batch_rows = settings.publish.batch_rows
    if from_db:
        batches = _table_rows(table_name or settings.extract.table, scorer, settings, every)
        kept = ["label", rows.KIND]
    elif source:
        batches = _file_rows(source, batch_rows)
        kept = []
    else:
        raise PipelineError("predict needs an input parquet file or --from-db")
    written = write_parquet_batches(
        (scorer.scored(batch, settings.evaluate.threshold).with_columns(batch.select(kept)) for batch in batches),
        out,
    )
    which = "every row" if every else "the backlog (no label, or a label no person confirmed)"
    log.info("%d rows scored -> %s (threshold %.2f; %s)", written, out, settings.evaluate.threshold,
             which if from_db else source)
