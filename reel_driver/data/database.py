"""PostgreSQL access: connections from the environment only, streamed reads.

Credentials come from the libpq variables (PGHOST, PGPORT, PGDATABASE, PGUSER,
PGPASSWORD, PGPASSFILE, PGSERVICE, ...) or from REEL_DRIVER_PG_DSN; never from
params, and never logged. Reads go through ADBC (``reading``), writes through
psycopg (``connect``, ``replace_rows``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import adbc_driver_manager
import adbc_driver_postgresql
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from reel_driver.config.errors import PipelineError
from reel_driver.data import schema

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

# psycopg is imported where it is used, for writing and for error messages: extract
# reads through ADBC alone, and importing psycopg would cost it 11 MiB of RSS and
# 0.2 s at start (bench/extract.py holds it to the streamed ADBC's figures). Reads use
# ADBC's low-level API, a 1:1 mapping of its C API: its DB-API module imports
# pyarrow.dataset and with it pandas, 0.95 s and 78 MiB at every start for nothing
# used here (docs/benchmarks.md#extract).

DSN_VARIABLE = "REEL_DRIVER_PG_DSN"
# The variables that say which server or database to read: one of them set means this shell
# points at a database (extract.source: auto reads it then). Not PGPASSWORD, PGSSLMODE and the
# like, which only say how to connect, nor PGUSER and PGPORT alone, which shells often keep.
SERVER_VARIABLES = (DSN_VARIABLE, "PGHOST", "PGHOSTADDR", "PGSERVICE", "PGDATABASE")

# Rows come by ADBC's PostgreSQL driver: binary COPY decoded into Arrow in C++.
# bench/extract.py measured the routes on 1,000,000 rows (issue 19): text COPY as
# CSV parsed by pyarrow lost to ADBC by 1.16 x in seconds and 1.5 x in peak RSS;
# binary COPY rows built into Python tuples took 114 s. psycopg stays for publishing.
# How each canonical type travels: its Arrow type here, and the table types that go
# bare; any other type is cast on the server, after its sort (select_query). CHAR padding
# is trimmed and INTEGER narrowed here in Arrow compute (_decode): it measured cheaper than
# casts on the server when those ran before the sort (not measured since they run after
# it). NUMERIC is the exception: ADBC would build its decimal text
# row by row, which costs this end more than the cast to float8 costs the server
# (bench/extract.py).
_WIRE: dict[str, tuple[pa.DataType, frozenset[str]]] = {
    "text": (pa.string(), frozenset({"text", "varchar", "enum", "bpchar"})),
    "int2": (pa.int16(), frozenset({"int2", "int4"})),
    "int8": (pa.int64(), frozenset({"int2", "int4", "int8"})),
    "float8": (pa.float64(), frozenset({"float8"})),
    "bool": (pa.bool_(), frozenset({"bool"})),
    "timestamptz": (pa.timestamp("us", "UTC"), frozenset({"timestamptz"})),
    "text[]": (pa.list_(pa.string()), frozenset({"text[]", "varchar[]", "bpchar[]"})),
}
# A hint to ADBC for the bytes of one decoded batch (its default is 16 MiB): batches
# are joined and sliced into batch_rows anyway, and a small one holds less memory.
_ADBC_BATCH_BYTES = 2 << 20


def _where(dsn: str) -> str:
    """Where libpq tries to connect, in plain words (socket or host, port, database, user):
    the DSN's values, else the PG* variables, else libpq's defaults. No password, ever."""
    from psycopg import pq
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(dsn)  # _connection_error has checked that it parses
    defaults = {o.keyword.decode(): o.val.decode() for o in pq.Conninfo.get_defaults() if o.val is not None}

    def value(key: str) -> str | None:
        found = given.get(key)
        return str(found) if found not in (None, "") else defaults.get(key)

    host, user = value("host") or value("hostaddr"), value("user") or "the login name"
    if not host:
        place = "the local socket"  # libpq's compiled-in directory; its own message names it
    elif host.startswith("/"):
        place = f"socket directory {host}"
    else:
        place = f"host {host}"
    service = f"service {value('service')}, " if value("service") else ""
    return f"{service}{place}, port {value('port') or 5432}, database {value('dbname') or user}, user {user}"


def _one_line(message: str, prefix: str) -> str:
    """libpq's message on one line. Its first line says which socket or host failed and why;
    the next ones (a hint, one per address tried) follow after "; ". The driver's own
    ``prefix`` (psycopg's "connection failed:", ADBC's "IO: [libpq] Failed to connect:")
    says nothing more and goes."""
    lines = [" ".join(line.split()) for line in message.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return "no reason given"
    lines[0] = re.sub(prefix, "", lines[0])
    return "; ".join(lines)


def _adbc_reason(error: Exception) -> str:
    """ADBC's message without its wrapping: "IO: [libpq] Failed to connect: " or
    "...: Failed to prepare query: ERROR:  " before the server's words; the query, where
    in it the server stopped and "SQLSTATE: 42501" after them."""
    message = re.sub(r"[;.\s]*SQLSTATE: \w+\s*$", "", str(error))
    message = re.sub(r"\s*Query was: .*", "", message, flags=re.DOTALL)
    message = re.sub(r"^(LINE \d+: .*|\s*\^\s*)$", "", message, flags=re.MULTILINE)
    return _one_line(message, r"^[A-Z_]+: (\[libpq\] )?(Failed to connect: |.*?(PGRES_FATAL_ERROR|Failed to prepare query:) ERROR: +)?")


def _connection_error(dsn: str, reason: str) -> PipelineError:
    """The one line a failed connection gives; libpq never puts the password in its
    messages, and _where never reads it."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # the driver's message would quote the string, and with it a password
        return PipelineError(f"{DSN_VARIABLE} is not a valid PostgreSQL connection string")
    return PipelineError(f"cannot connect to PostgreSQL at {_where(dsn)}: {reason} (set {DSN_VARIABLE} or the PG* variables)")


