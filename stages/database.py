"""PostgreSQL access: connections from the environment only, streamed reads.

Credentials come from the libpq variables (PGHOST, PGPORT, PGDATABASE, PGUSER,
PGPASSWORD, PGPASSFILE, PGSERVICE, ...) or from REEL_DRIVER_PG_DSN; never from
params, and never logged.
"""

import os
from collections.abc import Iterable, Iterator

import polars as pl
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from stages import schema
from stages.errors import PipelineError

DSN_VARIABLE = "REEL_DRIVER_PG_DSN"


def _where(dsn: str) -> str:
    """Where a DSN points, for messages: no password, ever."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "an unparsable DSN"
    host = parts.get("host") or os.environ.get("PGHOST") or "the default host"
    database = parts.get("dbname") or os.environ.get("PGDATABASE") or "the default database"
    return f"{host}, database {database}"


def connect() -> psycopg.Connection:
    """A connection from REEL_DRIVER_PG_DSN, else from the libpq variables."""
    dsn = os.environ.get(DSN_VARIABLE, "")
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # psycopg's message quotes the string, and with it a password
        raise PipelineError(f"{DSN_VARIABLE} is not a valid PostgreSQL connection string") from None
    try:
        return psycopg.connect(dsn)
    except psycopg.Error as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise PipelineError(
            f"cannot connect to PostgreSQL at {_where(dsn)}: {reason} "
            f"(set {DSN_VARIABLE} or the PG* variables)"
        ) from None


def identifier(table: str) -> sql.Identifier:
    """A schema-qualified name from params, quoted part by part."""
    return sql.Identifier(*table.split("."))


def select_query(table: sql.Identifier, columns: list[schema.Column], where: sql.Composable | None = None) -> sql.Composed:
    """SELECT of schema columns, cast to their canonical types, in imdb_id byte order."""
    casts = sql.SQL(", ").join(
        sql.SQL("{}::{} AS {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type), sql.Identifier(c.name))
        for c in columns
    )
    condition = sql.SQL(" WHERE {}").format(where) if where is not None else sql.SQL("")
    # COLLATE "C": byte order, the same on every server and as polars sorts
    return sql.SQL('SELECT {} FROM {}{} ORDER BY imdb_id COLLATE "C"').format(casts, table, condition)


def table_columns(conn: psycopg.Connection, table: sql.Identifier) -> list[str]:
    """The column names of ``table``, in table order."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(table))
            return [column.name for column in cur.description or []]
    except psycopg.errors.UndefinedTable:
        raise PipelineError(f"table {table.as_string(conn)} does not exist") from None
    except psycopg.errors.InsufficientPrivilege as error:
        raise PipelineError(f"no permission to read {table.as_string(conn)}: {error}") from None


def copy_rows(
    conn: psycopg.Connection, query: sql.Composable, types: list[str], batch_rows: int
) -> Iterator[list[tuple]]:
    """Stream the rows of ``query`` with binary COPY, ``batch_rows`` at a time.

    Memory stays bounded by one batch, whatever the size of the table.
    """
    batch: list[tuple] = []
    yielded = False
    try:
        with conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query)) as copy:
                copy.set_types(types)
                for row in copy.rows():
                    batch.append(row)
                    if len(batch) == batch_rows:
                        yield batch
                        batch, yielded = [], True
    except psycopg.Error as error:
        raise PipelineError(f"PostgreSQL failed while reading: {' '.join(str(error).split())}") from error
    if batch or not yielded:  # an empty table still gives one (empty) batch
        yield batch


def replace_rows(
    conn: psycopg.Connection, table: sql.Identifier, create: sql.Composable, batches: Iterable[pl.DataFrame]
) -> int:
    """Replace the whole content of ``table`` with ``batches``, in one transaction.

    The table is created (``create``) when missing. Concurrent calls for one table
    run one after the other (an advisory lock), so the last to commit wins whole.
    Readers see the old rows until the commit; any failure (a bad row, a lost
    connection, an exception in the caller's batches) rolls back and leaves the
    old rows as they were.
    Rows go in by COPY, in CSV, one batch at a time.
    """
    rows = 0
    try:
        with conn.transaction(), conn.cursor() as cur:
            # two publishers at once: the second waits for the first to commit, then
            # replaces its rows whole (without the lock its DELETE would miss the
            # first one's uncommitted rows and the table would end up a mix of both);
            # readers are not blocked, they see the old rows until the commit
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [table.as_string(conn)])
            cur.execute(create)
            # DELETE, not TRUNCATE: TRUNCATE would block readers until the commit
            cur.execute(sql.SQL("DELETE FROM {}").format(table))
            copy_sql = None
            for batch in batches:
                if copy_sql is None:
                    columns = sql.SQL(", ").join(sql.Identifier(c) for c in batch.columns)
                    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT CSV)").format(table, columns)
                with cur.copy(copy_sql) as copy:
                    copy.write(batch.write_csv(include_header=False))
                rows += batch.height
    except psycopg.Error as error:
        raise PipelineError(
            f"writing {table.as_string(conn)} failed, its previous content is unchanged: {' '.join(str(error).split())}"
        ) from error
    return rows
