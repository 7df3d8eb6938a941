"""PostgreSQL access: connections from the environment only, streamed reads.

Credentials come from the libpq variables (PGHOST, PGPORT, PGDATABASE, PGUSER,
PGPASSWORD, PGPASSFILE, PGSERVICE, ...) or from REEL_DRIVER_PG_DSN; never from
params, and never logged.
"""

import os
import re
from collections.abc import Iterable, Iterator, Mapping

import adbc_driver_manager
import adbc_driver_postgresql
import adbc_driver_postgresql.dbapi
import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict

from stages import schema
from stages.errors import PipelineError

DSN_VARIABLE = "REEL_DRIVER_PG_DSN"
# The variables that say which server or database to read: one of them set means this shell
# points at a database (extract.source: auto reads it then). Not PGPASSWORD, PGSSLMODE and the
# like, which only say how to connect, nor PGUSER and PGPORT alone, which shells often keep.
SERVER_VARIABLES = (DSN_VARIABLE, "PGHOST", "PGHOSTADDR", "PGSERVICE", "PGDATABASE")

# Rows come by ADBC's PostgreSQL driver: binary COPY decoded into Arrow in C++.
# bench/extract.py measured the routes on 1,000,000 rows (issue 19): text COPY as
# CSV parsed by pyarrow lost to ADBC by 1.16 x in seconds and 1.5 x in peak RSS;
# binary COPY rows built into Python tuples took 114 s. psycopg stays for
# connecting, describing the table and publishing.
# How each canonical type travels: its Arrow type here, and the table types that go
# bare; any other type is cast on the server. A cast there runs before the sort, while
# this end waits, so CHAR padding is trimmed and INTEGER narrowed here in Arrow compute
# (_decode). NUMERIC is the exception: ADBC would build its decimal text row by row,
# which costs this end more than the cast to float8 costs the server (bench/extract.py).
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
_ADBC_BATCH_BYTES = 1 << 20


def _where(dsn: str) -> str:
    """Where libpq tries to connect, in plain words (socket or host, port, database, user):
    the DSN's values, else the PG* variables, else libpq's defaults. No password, ever."""
    given = conninfo_to_dict(dsn)  # connect() has checked that it parses
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