def server_variable(environment: Mapping[str, str]) -> str | None:
    """The first of ``SERVER_VARIABLES`` set (not empty) in ``environment``, or None."""
    return next((name for name in SERVER_VARIABLES if environment.get(name)), None)


def connect() -> psycopg.Connection:
    """A psycopg connection (for writing) from REEL_DRIVER_PG_DSN, else from the libpq variables."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    dsn = os.environ.get(DSN_VARIABLE, "")
    try:
        conninfo_to_dict(dsn)
        return psycopg.connect(dsn)
    except psycopg.Error as error:
        raise _connection_error(dsn, _one_line(str(error), r"^connection (is bad|failed): ")) from None


def identifier(table: str) -> sql.Identifier:
    """A schema-qualified name from params, quoted part by part (for psycopg)."""
    from psycopg import sql

    return sql.Identifier(*table.split("."))


def _literal(text: str) -> str:
    """A string literal, as PostgreSQL reads it with standard_conforming_strings on (``reading``)."""
    return "'" + text.replace("'", "''") + "'"


def quoted(table: str) -> str:
    """A schema-qualified name from params, quoted part by part as PostgreSQL reads
    identifiers (what ``identifier`` gives psycopg)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split("."))


@contextmanager
def reading() -> Iterator[adbc_driver_manager.AdbcConnection]:
    """An ADBC connection from REEL_DRIVER_PG_DSN, else from the libpq variables, in UTC
    and UTF-8; on exit a stream still open is cancelled and the connection closed."""
    dsn = os.environ.get(DSN_VARIABLE, "")
    try:
        # the bare scheme: libpq reads the PG* variables, as for an empty DSN
        server = adbc_driver_postgresql.connect(dsn or "postgresql://")
    except adbc_driver_manager.Error as error:
        raise _connection_error(dsn, _adbc_reason(error)) from None
    with server:
        try:
            conn = adbc_driver_manager.AdbcConnection(server)
        except adbc_driver_manager.Error as error:
            raise _connection_error(dsn, _adbc_reason(error)) from None
        try:
            # a TIMESTAMP column is cast to timestamptz on the server, in its session's time
            # zone; text arrives in the client encoding; a backslash in a literal is itself
            for setting in ("TimeZone = 'UTC'", "client_encoding = 'UTF8'", "standard_conforming_strings = on"):
                with adbc_driver_manager.AdbcStatement(conn) as statement:
                    statement.set_sql_query(f"SET {setting}")
                    statement.execute_update()
            yield conn
        finally:
            # a stream stopped early (a bad row): without the cancel, closing would first
            # read the rest of the table
            conn.cancel()
            conn.close()


