"""reel-driver: offline plots, publish and predict (against a real PostgreSQL)."""

import hashlib
import re
import signal
import subprocess
import sys
import threading
import time

import polars as pl
import psycopg
import pytest

from stages import cli, database, params, paths, scoring
from stages.errors import PipelineError
from tests.conftest import REPO, insert_rows

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


GATE = params.ReviewParams(recall_drop_tolerance=0.05, recall_floor=0.6)


@pytest.mark.parametrize(
    ("recall", "verdict", "failure"),
    [
        ({"old": 0.80, "new": 0.78}, "hold-out recall 0.7800 (main: 0.8000)", None),
        ({"old": 0.80, "new": 0.90}, "**pass**", None),
        ({"new": 0.70}, "hold-out recall 0.7000 (main has none)", None),
        ({"old": 0.80, "new": 0.70}, "**fail**",
         "review: hold-out recall fell 0.1000 below main's 0.8000 (review.recall_drop_tolerance 0.05)"),
        ({"old": 0.62, "new": 0.59}, "**fail**", "review: hold-out recall 0.5900 is below review.recall_floor 0.6"),
        ({"old": 0.80}, "no hold-out recall", "review: no recall in metrics/evaluate.json: run dvc repro first"),
    ],
)
def test_recall_gate(recall: dict, verdict: str, failure: str | None) -> None:
    line, failed = cli.recall_gate({"metrics/evaluate.json": {"recall": recall}}, GATE, "main")
    assert verdict in line
    assert failed == failure


def test_review_images_are_png_files_named_after_the_plots(tmp_path) -> None:
    plots = {plot_id: [{"type": "vega", "content": SPEC}]
             for plot_id in ("Recall by threshold (hold-out)", "metrics/a/roc.json", "metrics/b/roc.json")}
    written = cli.write_pngs(plots, tmp_path)
    assert [path.name for _, path in written] == ["recall_by_threshold_hold_out.png", "roc.png", "roc_1.png"]
    assert all(path.read_bytes().startswith(b"\x89PNG") for _, path in written)


# ---- publish and predict against a real PostgreSQL ---------------------------------------

PREDICTION_DDL = REPO / "tests" / "data" / "atp_prediction.sql"


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


def test_publish_fills_the_owners_table_under_its_review_view(in_pipeline, atp_db: str) -> None:
    # the owner's atp.prediction and the atp.movies view on it, as production has them
    insert_rows(atp_db, pl.read_parquet(paths.RAW))
    with psycopg.connect(atp_db, autocommit=True) as conn:
        conn.execute(PREDICTION_DDL.read_text())
    run_cli("publish")
    rows = published(atp_db)
    assert rows.get_column("model_sha256").unique().to_list() == [hashlib.sha256(paths.MODEL.read_bytes()).hexdigest()]
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
from stages import database, scoring

table = database.identifier("atp.prediction")
rows = pl.read_parquet(sys.argv[1])

def batches():
    yield rows.head(100)
    print("mid-write", flush=True)
    time.sleep(120)
    yield rows.slice(100)

with psycopg.connect(sys.argv[2]) as conn:
    database.replace_rows(conn, table, scoring.predictions_table(table), batches())
"""


def test_a_publisher_killed_mid_write_leaves_the_previous_rows(in_pipeline, atp_db: str, tmp_path) -> None:
    run_cli("publish")
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
    run_cli("publish")  # the lock died with the process: the next publish goes through
    assert published(atp_db).equals(before)


def _lock_waiters(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND datname = current_database()").fetchone()[0]


def test_two_publishers_at_once_one_wins_whole(in_pipeline, atp_db: str) -> None:
    run_cli("publish")
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

    def publish(batches) -> None:
        try:
            with psycopg.connect(atp_db) as conn:
                database.replace_rows(conn, table, scoring.predictions_table(table), batches)
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            failures.append(error)

    one = threading.Thread(target=publish, args=(first_batches(),))
    one.start()
    assert first_mid_write.wait(timeout=30)
    two = threading.Thread(target=publish, args=(iter([second]),))
    two.start()
    one.join(timeout=60)
    two.join(timeout=60)

    assert failures == []
    final = published(atp_db)
    # the second waited for the first to commit, then replaced its rows whole: no mix
    assert final.get_column("model_sha256").unique().to_list() == ["2" * 64]
    assert final.get_column("imdb_id").to_list() == sorted(second.get_column("imdb_id").to_list())


def test_predict_from_the_database_scores_the_backlog(in_pipeline, atp_db: str, tmp_path) -> None:
    raw = pl.read_parquet(paths.RAW)
    insert_rows(atp_db, raw)
    backlog = raw.filter(pl.col("media_type") == "movie", pl.col("label").is_null() | ~pl.col("reviewed"))
    assert backlog.get_column("label").null_count() > 0 and backlog.get_column("label").drop_nulls().len() > 0

    out = tmp_path / "scored.parquet"
    run_cli("predict", "--from-db", "-o", str(out))
    scored = pl.read_parquet(out)
    assert scored.get_column("imdb_id").to_list() == backlog.get_column("imdb_id").to_list()
    assert scored.get_column("label").to_list() == backlog.get_column("label").cast(pl.String).to_list()
    assert scored.get_column("kind").cast(pl.String).to_list() == [
        "unlabeled" if label is None else "unreviewed" for label in backlog.get_column("label")
    ]
    direct = scoring.Scorer.load(paths.FEATURES, paths.NORMALIZATION, paths.MODEL).scored(backlog, 0.35)
    assert scored.get_column("probability").to_list() == pytest.approx(direct.get_column("probability").to_list(), abs=1e-6)

    run_cli("predict", "--from-db", "--all", "-o", str(out))
    assert pl.read_parquet(out).height == raw.height

    with psycopg.connect(atp_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE atp.candidates AS SELECT * FROM atp.training")
        conn.execute("ALTER TABLE atp.candidates DROP COLUMN genre")
    with pytest.raises(PipelineError, match=r"table atp.candidates lacks required column\(s\) genre"):
        run_cli("predict", "--from-db", "--table", "atp.candidates", "-o", str(out))
