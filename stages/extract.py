"""extract: atp.training -> data/raw/training.parquet (sorted by imdb_id).

From PostgreSQL (source: postgres) or the synthetic generator (source: sample);
source: auto reads PostgreSQL when the environment names a database, else the
sample, so one params.yaml serves the owner and a newcomer's clone alike.
Identical source rows give a byte-identical file, so DVC reruns nothing
downstream when the table did not change.
"""

import logging
import os
import sys
from collections.abc import Iterable, Iterator

import polars as pl
import pyarrow as pa
from tqdm import tqdm

from reel_driver.config import params, paths
from reel_driver.config.errors import PipelineError, run_stage
from reel_driver.data import database, schema
from reel_driver.data.outputs import write_parquet_batches

log = logging.getLogger("reel_driver.extract")


def _from_postgres(settings: params.ExtractParams) -> Iterator[pa.Table]:
    with database.reading() as conn:
        types = database.table_columns(conn, settings.table)
        columns = schema.present_columns(list(types))
        # a progress bar on a terminal, nothing in CI logs
        with tqdm(desc="extract", unit=" rows", disable=not sys.stderr.isatty()) as progress:
            for rows in database.read_tables(conn, settings.table, columns, types, settings.batch_rows):
                progress.update(rows.num_rows)
                yield schema.conform_arrow(rows)



def main() -> None:
    settings = params.load().extract
    # Arrow's default pool (mimalloc) keeps freed batches for reuse: the system allocator
    # gives them back, and the extract of 1,000,000 rows peaks 25 MiB lower (bench/extract.py)
    pa.set_memory_pool(pa.system_memory_pool())
    source, reason = database.chosen_source(settings.source, database.server_variable(os.environ))
    if source == "sample":
        # imported here: the generator pulls in scipy, which costs a postgres
        # extract about 1 s and 50 MiB for nothing
        from reel_driver.data import sample

        frames: Iterable[pl.DataFrame | pa.Table] = [sample.generate(settings.sample_rows, settings.seed)]
        origin = f"the synthetic sample (seed {settings.seed})"
    else:
        frames = _from_postgres(settings)
        origin = f"PostgreSQL table {settings.table}"
    try:
        rows = write_parquet_batches(frames, paths.RAW)
    except PipelineError as error:
        if settings.source != "auto":
            raise
        # the user may not know that this shell names a database: the one line says why extract read one
        raise PipelineError(f"{error} [{reason}; extract.source: sample reads the synthetic sample]") from None
    log.info("%d rows from %s (%s) -> %s", rows, origin, reason, paths.RAW)


if __name__ == "__main__":
    run_stage(main)
