"""Atomic writers: an output is written beside its target and renamed into place,
so a stage that fails leaves the previous outputs as they were."""

import json
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

# Explicit so that the bytes do not depend on a library default that may change.
_COMPRESSION = "zstd"


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


def write_parquet_batches(batches: Iterable[pl.DataFrame], path: Path) -> int:
    """Stream frames of one schema into a parquet file; returns the row count.

    Needs at least one frame: an empty one gives an empty file that keeps the schema.
    """
    rows = 0
    with _replacing(path) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            for batch in batches:
                table = batch.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression=_COMPRESSION)
                writer.write_table(table)
                rows += batch.height
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError(f"no data to write to {path}")
    return rows