@contextmanager
def _query(conn: adbc_driver_manager.AdbcConnection, query: str, **options: str) -> Iterator[pa.RecordBatchReader]:
    """The rows of ``query`` as Arrow batches."""
    with adbc_driver_manager.AdbcStatement(conn) as statement:
        statement.set_options(**options)
        statement.set_sql_query(query)
        stream, _ = statement.execute_query()
        with pa.RecordBatchReader.from_stream(stream) as reader:
            yield reader


def _read_error(error: adbc_driver_manager.Error | pa.ArrowException, table: str) -> PipelineError:
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate in ("42P01", "3F000"):  # undefined table, undefined schema
        return PipelineError(f"table {quoted(table)} does not exist")
    if sqlstate == "42501":
        return PipelineError(f"no permission to read {quoted(table)}: {_adbc_reason(error)}")
    return PipelineError(f"PostgreSQL failed while reading {quoted(table)}: {_adbc_reason(error)}")


def table_columns(conn: adbc_driver_manager.AdbcConnection, table: str) -> dict[str, str]:
    """The columns of ``table`` in table order, each with its type: the type's name
    ("int4", "bpchar", arrays as "varchar[]"), "enum" for any enum."""
    query = (
        "SELECT a.attname, CASE WHEN t.typtype = 'e' THEN 'enum' "
        "WHEN e.oid IS NOT NULL THEN e.typname || '[]' ELSE t.typname END AS type "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' "
        f"WHERE a.attrelid = {_literal(quoted(table))}::regclass AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum"
    )
    try:
        # a literal, not a bound parameter: binding one builds Arrow from Python values, and
        # pyarrow imports pandas to check whether they are pandas objects (0.5 s)
        with _query(conn, query) as reader:
            found = reader.read_all()
        return dict(zip(found["attname"].to_pylist(), found["type"].to_pylist()))
    except adbc_driver_manager.Error as error:
        raise _read_error(error, table) from None


def _bare(column: schema.Column, table_type: str) -> bool:
    return table_type in _WIRE[column.pg_type][1]


def _wire(column: schema.Column, table_type: str) -> str:
    """The SELECT expression that sends ``column``: bare, or cast to its canonical type (``_WIRE``)."""
    name = quoted(column.name)
    return f"{name} AS {name}" if _bare(column, table_type) else f"{name}::{column.pg_type} AS {name}"


def _trimmed(text: pa.Array) -> pa.Array:
    """CHAR(n) values without their blank padding (as a cast to text trims them)."""
    if isinstance(text, pa.ListArray):
        return pa.ListArray.from_arrays(text.offsets, _trimmed(text.values), mask=text.is_null())
    return pc.utf8_rtrim(text, characters=" ")


