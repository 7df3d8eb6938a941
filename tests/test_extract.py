"""extract against a real PostgreSQL (from a pip wheel) in the production schema."""

import hashlib
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import psycopg
import pyarrow.parquet as pq
import pytest

from reel_driver.config import paths
from reel_driver.config.errors import PipelineError
from reel_driver.data import database, schema
from reel_driver.preparation import training_set
from stages import extract
from tests.conftest import REPO, insert_rows, stage_env

AWKWARD_ROWS = """
INSERT INTO atp.training (imdb_id, tmdb_id, label, media_type, media_title, release_year,
    budget, revenue, runtime, origin_country, production_countries, spoken_languages, genre,
    production_companies, original_language, tmdb_rating, imdb_rating, rt_score, created_at, updated_at)
VALUES
  ('tt0000001', 11, 'would_watch', 'movie', 'Empty Arrays', 2020, 0, 0, 0,
   '{}', '{}', '{}', '{}', '{}', 'en', 7.125, 6.5, 91, '2025-03-01 10:00+00', '2025-03-02 12:30+02'),
  ('tt0000002', 12, 'would_not_watch', 'movie', 'Null Elements', 2021, NULL, NULL, NULL,
   '{NULL,US,U}', '{NULL}', '{en,NULL,e}', '{NULL,Drama}', '{NULL,"A, Co."}', 'e', 0, NULL, NULL,
   '2025-03-01 10:00+00', '2025-03-01 10:00+00'),
  ('tt00000003', 12, 'would_not_watch', 'tv_season', 'All Null', 1999, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2025-03-01 10:00+00', '2025-03-01 10:00+00')
"""


def run_extract() -> pl.DataFrame:
    extract.main()
    return pl.read_parquet(paths.RAW)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def from_postgres(workdir, atp_db: str) -> str:
    workdir(extract={"source": "postgres"})
    return atp_db


@pytest.mark.parametrize("flags", [True, False], ids=["with-flags", "without-flags"])
def test_awkward_rows_come_out_exactly(from_postgres: str, flags: bool) -> None:
    if not flags:
        execute(from_postgres, "ALTER TABLE atp.training DROP COLUMN human_labeled, DROP COLUMN anomalous, DROP COLUMN reviewed")
    execute(from_postgres, AWKWARD_ROWS)

    raw = run_extract()

    assert raw.get_column("imdb_id").to_list() == ["tt00000003", "tt0000001", "tt0000002"]  # byte order
    assert ("anomalous" in raw.columns) is flags and ("human_labeled" in raw.columns) is flags and ("reviewed" in raw.columns) is flags
    assert raw.schema == {c.name: c.dtype for c in schema.COLUMNS if flags or c.required}
    all_null, empty, null_elements = raw.iter_rows(named=True)
    assert [empty[c] for c in schema.LIST_COLUMNS] == [[]] * 5
    assert null_elements["origin_country"] == [None, "US", "U"]  # CHAR(2) padding trimmed
    assert null_elements["spoken_languages"] == ["en", None, "e"]
    assert null_elements["production_companies"] == [None, "A, Co."]
    assert null_elements["original_language"] == "e"
    assert [all_null[c] for c in schema.LIST_COLUMNS] == [None] * 5
    assert all_null["original_language"] is None and all_null["budget"] is None
    assert (empty["budget"], empty["revenue"], empty["runtime"]) == (0, 0, 0)
    assert empty["tmdb_rating"] == 7.125 and empty["imdb_rating"] == 6.5 and empty["rt_score"] == 91
    assert empty["updated_at"] == datetime(2025, 3, 2, 10, 30, tzinfo=timezone.utc)
    assert (empty["label"], all_null["media_type"]) == ("would_watch", "tv_season")
    if flags:
        assert raw.get_column("anomalous").to_list() == [False, False, False]
        assert raw.get_column("reviewed").to_list() == [False, False, False]  # the column's default


AWKWARD_TEXT = r"""
INSERT INTO atp.training (imdb_id, label, media_type, media_title, release_year, tagline, overview,
    production_companies, genre, tmdb_rating, created_at, updated_at)
VALUES
  ('tt0000004', 'would_watch', 'movie', 'NA', 2020, '', E'two\nlines, "quoted"\r\n\\ and ; ∑é',
   '{"NULL","","a\"b","c\\d","{x}","e,f"}', '{}', 9.999, '2025-03-01 10:00:00.123456+00', '1999-12-31 23:59:59.5-08'),
  ('tt0000005', 'would_watch', 'movie', 'NULL', 2020, NULL, 'null', NULL, '{NULL}', 0.001,
   '2025-03-01 10:00+00', '2025-03-01 10:00+00')
"""


