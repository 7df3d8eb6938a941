"""atp.training as the pipeline sees it: column -> dtype, required or optional.

This is the one place that knows the table's shape. Extract enforces it at the
boundary (database or sample), so every later stage can trust the raw parquet.
"""

from dataclasses import dataclass
from functools import cache

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from reel_driver.config.errors import PipelineError

LABELS = ("would_watch", "would_not_watch")
MEDIA_TYPES = ("movie", "tv_show", "tv_season", "tv_episode_pack")
POSITIVE_LABEL = "would_watch"


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    # The PostgreSQL type the extract reads the column as; a table column of another
    # type is cast to it on the server (database._WIRE: enums come as text, NUMERIC
    # as float8, CHAR(2)[] as text[] without the blank padding).
    pg_type: str
    required: bool = True


COLUMNS: tuple[Column, ...] = (
    Column("imdb_id", pl.String(), "text"),
    Column("tmdb_id", pl.Int64(), "int8"),
    Column("label", pl.Enum(LABELS), "text"),
    Column("media_type", pl.Enum(MEDIA_TYPES), "text"),
    Column("media_title", pl.String(), "text"),
    Column("season", pl.Int16(), "int2"),
    Column("episode", pl.Int16(), "int2"),
    Column("release_year", pl.Int16(), "int2"),
    Column("budget", pl.Int64(), "int8"),
    Column("revenue", pl.Int64(), "int8"),
    Column("runtime", pl.Int64(), "int8"),
    Column("origin_country", pl.List(pl.String()), "text[]"),
    Column("production_companies", pl.List(pl.String()), "text[]"),
    Column("production_countries", pl.List(pl.String()), "text[]"),
    Column("production_status", pl.String(), "text"),
    Column("original_language", pl.String(), "text"),
    Column("spoken_languages", pl.List(pl.String()), "text[]"),
    Column("genre", pl.List(pl.String()), "text[]"),
    Column("original_media_title", pl.String(), "text"),
    Column("tagline", pl.String(), "text"),
    Column("overview", pl.String(), "text"),
    Column("tmdb_rating", pl.Float64(), "float8"),
    Column("tmdb_votes", pl.Int64(), "int8"),
    Column("rt_score", pl.Int16(), "int2"),
    Column("metascore", pl.Int16(), "int2"),
    Column("imdb_rating", pl.Float64(), "float8"),
    Column("imdb_votes", pl.Int64(), "int8"),
    # Only newer deployments have the flags (reel_driver/preparation/rows.py says what they decide).
    Column("human_labeled", pl.Boolean(), "bool", required=False),
    Column("anomalous", pl.Boolean(), "bool", required=False),
    Column("reviewed", pl.Boolean(), "bool", required=False),
    Column("created_at", pl.Datetime("us", "UTC"), "timestamptz"),
    Column("updated_at", pl.Datetime("us", "UTC"), "timestamptz"),
)

# The production DDL's types of the feature columns (analyze reports the cast to each dtype).
PRODUCTION_TYPES = {
    "release_year": "SMALLINT", "budget": "BIGINT", "revenue": "BIGINT", "runtime": "INTEGER",
    "tmdb_rating": "DECIMAL(5,3)", "tmdb_votes": "INTEGER", "rt_score": "INTEGER", "metascore": "INTEGER",
    "imdb_rating": "DECIMAL(4,1)", "imdb_votes": "INTEGER", "origin_country": "CHAR(2)[] (padding trimmed)",
    "production_countries": "CHAR(2)[] (padding trimmed)", "spoken_languages": "CHAR(2)[] (padding trimmed)",
    "genre": "VARCHAR(20)[]", "production_companies": "VARCHAR(255)[]", "production_status": "VARCHAR(25)",
    "original_language": "CHAR(2) (padding trimmed)", "media_title": "VARCHAR(255)",
    "original_media_title": "VARCHAR(255)", "tagline": "VARCHAR(255)", "overview": "TEXT",
}

# The table declares these NOT NULL; a row without them cannot be used at all. A label may
# be NULL (a new arrival not scored or reviewed yet): such a row is never a training row.
NOT_NULL = ("imdb_id", "media_type")

BY_NAME = {column.name: column for column in COLUMNS}
LIST_COLUMNS = tuple(c.name for c in COLUMNS if isinstance(c.dtype, pl.List))
ENUM_COLUMNS = tuple(c.name for c in COLUMNS if isinstance(c.dtype, pl.Enum))


def present_columns(available: list[str]) -> list[Column]:
    """The schema's columns that ``available`` has, in schema order.

    Raises PipelineError naming the first required column that is missing.
    """
    missing = [c.name for c in COLUMNS if c.required and c.name not in available]
    if missing:
        raise PipelineError(
            f"atp.training is missing required column(s) {', '.join(missing)}; "
            f"found: {', '.join(available) or 'none'}"
        )
    return [c for c in COLUMNS if c.name in available]