def _decode(batch: pa.RecordBatch, columns: list[schema.Column], types: dict[str, str], wire: pa.Schema) -> pa.RecordBatch:
    """ADBC's Arrow for the bare columns as their canonical types: CHAR padding trimmed,
    integers cast (a value that does not fit names its column)."""
    decoded = []
    for column, field, values in zip(columns, wire, batch.columns):
        table_type = types[column.name]
        if table_type in ("bpchar", "bpchar[]") and _bare(column, table_type):
            values = _trimmed(values)
        try:
            decoded.append(values if values.type == field.type else values.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            reason = " ".join(str(error).split())[:200]
            raise PipelineError(f"column {column.name}: cannot read {table_type} as {column.pg_type}: {reason}") from error
    return pa.RecordBatch.from_arrays(decoded, schema=wire)


def select_query(table: str, columns: list[schema.Column], types: dict[str, str]) -> str:
    """SELECT of schema columns in their wire form, in imdb_id byte order; ``types``:
    the table's own column types (``table_columns``)."""
    selected = ", ".join(_wire(c, types[c.name]) for c in columns)
    # COLLATE "C": byte order, the same on every server and as polars sorts
    order = 'ORDER BY imdb_id COLLATE "C"'
    if all(_bare(c, types[c.name]) for c in columns):
        return f"SELECT {selected} FROM {quoted(table)} {order}"
    # the casts run on the sorted rows as they stream out: in a plain SELECT the server
    # casts every row before its sort, while this end waits. OFFSET 0 keeps the subquery
    # from being flattened; the server knows its rows are in order and sorts once
    names = ", ".join(quoted(c.name) for c in columns)
    return f"SELECT {selected} FROM (SELECT {names} FROM {quoted(table)} {order} OFFSET 0) AS sorted {order}"


def wire_schema(columns: list[schema.Column]) -> pa.Schema:
    """The Arrow schema of ``columns`` as ``read_tables`` yields them."""
    return pa.schema([(c.name, _WIRE[c.pg_type][0]) for c in columns])


def read_tables(
    conn: adbc_driver_manager.AdbcConnection,
    table: str,
    columns: list[schema.Column],
    types: dict[str, str],
    batch_rows: int,
) -> Iterator[pa.Table]:
    """Stream ``columns`` of ``table`` (``types``: its own column types) in imdb_id byte
    order, as Arrow tables of ``batch_rows`` rows in ``wire_schema(columns)``.

    Memory stays bounded by a few batches, whatever the size of the table. Enum
    columns come as text; an empty table gives one empty table.
    """
    wire = wire_schema(columns)
    batch_bytes = {adbc_driver_postgresql.StatementOptions.BATCH_SIZE_HINT_BYTES.value: str(_ADBC_BATCH_BYTES)}
    try:
        with _query(conn, select_query(table, columns, types), **batch_bytes) as reader:
            pending, held, sent = [], 0, False
            for batch in reader:
                pending.append(_decode(batch, columns, types, wire))
                held += batch.num_rows
                while held >= batch_rows:
                    rows = pa.Table.from_batches(pending)
                    # one chunk a column: the parquet bytes then depend on the rows and batch_rows
                    # alone, not on where ADBC's batches happened to end
                    yield rows.slice(0, batch_rows).combine_chunks()
                    pending, held, sent = rows.slice(batch_rows).to_batches(), held - batch_rows, True
            if held or not sent:  # the rest, or one empty table
                yield pa.Table.from_batches(pending, wire).combine_chunks()
    except (adbc_driver_manager.Error, pa.ArrowException) as error:  # a failure mid-stream comes through Arrow
        raise _read_error(error, table) from error


def read_frames(
    conn: adbc_driver_manager.AdbcConnection,
    table: str,
    columns: list[schema.Column],
    types: dict[str, str],
    batch_rows: int,
) -> Iterator[pl.DataFrame]:
    """``read_tables`` as polars frames (dtypes: ``schema.wire_schema``)."""
    dtypes = schema.wire_schema(columns)
    for rows in read_tables(conn, table, columns, types, batch_rows):
        yield pl.from_arrow(rows, rechunk=True).cast(dtypes)


def replace_rows(
    conn: psycopg.Connection, table: sql.Identifier, create: sql.Composable, batches: Iterable[pl.DataFrame],
    before_commit: Callable[[], None] | None = None,
) -> int:
    """Replace the whole content of ``table`` with ``batches``, in one transaction;
    ``before_commit`` runs once every row is in, and its failure rolls them back.

    The table is created (``create``) when missing. Concurrent calls for one table
    run one after the other (an advisory lock), so the last to commit wins whole.
    Readers see the old rows until the commit; any failure (a bad row, a lost
    connection, an exception in the caller's batches) rolls back and leaves the
    old rows as they were.
    Rows go in by COPY, in CSV, one batch at a time.
    """
    import psycopg
    from psycopg import sql

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
            if before_commit:
                before_commit()
    except psycopg.Error as error:
        raise PipelineError(
            f"writing {table.as_string(conn)} failed, its previous content is unchanged: {' '.join(str(error).split())}"
        ) from error
    return rows


def chosen_source(source: str, server_variable: str | None) -> tuple[str, str]:
    """The source to read ("sample" or "postgres") and why, in words for the log."""
    if source != "auto":
        return source, f"extract.source {source}"
    if server_variable:
        return "postgres", f"extract.source auto, {server_variable} is set"
    return "sample", f"extract.source auto, none of {', '.join(SERVER_VARIABLES)} is set"
