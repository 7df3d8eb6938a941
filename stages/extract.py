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

from stages import database, params, paths, schema
from stages.errors import run_stage
from stages.outputs import write_parquet_batches

log = logging.getLogger("reel_driver.extract")


def _from_postgres(settings: params.ExtractParams) -> Iterator[pl.DataFrame]:
    table = database.identifier(settings.table)
    with database.connect() as conn:
        types = database.table_columns(conn, table)
        columns = schema.present_columns(list(types))
        query = database.select_query(table, columns, types)
        # closing(): an error in a batch must end the COPY before the connection
        # rolls back, or the rollback waits on the open COPY for ever
        with closing(database.read_frames(conn, query, columns, settings.batch_rows)) as frames:
            # a progress bar on a terminal, nothing in CI logs
            with tqdm(desc="extract", unit=" rows", disable=not sys.stderr.isatty()) as progress:
                for frame in frames:
                    progress.update(frame.height)
                    yield schema.conform(frame)


def main() -> None:
    settings = params.load().extract
    if settings.source == "sample":
        # imported here: the generator pulls in scipy, which costs a postgres
        # extract about 1 s and 50 MiB for nothing
        from stages import sample

        frames: Iterable[pl.DataFrame] = [sample.generate(settings.sample_rows, settings.seed)]
        origin = f"the synthetic sample (seed {settings.seed})"
    else:
        frames = _from_postgres(settings)
        origin = f"PostgreSQL table {settings.table}"
    rows = write_parquet_batches(frames, paths.RAW)
    log.info("%d rows from %s -> %s", rows, origin, paths.RAW)


if __name__ == "__main__":
    run_stage(main)
