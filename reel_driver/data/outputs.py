"""Atomic writers: an output is written beside its target and renamed into place,
so a stage that fails leaves the previous outputs as they were."""

import json
import os
import secrets
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

# Explicit so that the bytes do not depend on a library default that may change.
_COMPRESSION = "zstd"
# Frames handed to the parquet writer's thread and not yet written (memory: a few batches).
_QUEUED = 1


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # same directory, so the rename is atomic; created by the writer, so umask applies
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(data: Any, path: Path) -> None:
    write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", path)


def write_bytes(data: bytes, path: Path) -> None:
    with _replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(text: str, path: Path) -> None:
    with _replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    write_parquet_batches([frame], path)


def write_parquet_batches(batches: Iterable[pl.DataFrame | pa.Table], path: Path) -> int:
    """Stream frames (polars or Arrow) of one schema into a parquet file; returns the row count.

    Needs at least one frame: an empty one gives an empty file that keeps the schema.
    A frame is encoded on a second thread while the caller produces the next (the
    extract of 1,000,000 rows from PostgreSQL: 8.8 s in one thread, 7.9 s so).
    """
    rows = 0
    writer: pq.ParquetWriter | None = None

    def write(frame: pl.DataFrame | pa.Table, tmp: Path) -> None:
        nonlocal writer
        table = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema, compression=_COMPRESSION)
        writer.write_table(table)

    with _replacing(path) as tmp:
        try:
            # one worker: frames are written in order; at most _QUEUED wait for it
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet") as pool:
                queued: deque[Future[None]] = deque()
                for batch in batches:
                    if len(queued) == _QUEUED:
                        queued.popleft().result()  # the writer's error, if any, stops the stream here
                    queued.append(pool.submit(write, batch, tmp))
                    rows += len(batch)
                for written in queued:
                    written.result()
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError(f"no data to write to {path}")
    return rows
