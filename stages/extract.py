"""extract: atp.training -> data/raw/training.parquet (sorted by imdb_id).

From PostgreSQL (source: postgres) or the synthetic generator (source: sample).
Identical source rows give a byte-identical file, so DVC reruns nothing
downstream when the table did not change.
"""

import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import closing

import polars as pl
from tqdm import tqdm

from stages import database, params, paths, sample, schema
from stages.errors import run_stage
from stages.outputs import write_parquet_batches

log = logging.getLogger("reel_driver.extract")


def to_frames(batches: Iterable[list[tuple]], columns: list[schema.Column]) -> Iterator[pl.DataFrame]:
    """Rows off the wire -> frames that obey the schema."""
    wire = schema.wire_schema(columns)
    for rows in batches:
        yield schema.conform(pl.DataFrame(rows, schema=wire, orient="row"))


def _from_postgres(settings: params.ExtractParams) -> Iterator[pl.DataFrame]:
    table = database.identifier(settings.table)
    with database.connect() as conn:
        columns = schema.present_columns(database.table_columns(conn, table))
        query = database.select_query(table, columns)
        # closing(): an error in a batch must end the COPY before the connection
        # rolls back, or the rollback waits on the open COPY for ever
        with closing(database.copy_rows(conn, query, [c.pg_type for c in columns], settings.batch_rows)) as batches:
            # a progress bar on a terminal, nothing in CI logs
            with tqdm(desc="extract", unit=" rows", disable=not sys.stderr.isatty()) as progress:
                for frame in to_frames(batches, columns):
                    progress.update(frame.height)
                    yield frame


def main() -> None:
    settings = params.load().extract
    if settings.source == "sample":
        frames: Iterable[pl.DataFrame] = [sample.generate(settings.sample_rows, settings.seed)]
        origin = f"the synthetic sample (seed {settings.seed})"
    else:
        frames = _from_postgres(settings)
        origin = f"PostgreSQL table {settings.table}"
    rows = write_parquet_batches(frames, paths.RAW)
    log.info("%d rows from %s -> %s", rows, origin, paths.RAW)


if __name__ == "__main__":
    run_stage(main)
