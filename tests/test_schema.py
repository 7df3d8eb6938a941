"""The schema boundary: every source's rows leave it in one shape, or with one clear error."""

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reel_driver.config.errors import PipelineError
from reel_driver.data import database, schema


def rows(**changes: list) -> pl.DataFrame:
    base = {
        "imdb_id": ["tt0000011", "tt0000012"],
        "label": ["would_watch", "would_not_watch"],
        "media_type": ["movie", "tv_show"],
        "media_title": ["A", "B"],
        "release_year": [2001, 2002],
        "genre": [["Drama"], None],
        "created_at": [None, None],
        "updated_at": [None, None],
    }
    data = {**base, **changes}
    required = {c.name: data.get(c.name, [None, None]) for c in schema.COLUMNS if c.required}
    return pl.DataFrame({**required, **{k: v for k, v in data.items() if k not in required}}, strict=False)


def test_conform_casts_orders_and_drops_extra_columns() -> None:
    frame = rows(extra=["x", "y"])
    frame = frame.select(reversed(frame.columns))  # columns in another order
    conformed = schema.conform(frame)
    assert conformed.columns == [c.name for c in schema.COLUMNS if c.required]
    assert conformed.schema["label"] == pl.Enum(schema.LABELS)
    assert conformed.schema["release_year"] == pl.Int16
    assert conformed.get_column("genre").to_list() == [["Drama"], None]


def test_a_row_without_a_label_is_not_an_error() -> None:
    conformed = schema.conform(rows(label=[None, "would_watch"], reviewed=[False, None]))
    assert conformed.get_column("label").to_list() == [None, "would_watch"]
    assert conformed.get_column("reviewed").to_list() == [False, None]


def test_optional_columns_are_kept_when_present() -> None:
    conformed = schema.conform(rows(anomalous=[True, False]))
    assert conformed.get_column("anomalous").to_list() == [True, False]
    assert "human_labeled" not in conformed.columns


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"label": ["would_watch", "maybe"]}, "column label: unknown value 'maybe' (imdb_id tt0000012); allowed: would_watch, would_not_watch"),
        ({"media_type": ["film", "movie"]}, "column media_type: unknown value 'film' (imdb_id tt0000011)"),
        ({"imdb_id": ["tt0000011", None]}, "column imdb_id: NULL where the table forbids it (imdb_id None)"),
        ({"release_year": [2001, "last year"]}, "column release_year: cannot read as Int16"),
        ({"release_year": [2001, 70000]}, "column release_year: cannot read as Int16"),
    ],
)
def test_bad_rows_are_named(changes: dict, message: str) -> None:
    with pytest.raises(PipelineError) as caught:
        schema.conform(rows(**changes))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_required_columns_are_all_named() -> None:
    with pytest.raises(PipelineError, match=r"missing required column\(s\) label, genre; found: imdb_id"):
        schema.conform(rows().drop("label", "genre"))


def wire_table(frame: pl.DataFrame) -> pa.Table:
    """``frame`` as the database sends it: Arrow, enums as text, INTEGER ids as int32."""
    columns = schema.present_columns(frame.columns)
    table = frame.select(c.name for c in columns).to_arrow().cast(database.wire_schema(columns))
    return table.set_column(table.schema.get_field_index("tmdb_id"), "tmdb_id", table["tmdb_id"].cast(pa.int32()))


def test_conform_arrow_gives_what_conform_gives(tmp_path) -> None:
    frame = rows(tmdb_id=[7, None], label=["would_not_watch", None], genre=[["Drama", None], []], anomalous=[True, None])
    conformed = schema.conform_arrow(wire_table(frame))
    assert conformed.schema == schema.arrow_schema(tuple(conformed.column_names))
    # the parquet extract writes reads back in the schema's dtypes, enums included
    pq.write_table(conformed, tmp_path / "rows.parquet")
    back = pl.read_parquet(tmp_path / "rows.parquet")
    assert back.equals(schema.conform(frame)) and back.schema == schema.conform(frame).schema
    assert back.get_column("label").to_list() == ["would_not_watch", None]
    assert back.get_column("tmdb_id").to_list() == [7, None]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"label": ["would_watch", "maybe"]}, "column label: unknown value 'maybe' (imdb_id tt0000012); allowed: would_watch, would_not_watch"),
        ({"media_type": ["movie", None]}, "column media_type: NULL where the table forbids it (imdb_id tt0000012)"),
    ],
)
def test_conform_arrow_names_bad_rows(changes: dict, message: str) -> None:
    with pytest.raises(PipelineError) as caught:
        schema.conform_arrow(wire_table(rows(**changes)))
    assert str(caught.value).startswith(message)
