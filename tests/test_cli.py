"""reel-driver: offline plots, publish and predict (against a real PostgreSQL)."""

import hashlib
import re

import polars as pl
import psycopg
import pytest

from stages import cli, database, paths, scoring
from stages.errors import PipelineError
from tests.conftest import insert_rows

SPEC = {
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "data": {"values": [{"threshold": 0.1, "recall": 0.9}, {"threshold": 0.5, "recall": 0.6}]},
    "mark": "line",
    "encoding": {"x": {"field": "threshold", "type": "quantitative"}, "y": {"field": "recall", "type": "quantitative"}},
}


def test_offline_page_inlines_every_plot_and_loads_nothing() -> None:
    page = cli.render_offline({"sweep <1>": [{"type": "vega", "content": SPEC}], "image": [{"type": "image"}]})
    assert page.count("<svg") == 1
    assert "<h2>sweep &lt;1&gt;</h2>" in page
    assert not re.search(r"<script|<link|src=", page)


def test_no_plots_says_what_to_do() -> None:
    assert "run <code>dvc repro</code> first" in cli.render_offline({})


def test_help_names_the_commands(capsys) -> None:
    parser = cli.parser()
    assert parser.parse_args(["plots", "main", "-o", "x.html"]).revisions == ["main"]
    parser.print_help()
    assert "plots" in capsys.readouterr().out


# ---- publish and predict against a real PostgreSQL ---------------------------------------

def run_cli(*arguments: str) -> None:
    parsed = cli.parser().parse_args(list(arguments))
    parsed.handler(parsed)


def published(dsn: str) -> pl.DataFrame:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT imdb_id, prediction, probability, cm_value, scored_by, model_sha256 FROM atp.prediction ORDER BY imdb_id"
        ).fetchall()
    return pl.DataFrame(rows, schema=["imdb_id", "prediction", "probability", "cm_value", "scored_by", "model_sha256"], orient="row")


def test_publish_twice_gives_one_row_per_labeled_movie(in_pipeline, atp_db: str) -> None:
    run_cli("publish")
    first = published(atp_db)
    run_cli("publish")
    rows = published(atp_db)

    train, test = pl.read_parquet(paths.PREPARED_TRAIN), pl.read_parquet(paths.PREPARED_TEST)
    assert rows.height == train.height + test.height == rows.get_column("imdb_id").n_unique()
    assert rows.drop("model_sha256").equals(first.drop("model_sha256"))
    assert rows.get_column("probability").is_between(0, 1).all()
    assert dict(rows.get_column("scored_by").value_counts().iter_rows()) == {"out_of_fold": train.height, "hold_out": test.height}
    labels = pl.concat([train, test]).select("imdb_id", "label")
    checked = rows.join(labels, on="imdb_id").with_columns(flagged=pl.col("probability") >= 0.35)
    assert (checked.get_column("prediction") == checked.get_column("flagged").cast(pl.Int16)).all()
    expected_cell = {(1, True): "TP", (1, False): "FN", (0, True): "FP", (0, False): "TN"}
    assert [expected_cell[(label, flag)] for label, flag in checked.select("label", "flagged").iter_rows()] == checked.get_column("cm_value").to_list()
    assert rows.get_column("model_sha256").unique().to_list() == [hashlib.sha256(paths.MODEL.read_bytes()).hexdigest()]


def test_a_publish_that_fails_midway_leaves_the_previous_rows(in_pipeline, atp_db: str) -> None:
    run_cli("publish")
    before = published(atp_db)
    rows = published(atp_db).drop("model_sha256").with_columns(model_sha256=pl.lit("0" * 64))
    table = database.identifier("atp.prediction")

    def duplicate_in_second_batch():
        yield rows.head(100)
        yield rows.slice(100, 100).with_columns(imdb_id=pl.lit(rows.item(0, "imdb_id")))

    with psycopg.connect(atp_db) as conn, pytest.raises(PipelineError, match=r"previous content is unchanged.*duplicate key"):
        database.replace_rows(conn, table, scoring.predictions_table(table), duplicate_in_second_batch())
    assert published(atp_db).equals(before)

    def connection_killed():
        yield rows.head(100)
        with psycopg.connect(atp_db, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                          "AND datname = current_database() AND backend_type = 'client backend'")
        yield rows.slice(100, 100)

    with psycopg.connect(atp_db) as conn, pytest.raises(PipelineError, match="previous content is unchanged"):
        database.replace_rows(conn, table, scoring.predictions_table(table), connection_killed())
    assert published(atp_db).equals(before)


def test_predict_from_the_database_scores_unlabeled_rows(in_pipeline, atp_db: str, tmp_path) -> None:
    raw = pl.read_parquet(paths.RAW).head(40)
    with psycopg.connect(atp_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE atp.candidates (LIKE atp.training INCLUDING ALL)")
        conn.execute("ALTER TABLE atp.candidates ALTER COLUMN label DROP NOT NULL")
    unlabeled = raw.with_columns(label=pl.when(pl.int_range(pl.len()) < 15).then(None).otherwise(pl.col("label")))
    insert_rows(atp_db, unlabeled, table="atp.candidates")

    out = tmp_path / "scored.parquet"
    run_cli("predict", "--from-db", "--table", "atp.candidates", "-o", str(out))
    scored = pl.read_parquet(out)
    assert scored.get_column("imdb_id").to_list() == sorted(raw.head(15).get_column("imdb_id").to_list())
    direct = scoring.Scorer.load(paths.FEATURES, paths.NORMALIZATION, paths.MODEL).scored(raw.head(15), 0.35).sort("imdb_id")
    assert scored.get_column("probability").to_list() == pytest.approx(direct.get_column("probability").to_list(), abs=1e-6)

    with psycopg.connect(atp_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE atp.candidates DROP COLUMN genre")
    with pytest.raises(PipelineError, match=r"table atp.candidates lacks required column\(s\) genre"):
        run_cli("predict", "--from-db", "--table", "atp.candidates", "-o", str(out))