def wire_schema(columns: list[Column]) -> dict[str, pl.DataType]:
    """Dtypes of rows as they come off the wire: enum columns are still text."""
    return {c.name: pl.String() if c.name in ENUM_COLUMNS else c.dtype for c in columns}


def _first_row(frame: pl.DataFrame, condition: pl.Expr) -> dict | None:
    bad = frame.filter(condition)
    return bad.row(0, named=True) if bad.height else None


def _null_error(name: str, imdb_id: object) -> PipelineError:
    return PipelineError(f"column {name}: NULL where the table forbids it (imdb_id {imdb_id})")


def _unknown_value_error(name: str, value: object, imdb_id: object) -> PipelineError:
    allowed = BY_NAME[name].dtype.categories.to_list()
    return PipelineError(f"column {name}: unknown value {value!r} (imdb_id {imdb_id}); allowed: {', '.join(allowed)}")


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Enforce the schema on rows from any source: columns, order, dtypes, enum values.

    Extra columns are dropped; a missing required column, a NULL where the
    table forbids one, a value outside an enum or of the wrong type raises
    PipelineError naming the column, the value and a row.
    """
    columns = present_columns(frame.columns)
    for name in NOT_NULL:
        if row := _first_row(frame, pl.col(name).is_null()):
            raise _null_error(name, row["imdb_id"])
    for name in ENUM_COLUMNS:
        allowed = BY_NAME[name].dtype.categories.to_list()
        if row := _first_row(frame, ~pl.col(name).cast(pl.String).is_in(allowed)):
            raise _unknown_value_error(name, row[name], row["imdb_id"])
    return cast(frame, [c.name for c in columns])


@cache
def arrow_schema(names: tuple[str, ...]) -> pa.Schema:
    """The Arrow schema that polars gives the named columns: a parquet file in it reads
    back in the schema's dtypes (enums included)."""
    return pl.DataFrame(schema={name: BY_NAME[name].dtype for name in names}).to_arrow().schema


@cache
def _categories(name: str, value_type: pa.DataType) -> pa.Array:
    # from polars' Arrow, not pa.array(a list): that imports pandas (0.5 s of extract's start)
    return BY_NAME[name].dtype.categories.to_arrow().cast(value_type)


def _enum_codes(table: pa.Table, field: pa.Field) -> pa.ChunkedArray:
    """A text column as the dictionary array of its enum (the dictionary: every category,
    in order, as polars writes it); a value outside the enum raises."""
    categories = _categories(field.name, field.type.value_type)
    text = table[field.name]
    codes = pc.index_in(text, value_set=categories)
    if codes.null_count > text.null_count:
        row = pc.index(pc.and_(codes.is_null(), text.is_valid()), True).as_py()
        raise _unknown_value_error(field.name, text[row].as_py(), table["imdb_id"][row].as_py())
    codes = codes.cast(field.type.index_type)
    return pa.chunked_array(
        [pa.DictionaryArray.from_arrays(chunk, categories, ordered=field.type.ordered) for chunk in codes.chunks],
        field.type,
    )


def conform_arrow(table: pa.Table) -> pa.Table:
    """``conform`` for Arrow rows whose columns are already the schema's, in order, in
    types that widen to its dtypes (the database's wire types).

    Arrow compute instead of polars: on 1,000,000 rows the round trip through polars
    cost 1.9 s of CPU against 0.3 s (its strings are views, copied both ways).
    """
    target = arrow_schema(tuple(table.column_names))
    for name in NOT_NULL:
        if table[name].null_count:
            raise _null_error(name, table["imdb_id"][pc.index(table[name].is_null(), True).as_py()].as_py())
    columns = []
    for field, column in zip(target, table.columns):
        if field.name in ENUM_COLUMNS:
            columns.append(_enum_codes(table, field))
            continue
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            reason = " ".join(str(error).split())[:200]
            raise PipelineError(f"column {field.name}: cannot read as {BY_NAME[field.name].dtype}: {reason}") from error
    return pa.Table.from_arrays(columns, schema=target)


def cast(frame: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """The named columns of ``frame`` in the schema's dtypes; a value that does not fit is
    one PipelineError naming the column."""
    cast_columns = []
    for name in names:
        column = BY_NAME[name]
        try:
            cast_columns.append(frame.get_column(name).cast(column.dtype, strict=True))
        except pl.exceptions.PolarsError as error:
            reason = " ".join(str(error).split())[:200]
            raise PipelineError(f"column {name}: cannot read as {column.dtype}: {reason}") from error
    return pl.DataFrame(cast_columns)
