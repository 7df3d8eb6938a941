"""reel-driver publish against a real PostgreSQL: whole replacements, the owner's table and view."""

import signal
import subprocess
import sys
import threading
import time

import polars as pl
import psycopg
import pytest

from reel_driver.commands import publish
from reel_driver.config import paths
from reel_driver.config.errors import PipelineError
from reel_driver.data import database
from tests.conftest import REPO, insert_rows, model_identity

PREDICTION_DDL = REPO / "tests" / "data" / "atp_prediction.sql"


def published(dsn: str) -> pl.DataFrame:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT imdb_id, prediction, probability, cm_value, scored_by, model_sha256 FROM atp.prediction ORDER BY imdb_id"
        ).fetchall()
    return pl.DataFrame(rows, schema=["imdb_id", "prediction", "probability", "cm_value", "scored_by", "model_sha256"], orient="row")


def test_publish_twice_gives_one_row_per_labeled_movie(in_pipeline, atp_db: str) -> None:
    publish.publish(None)
    first = published(atp_db)
    publish.publish(None)
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
    assert rows.get_column("model_sha256").unique().to_list() == [model_identity()]


def test_a_publish_that_fails_midway_leaves_the_previous_rows(in_pipeline, atp_db: str) -> None:
    publish.publish(None)
    before = published(atp_db)
    rows = published(atp_db).drop("model_sha256").with_columns(model_sha256=pl.lit("0" * 64))
    table = database.identifier("atp.prediction")

    def duplicate_in_second_batch():
        yield rows.head(100)
        yield rows.slice(100, 100).with_columns(imdb_id=pl.lit(rows.item(0, "imdb_id")))

    with psycopg.connect(atp_db) as conn, pytest.raises(PipelineError, match=r"previous content is unchanged.*duplicate key"):
        database.replace_rows(conn, table, publish.predictions_table(table), duplicate_in_second_batch())
    assert published(atp_db).equals(before)

    def connection_killed():
        yield rows.head(100)
        with psycopg.connect(atp_db, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                          "AND datname = current_database() AND backend_type = 'client backend'")
        yield rows.slice(100, 100)

    with psycopg.connect(atp_db) as conn, pytest.raises(PipelineError, match="previous content is unchanged"):
        database.replace_rows(conn, table, publish.predictions_table(table), connection_killed())
    assert published(atp_db).equals(before)


def test_publish_fills_the_owners_table_under_its_review_view(in_pipeline, atp_db: str) -> None:
    # the owner's atp.prediction and the atp.movies view on it, as production has them
    insert_rows(atp_db, pl.read_parquet(paths.RAW))
    with psycopg.connect(atp_db, autocommit=True) as conn:
        conn.execute(PREDICTION_DDL.read_text())
    publish.publish(None)
    rows = published(atp_db)
    assert rows.get_column("model_sha256").unique().to_list() == [model_identity()]
    with psycopg.connect(atp_db) as conn:
        shown = conn.execute("SELECT imdb_id, label, reviewed, probability, cm_value FROM atp.movies ORDER BY imdb_id").fetchall()
        kinds = conn.execute("SELECT data_type FROM information_schema.columns WHERE table_schema = 'atp' "
                             "AND table_name = 'prediction' AND column_name = 'probability'").fetchone()
    # the review screens list every published movie, each a training row: labeled and reviewed
    assert len(shown) == rows.height and [row[0] for row in shown] == rows.get_column("imdb_id").to_list()
    assert all(label is not None and reviewed for _, label, reviewed, _, _ in shown)
    assert kinds == ("numeric",)  # the owner's DECIMAL column kept its type
    assert [float(row[3]) for row in shown] == [float(p) for p in rows.get_column("probability")]


# A publisher that stops after its first batch and waits to be killed.
KILLED_PUBLISHER = """
import sys, time
import polars as pl, psycopg
from reel_driver.commands import publish
from reel_driver.data import database

table = database.identifier("atp.prediction")
rows = pl.read_parquet(sys.argv[1])

def batches():
    yield rows.head(100)
    print("mid-write", flush=True)
    time.sleep(120)
    yield rows.slice(100)

with psycopg.connect(sys.argv[2]) as conn:
    database.replace_rows(conn, table, publish.predictions_table(table), batches())
"""


def test_a_publisher_killed_mid_write_leaves_the_previous_rows(in_pipeline, atp_db: str, tmp_path) -> None:
    publish.publish(None)
    before = published(atp_db)
    replacement = tmp_path / "rows.parquet"
    before.drop("model_sha256").with_columns(model_sha256=pl.lit("0" * 64)).write_parquet(replacement)

    publisher = subprocess.Popen([sys.executable, "-c", KILLED_PUBLISHER, str(replacement), atp_db],
                                 cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert publisher.stdout.readline().strip() == "mid-write"
        with psycopg.connect(atp_db) as reader:  # readers are not locked out meanwhile
            reader.execute("SET lock_timeout = '2s'")
            assert reader.execute("SELECT count(*) FROM atp.prediction").fetchone()[0] == before.height
    finally:
        publisher.send_signal(signal.SIGKILL)
        publisher.wait(timeout=30)
    assert published(atp_db).equals(before)
    publish.publish(None)  # the lock died with the process: the next publish goes through
    assert published(atp_db).equals(before)


def _lock_waiters(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND datname = current_database()").fetchone()[0]


def test_two_publishers_at_once_one_wins_whole(in_pipeline, atp_db: str) -> None:
    publish.publish(None)
    rows = published(atp_db).drop("model_sha256")
    first = rows.head(200).with_columns(model_sha256=pl.lit("1" * 64))
    second = rows.slice(200, 200).with_columns(model_sha256=pl.lit("2" * 64))  # other movies
    table = database.identifier("atp.prediction")
    first_mid_write, failures = threading.Event(), []

    def first_batches():
        yield first.head(100)
        first_mid_write.set()
        deadline = time.monotonic() + 20  # hold the transaction open until the second one waits
        while _lock_waiters(atp_db) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield first.slice(100)

    def replace(batches) -> None:
        try:
            with psycopg.connect(atp_db) as conn:
                database.replace_rows(conn, table, publish.predictions_table(table), batches)
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            failures.append(error)

    one = threading.Thread(target=replace, args=(first_batches(),))
    one.start()
    assert first_mid_write.wait(timeout=30)
    two = threading.Thread(target=replace, args=(iter([second]),))
    two.start()
    one.join(timeout=60)
    two.join(timeout=60)

    assert failures == []
    final = published(atp_db)
    # the second waited for the first to commit, then replaced its rows whole: no mix
    assert final.get_column("model_sha256").unique().to_list() == ["2" * 64]
    assert final.get_column("imdb_id").to_list() == sorted(second.get_column("imdb_id").to_list())


def test_labeled_rows_get_a_confusion_cell_at_the_threshold() -> None:
    out_of_fold = pl.DataFrame({"imdb_id": ["tt3", "tt1"], "label": [1, 0], "probability": [0.2, 0.9]})
    hold_out = pl.DataFrame({"imdb_id": ["tt2"], "label": [1], "probability": [0.35]})
    rows = publish.labeled(out_of_fold, hold_out, 0.35)
    assert rows.to_dicts() == [
        {"imdb_id": "tt1", "prediction": 1, "probability": 0.9, "cm_value": "FP", "scored_by": "out_of_fold"},
        {"imdb_id": "tt2", "prediction": 1, "probability": 0.35, "cm_value": "TP", "scored_by": "hold_out"},
        {"imdb_id": "tt3", "prediction": 0, "probability": 0.2, "cm_value": "FN", "scored_by": "out_of_fold"},
    ]