def _libpq_reason(error: psycopg.Error) -> str:
    """libpq's message on one line. Its first line says which socket or host failed and why;
    the next ones (a hint, one per address tried) follow after "; ". psycopg's own prefix
    ("connection is bad:", "connection failed:") says nothing more and goes."""
    lines = [" ".join(line.split()) for line in str(error).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return type(error).__name__
    lines[0] = re.sub(r"^connection (is bad|failed): ", "", lines[0])
    return "; ".join(lines)


def _adbc_reason(error: Exception) -> str:
    """ADBC's message on one line, without its status prefix ("IO: [libpq] ")."""
    message = " ".join(str(error).split())
    return re.sub(r"^[A-Z_]+: (\[libpq\] )?", "", message)


def server_variable(environment: Mapping[str, str]) -> str | None:
    """The first of ``SERVER_VARIABLES`` set (not empty) in ``environment``, or None."""
    return next((name for name in SERVER_VARIABLES if environment.get(name)), None)


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
        # libpq never puts the password in its messages; _where never reads it
        raise PipelineError(
            f"cannot connect to PostgreSQL at {_where(dsn)}: {_libpq_reason(error)} "
            f"(set {DSN_VARIABLE} or the PG* variables)"
        ) from None


def identifier(table: str) -> sql.Identifier:
    """A schema-qualified name from params, quoted part by part."""
    return sql.Identifier(*table.split("."))


def table_columns(conn: psycopg.Connection, table: sql.Identifier) -> dict[str, str]:
    """The columns of ``table`` in table order, each with its type: the type's name
    ("int4", "bpchar", arrays as "varchar[]"), "enum" for any enum."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(table))
            described = [(column.name, column.type_code) for column in cur.description or []]
            cur.execute(
                "SELECT t.oid, CASE WHEN t.typtype = 'e' THEN 'enum' "
                "WHEN e.oid IS NOT NULL THEN e.typname || '[]' ELSE t.typname END "
                "FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' "
                "WHERE t.oid = ANY(%s)",
                [[oid for _, oid in described]],
            )
            names = dict(cur.fetchall())
    except psycopg.errors.UndefinedTable:
        raise PipelineError(f"table {table.as_string(conn)} does not exist") from None
    except psycopg.errors.InsufficientPrivilege as error:
        raise PipelineError(f"no permission to read {table.as_string(conn)}: {error}") from None
    return {name: names.get(oid, "unknown") for name, oid in described}


def _bare(column: schema.Column, table_type: str) -> bool:
    return table_type in _WIRE[column.pg_type][1]


def _wire(column: schema.Column, table_type: str) -> sql.Composable:
    """The SELECT expression that sends ``column``: bare, or cast to its canonical type (``_WIRE``)."""
    name = sql.Identifier(column.name)
    value = name if _bare(column, table_type) else sql.SQL("{}::{}").format(name, sql.SQL(column.pg_type))
    return sql.SQL("{} AS {}").format(value, name)


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
            decoded.append(values.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            reason = " ".join(str(error).split())[:200]
            raise PipelineError(f"column {column.name}: cannot read {table_type} as {column.pg_type}: {reason}") from error
    return pa.RecordBatch.from_arrays(decoded, schema=wire)


def select_query(
    table: sql.Identifier, columns: list[schema.Column], types: dict[str, str], where: sql.Composable | None = None
) -> sql.Composed:
    """SELECT of schema columns in their wire form, in imdb_id byte order; ``types``:
    the table's own column types (``table_columns``)."""
    selected = sql.SQL(", ").join(_wire(c, types[c.name]) for c in columns)
    condition = sql.SQL(" WHERE {}").format(where) if where is not None else sql.SQL("")
    # COLLATE "C": byte order, the same on every server and as polars sorts
    return sql.SQL('SELECT {} FROM {}{} ORDER BY imdb_id COLLATE "C"').format(selected, table, condition)


def wire_schema(columns: list[schema.Column]) -> pa.Schema:
    """The Arrow schema of ``columns`` as ``read_tables`` yields them."""
    return pa.schema([(c.name, _WIRE[c.pg_type][0]) for c in columns])


def read_tables(
    query: str, columns: list[schema.Column], types: dict[str, str], batch_rows: int
) -> Iterator[pa.Table]:
    """Stream the rows of ``query`` (a ``select_query`` as text) as Arrow tables of
    ``batch_rows`` rows, in ``wire_schema(columns)``; ``types``: the table's own column
    types (``table_columns``).

    Memory stays bounded by a few batches, whatever the size of the table. Enum
    columns come as text; an empty result gives one empty table.
    """
    dsn = os.environ.get(DSN_VARIABLE) or "postgresql://"  # the bare scheme: libpq reads the PG* variables
    wire = wire_schema(columns)
    try:
        conn = adbc_driver_postgresql.dbapi.connect(dsn)
    except adbc_driver_manager.Error as error:
        raise PipelineError(f"cannot connect to PostgreSQL at {_where(dsn)}: {_adbc_reason(error)}") from None
    try:
        with conn.cursor() as cur:
            # a TIMESTAMP column is cast to timestamptz on the server, in its session's time zone;
            # text arrives in the client encoding
            cur.execute("SET TimeZone = 'UTC'")
            cur.execute("SET client_encoding = 'UTF8'")
            cur.adbc_statement.set_options(
                **{adbc_driver_postgresql.StatementOptions.BATCH_SIZE_HINT_BYTES.value: str(_ADBC_BATCH_BYTES)})
            cur.execute(query)
            pending, held, sent = [], 0, False
            for batch in cur.fetch_record_batch():
                pending.append(_decode(batch, columns, types, wire))
                held += batch.num_rows
                while held >= batch_rows:
                    rows = pa.Table.from_batches(pending)
                    yield rows.slice(0, batch_rows)
                    pending, held, sent = rows.slice(batch_rows).to_batches(), held - batch_rows, True
            if held or not sent:  # the rest, or one empty table
                yield pa.Table.from_batches(pending, wire)
    except adbc_driver_manager.Error as error:
        raise PipelineError(f"PostgreSQL failed while reading: {_adbc_reason(error)}") from error
    finally:
        # a stream stopped early (a bad row): without the cancel, closing would first
        # read the rest of the table
        conn.adbc_cancel()
        conn.close()


def read_frames(
    conn: psycopg.Connection, query: sql.Composable, columns: list[schema.Column], types: dict[str, str], batch_rows: int
) -> Iterator[pl.DataFrame]:
    """``read_tables`` as polars frames (dtypes: ``schema.wire_schema``)."""
    dtypes = schema.wire_schema(columns)
    for table in read_tables(query.as_string(conn), columns, types, batch_rows):
        yield pl.from_arrow(table, rechunk=True).cast(dtypes)


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