def test_awkward_text_and_session_settings_change_nothing(from_postgres: str, monkeypatch) -> None:
    # a server or client set to other date, time-zone and float styles must not change the output
    monkeypatch.setenv("PGOPTIONS", "-c DateStyle=SQL,DMY -c TimeZone=Asia/Kolkata -c extra_float_digits=-3")
    execute(from_postgres, AWKWARD_TEXT)

    text, nulls = run_extract().iter_rows(named=True)

    assert (text["media_title"], text["tagline"]) == ("NA", "")  # not NULL
    assert text["overview"] == 'two\nlines, "quoted"\r\n\\ and ; ∑é'
    assert text["production_companies"] == ["NULL", "", 'a"b', "c\\d", "{x}", "e,f"]
    assert text["genre"] == [] and nulls["genre"] == [None] and nulls["production_companies"] is None
    assert (text["tmdb_rating"], nulls["tmdb_rating"]) == (9.999, 0.001)
    assert text["created_at"] == datetime(2025, 3, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert text["updated_at"] == datetime(2000, 1, 1, 7, 59, 59, 500000, tzinfo=timezone.utc)
    assert (nulls["media_title"], nulls["tagline"], nulls["overview"]) == ("NULL", None, "null")


def test_other_column_types_give_the_same_frame(from_postgres: str) -> None:
    # the production types go bare; any other type is cast on the server to the same values
    execute(from_postgres, AWKWARD_ROWS, AWKWARD_TEXT)
    production = run_extract()
    execute(
        from_postgres,
        "ALTER TABLE atp.training ALTER COLUMN label TYPE text, ALTER COLUMN media_type TYPE varchar(20),"
        " ALTER COLUMN tmdb_rating TYPE float8, ALTER COLUMN imdb_rating TYPE real, ALTER COLUMN budget TYPE numeric,"
        " ALTER COLUMN runtime TYPE int2, ALTER COLUMN release_year TYPE int4, ALTER COLUMN tmdb_id TYPE int8,"
        " ALTER COLUMN original_language TYPE char(3), ALTER COLUMN origin_country TYPE char(3)[],"
        " ALTER COLUMN genre TYPE text[], ALTER COLUMN human_labeled TYPE text,"
        " ALTER COLUMN created_at TYPE timestamp USING created_at AT TIME ZONE 'UTC'",
    )
    assert run_extract().equals(production)


def test_production_types_are_sent_without_casts_and_cast_after_the_sort(from_postgres: str) -> None:
    # CHAR padding is trimmed and INTEGER narrowed on this side; only NUMERIC, which ADBC would
    # send as decimal text, is cast, and on the sorted rows as they stream out: one sort, below it no cast
    execute(from_postgres, AWKWARD_ROWS)
    with database.reading() as conn:
        types = database.table_columns(conn, "atp.training")
    query = database.select_query("atp.training", list(schema.COLUMNS), types)
    with psycopg.connect(from_postgres) as conn:  # ADBC runs a query inside COPY, where EXPLAIN cannot be
        plan = conn.execute(f"EXPLAIN (VERBOSE, FORMAT JSON) {query}").fetchone()[0][0]["Plan"]
    assert types["label"] == "enum" and types["origin_country"] == "bpchar[]" and types["tmdb_rating"] == "numeric"
    assert re.findall(r'"(\w+)"::', query) == ["tmdb_rating", "imdb_rating"]
    nodes = [plan]
    while "Plans" in nodes[-1]:
        (child,) = nodes[-1]["Plans"]
        nodes.append(child)
    sorts = [i for i, node in enumerate(nodes) if node["Node Type"] == "Sort"]
    assert len(sorts) == 1 and nodes[sorts[0]]["Sort Key"] == ['training.imdb_id COLLATE "C"']
    casts = [i for i, node in enumerate(nodes) if any("double precision" in output for output in node["Output"])]
    assert casts and max(casts) < sorts[0], nodes


# the extract as dvc.yaml runs it, then the heavy modules it must not import: ADBC's DB-API
# imports pyarrow.dataset and pandas (0.95 s and 78 MiB of every start: docs/benchmarks.md#extract),
# psycopg is for writing, scipy for the sample
IMPORTED = """
import atexit, runpy, sys
atexit.register(lambda: print(*(m for m in ("pandas", "pyarrow.dataset", "psycopg", "scipy") if m in sys.modules)))
runpy.run_module("stages.extract", run_name="__main__")
"""


def test_a_database_extract_imports_only_what_it_uses(from_postgres: str) -> None:
    execute(from_postgres, AWKWARD_ROWS)
    result = subprocess.run([sys.executable, "-c", IMPORTED], capture_output=True, text=True, env=stage_env(), timeout=60)
    assert (result.returncode, result.stdout) == (0, "\n"), result.stderr
    assert pl.read_parquet(paths.RAW).height == 3


def test_identical_rows_give_identical_bytes(from_postgres: str) -> None:
    execute(from_postgres, AWKWARD_ROWS)
    run_extract()
    first = sha256(paths.RAW)
    run_extract()
    assert sha256(paths.RAW) == first
    execute(from_postgres, "UPDATE atp.training SET label = 'would_watch' WHERE imdb_id = 'tt0000002'")
    run_extract()
    assert sha256(paths.RAW) != first


def test_streams_in_batches_of_batch_rows(workdir, from_postgres: str) -> None:
    execute(from_postgres, AWKWARD_ROWS)
    whole = run_extract()
    workdir(extract={"batch_rows": 2})
    batched = run_extract()
    assert batched.equals(whole)
    assert pq.ParquetFile(paths.RAW).num_row_groups == 2


def test_empty_table_gives_an_empty_file_with_the_schema(from_postgres: str) -> None:
    raw = run_extract()
    assert raw.height == 0
    assert raw.columns == [c.name for c in schema.COLUMNS]


def test_quotes_the_table_name(workdir, from_postgres: str) -> None:
    execute(
        from_postgres,
        'CREATE TABLE atp."Training; DROP TABLE x" (LIKE atp.training INCLUDING ALL)',
        AWKWARD_ROWS.replace("atp.training", 'atp."Training; DROP TABLE x"'),
    )
    workdir(extract={"table": "atp.Training; DROP TABLE x"})
    assert run_extract().height == 3


def test_unknown_label_value_is_named_and_nothing_is_lost(from_postgres: str) -> None:
    execute(from_postgres, AWKWARD_ROWS)
    run_extract()
    before = sha256(paths.RAW)
    execute(
        from_postgres,
        "ALTER TYPE atp.label_type ADD VALUE 'would_rewatch'",
        "UPDATE atp.training SET label = 'would_rewatch' WHERE imdb_id = 'tt0000002'",
    )
    with pytest.raises(PipelineError, match=r"column label: unknown value 'would_rewatch' \(imdb_id tt0000002\)"):
        run_extract()
    assert sha256(paths.RAW) == before
    assert not list(paths.RAW.parent.glob(".*.tmp"))


def test_a_bad_row_after_the_first_batch_stops_without_hanging(workdir, from_postgres: str) -> None:
    execute(from_postgres, AWKWARD_ROWS, "ALTER TYPE atp.label_type ADD VALUE 'would_rewatch'")
    execute(from_postgres, "UPDATE atp.training SET label = 'would_rewatch' WHERE imdb_id = 'tt0000002'")
    workdir(extract={"batch_rows": 1})  # the bad row arrives while the COPY is still open
    with pytest.raises(PipelineError, match="unknown value 'would_rewatch'"):
        run_extract()
    assert not list(Path(".").rglob(".*.tmp"))


def test_a_row_of_megabytes_comes_through_whole(workdir, from_postgres: str) -> None:
    # the CSV reader this replaced refused a row larger than its 1 MiB block; ADBC has no such bound
    execute(from_postgres, AWKWARD_ROWS)
    overview = 'a,"b\n' * 300_000  # 1.7 MiB
    execute(from_postgres, f"UPDATE atp.training SET overview = '{overview}' WHERE imdb_id = 'tt0000002'")
    workdir(extract={"batch_rows": 1})
    raw = run_extract()
    assert raw.get_column("overview").to_list() == [None, None, overview]


def test_missing_required_column_is_named(from_postgres: str) -> None:
    execute(from_postgres, "ALTER TABLE atp.training DROP COLUMN genre, DROP COLUMN imdb_votes")
    with pytest.raises(PipelineError, match=r"missing required column\(s\) genre, imdb_votes"):
        run_extract()


def test_missing_table_is_named(workdir, from_postgres: str) -> None:
    workdir(extract={"table": "atp.trainig"})
    with pytest.raises(PipelineError, match=r'table "atp"."trainig" does not exist'):
        run_extract()


def test_no_permission_is_named(workdir, from_postgres: str, monkeypatch) -> None:
    execute(from_postgres, "DROP ROLE IF EXISTS no_grants", "CREATE ROLE no_grants LOGIN")
    monkeypatch.setenv("REEL_DRIVER_PG_DSN", from_postgres.replace("postgres:@", "no_grants:@"))
    with pytest.raises(PipelineError) as caught:
        run_extract()
    assert str(caught.value) == 'no permission to read "atp"."training": permission denied for schema atp'


def test_an_unparsable_dsn_is_not_quoted(workdir, monkeypatch) -> None:
    workdir(extract={"source": "postgres"})
    monkeypatch.setenv("REEL_DRIVER_PG_DSN", "host=x password=correct horse")
    with pytest.raises(PipelineError) as caught:
        run_extract()
    assert str(caught.value) == "REEL_DRIVER_PG_DSN is not a valid PostgreSQL connection string"


def test_connection_error_is_one_line_without_the_password(workdir, monkeypatch, tmp_path) -> None:
    workdir(extract={"source": "postgres"})
    monkeypatch.setenv("REEL_DRIVER_PG_DSN", f"host={tmp_path}/nowhere port=1 user=me password=hunter2 connect_timeout=2")
    result = subprocess.run(
        [sys.executable, "-m", "stages.extract"], capture_output=True, text=True, env=stage_env(), cwd=tmp_path,
        timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot connect to PostgreSQL at socket directory {tmp_path}/nowhere, port 1, ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "hunter2" not in result.stderr + result.stdout
    assert not paths.RAW.exists()


# The deployments the owner has had, as DDL changes on today's table (tests/data/atp_training.sql).
DEPLOYMENTS = {
    # older: no flag columns, label NOT NULL; every labeled row counts as reviewed
    "noflags": ("ALTER TABLE atp.training DROP COLUMN human_labeled, DROP COLUMN anomalous, DROP COLUMN reviewed, "
                "ALTER COLUMN label SET NOT NULL",),
    # between: human_labeled and anomalous, no reviewed
    "no-reviewed": ("ALTER TABLE atp.training DROP COLUMN reviewed",),
    # today, as realdb.py --today leaves it: the export reviewed, the pipeline's rows not
    "today": (),
    "today-anomalous": (),
}


def pipeline_rows(movies: pl.DataFrame, count: int, first_id: int, seed: int, labeled: bool) -> pl.DataFrame:
    """New rows shaped like real movies under new ids, as the media pipeline leaves them
    (realdb.py --today): its model's label (here the opposite of the owner's), or none."""
    drawn = movies.sample(count, seed=seed).with_columns(
        imdb_id=pl.format("tt{}", pl.int_range(first_id, first_id + count)), tmdb_id=pl.int_range(first_id, first_id + count),
    )
    flipped = pl.when(pl.col("label") == "would_watch").then(pl.lit("would_not_watch")).otherwise(pl.lit("would_watch"))
    return drawn.with_columns(label=flipped if labeled else pl.lit(None, pl.String))


def load_deployment(dsn: str, real_export: pl.DataFrame, deployment: str) -> None:
    execute(dsn, *DEPLOYMENTS[deployment])
    insert_rows(dsn, real_export)
    if deployment.startswith("today"):
        execute(dsn, "UPDATE atp.training SET reviewed = true")
        movies = real_export.filter(pl.col("media_type") == "movie").with_columns(pl.col("label").cast(pl.String))
        insert_rows(dsn, pipeline_rows(movies, 300, 97000000, 1, labeled=True))  # reviewed defaults to FALSE
        insert_rows(dsn, pipeline_rows(movies, 150, 97100000, 2, labeled=False))
    if deployment == "today-anomalous":  # as realdb.py --flags does: 20 movies marked
        execute(
            dsn,
            "UPDATE atp.training SET anomalous = true WHERE imdb_id IN "
            "(SELECT imdb_id FROM atp.training WHERE media_type = 'movie' ORDER BY imdb_id LIMIT 20)",
        )


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_real_export_round_trips_through_postgres(workdir, from_postgres: str, real_export: pl.DataFrame, deployment: str) -> None:
    from reel_driver.config import params
    from reel_driver.preparation import rows

    load_deployment(from_postgres, real_export, deployment)

    raw = run_extract()

    assert raw.height == 3750 + (450 if deployment.startswith("today") else 0)
    as_text = pl.col(pl.Enum, pl.Categorical).cast(pl.String)
    expected = real_export.sort("imdb_id").with_columns(as_text)
    exported = raw.filter(pl.col("imdb_id").is_in(real_export.get_column("imdb_id").implode()))
    assert exported.select(real_export.columns).with_columns(as_text).equals(expected)
    movies = training_set.training_rows(rows.classify(raw, params.load().prep))
    flagged = real_export.filter(pl.col("media_type") == "movie").sort("imdb_id").head(20 if deployment == "today-anomalous" else 0)
    flagged_positive = flagged.filter(pl.col("label") == "would_watch").height
    # exactly the reviewed movies: none of the pipeline's 450 rows
    assert movies.height == 3705 - flagged.height
    assert movies.get_column("label").sum() == 379 - flagged_positive
    real_movies = set(real_export.filter(pl.col("media_type") == "movie").get_column("imdb_id"))
    assert set(movies.get_column("imdb_id")) == real_movies - set(flagged.get_column("imdb_id"))


@pytest.mark.slow
def test_the_bytes_do_not_depend_on_where_adbc_ends_a_batch(from_postgres: str, real_export: pl.DataFrame, monkeypatch) -> None:
    # the real overviews fill more than a dictionary page, and there the writer's pages follow the chunks
    load_deployment(from_postgres, real_export, "today")
    run_extract()
    first = sha256(paths.RAW)
    monkeypatch.setattr(database, "_ADBC_BATCH_BYTES", 4096)  # batches of a few rows each
    run_extract()
    assert sha256(paths.RAW) == first


@pytest.mark.slow
def test_todays_table_prepares_the_same_bytes_as_the_older_one(workdir, from_postgres: str, real_export: pl.DataFrame) -> None:
    """The 450 rows the media pipeline added (300 scored, 150 new) change nothing that trains."""
    from stages import prep

    outputs = (paths.PREPARED_TRAIN, paths.PREPARED_TEST, paths.PREPARED_TRAIN_RAW, paths.FEATURES, paths.NORMALIZATION)
    digests = {}
    for deployment in ("noflags", "today"):
        execute(from_postgres, "DROP SCHEMA atp CASCADE", (REPO / "tests" / "data" / "atp_training.sql").read_text())
        load_deployment(from_postgres, real_export, deployment)
        run_extract()
        prep.main()
        digests[deployment] = {path: sha256(path) for path in outputs}
    assert digests["today"] == digests["noflags"]


def test_sample_source_is_byte_identical(workdir) -> None:
    run_extract()
    first = sha256(paths.RAW)
    run_extract()
    assert sha256(paths.RAW) == first
    workdir(extract={"seed": 7})
    run_extract()
    assert sha256(paths.RAW) != first


def test_auto_reads_the_database_where_the_environment_names_one(workdir, atp_db: str, monkeypatch) -> None:
    execute(atp_db, AWKWARD_ROWS)
    workdir(extract={"source": "auto", "sample_rows": 150})
    assert run_extract().height == 3
    monkeypatch.delenv(database.DSN_VARIABLE)  # a newcomer's shell
    assert run_extract().height == 150


@pytest.mark.parametrize(
    ("source", "variable", "chosen"),
    [
        ("auto", "PGHOST", ("postgres", "extract.source auto, PGHOST is set")),
        ("auto", None, ("sample", "extract.source auto, none of REEL_DRIVER_PG_DSN, PGHOST, PGHOSTADDR, "
                                  "PGSERVICE, PGDATABASE is set")),
        ("sample", "PGHOST", ("sample", "extract.source sample")),
        ("postgres", None, ("postgres", "extract.source postgres")),
    ],
)
def test_chosen_source(source: str, variable: str | None, chosen: tuple[str, str]) -> None:
    assert database.chosen_source(source, variable) == chosen


def test_shipped_ddl_matches_the_production_schema() -> None:
    production = REPO.parent / "shared" / "schema" / "atp_training.sql"
    if not production.exists():
        pytest.skip("../shared is not beside this clone")
    shipped = (REPO / "tests" / "data" / "atp_training.sql").read_text()
    statements = [line for line in production.read_text().splitlines() if line and not line.startswith("--")]
    assert [line for line in shipped.splitlines() if line and not line.startswith("--")] == statements


def test_connects_with_the_libpq_variables(workdir, atp_db: str, monkeypatch) -> None:
    from psycopg.conninfo import conninfo_to_dict

    execute(atp_db, AWKWARD_ROWS)
    workdir(extract={"source": "postgres"})
    monkeypatch.delenv("REEL_DRIVER_PG_DSN")
    parts = conninfo_to_dict(atp_db)
    for key, variable in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"), ("dbname", "PGDATABASE")):
        if parts.get(key):
            monkeypatch.setenv(variable, str(parts[key]))
    assert run_extract().height == 3
