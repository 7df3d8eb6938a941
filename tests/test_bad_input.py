"""The bad-input matrix, through the real stage commands (`python -m stages.<stage>`).

Each case: exit 1, exactly one stderr line naming the key, row, column or table
(for params: the allowed values too), no traceback, and every output written
before the failure byte for byte as it was. Publish and the DVC-level cases
(a typo key through `dvc exp run -S`, the secret scan) are further down.
"""

import hashlib
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import psycopg
import pytest
import yaml

from reel_driver.config import paths
from tests.conftest import insert_rows, stage_env, user_env
from tests.test_extract import execute

OUTPUT_DIRS = ("data", "models", "metrics", "reports")


def snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every output file below ``root``."""
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for folder in OUTPUT_DIRS for f in sorted((root / folder).rglob("*")) if f.is_file()
    }


def run(root: Path, stage: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=root, capture_output=True, text=True,
                          env=stage_env(**(env or {})), timeout=300)


def refused(result: subprocess.CompletedProcess) -> str:
    """The one line a refused stage prints; asserts there is nothing else."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def set_params(root: Path, **changes: object) -> None:
    """``section__key=value`` or ``key=value`` (a top-level grid key) into root/params.yaml."""
    settings = yaml.safe_load((root / "params.yaml").read_text())
    for name, value in changes.items():
        section, _, key = name.partition("__")
        if key:
            settings[section][key] = value
        else:
            settings[section] = value
    (root / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))


@pytest.fixture
def stage_dir(pipeline: Path, tmp_path: Path) -> Path:
    """A copy of the small pipeline run (every output present), without its MLflow store."""
    root = tmp_path / "run"
    shutil.copytree(pipeline, root, ignore=shutil.ignore_patterns("mlflow.db", "mlruns"))
    return root


# ---- params: refused at stage start, before any output is touched -----------------------

PARAM_CASES = {
    "negative scale_pos_weight": (
        {"scale_pos_weight": -1},
        "error: params.yaml: scale_pos_weight = -1: Input should be greater than 0; "
        "allowed: one value or a list of distinct values, each a number > 0",
    ),
    "negative value in a grid list": (
        {"scale_pos_weight": [1, -5]}, "error: params.yaml: scale_pos_weight[1] = -5: Input should be greater than 0",
    ),
    "empty grid list": (
        {"max_depth": []},
        "error: params.yaml: max_depth = []: Value should have at least 1 item after validation, not 0; "
        "allowed: one value or a list of distinct values, each an integer >= 1 and <= 20",
    ),
    "typo key": (
        {"scale_pos_wieght": 9},
        "error: params.yaml: unknown key scale_pos_wieght; did you mean scale_pos_weight? allowed keys here: extract,",
    ),
    "typo key in a section": (
        {"evaluate__treshold": 0.3},
        "error: params.yaml: unknown key evaluate.treshold; did you mean threshold? allowed keys here: threshold, review_below",
    ),
    "wrong type": (
        {"max_depth": "deep"},
        "error: params.yaml: max_depth = 'deep': Input should be a valid integer; "
        "allowed: one value or a list of distinct values, each an integer >= 1 and <= 20",
    ),
    "unknown extract.source": (
        {"extract__source": "mysql"}, "error: params.yaml: extract.source = 'mysql': Input should be 'auto', 'sample' or 'postgres'",
    ),
    "evaluate.threshold at 1": (
        {"evaluate__threshold": 1.0},
        "error: params.yaml: evaluate.threshold = 1.0: Input should be less than 1; allowed: a number > 0 and < 1",
    ),
    "evaluate.threshold at 0": (
        {"evaluate__threshold": 0},
        "error: params.yaml: evaluate.threshold = 0: Input should be greater than 0; allowed: a number > 0 and < 1",
    ),
    "search.cv_folds below 2": (
        {"search__cv_folds": 1},
        "error: params.yaml: search.cv_folds = 1: Input should be greater than or equal to 2; allowed: an integer >= 2",
    ),
    "split.test_size at 1.5": (
        {"split__test_size": 1.5},
        "error: params.yaml: split.test_size = 1.5: Input should be less than 1; allowed: a number > 0 and < 1",
    ),
    "split.test_size at 0": (
        {"split__test_size": 0.0},
        "error: params.yaml: split.test_size = 0.0: Input should be greater than 0; allowed: a number > 0 and < 1",
    ),
    "review.recall_floor above 1": (
        {"review__recall_floor": 2},
        "error: params.yaml: review.recall_floor = 2: Input should be less than or equal to 1; "
        "allowed: a number >= 0 and <= 1",
    ),
}


# every stage validates the whole file at start: all cases on the quickest, two on the others
STAGE_CASES = [(case, "extract") for case in PARAM_CASES] + [
    (case, stage) for stage in ("prep", "train", "evaluate") for case in ("negative scale_pos_weight", "typo key")
]


@pytest.mark.parametrize(("case", "stage"), STAGE_CASES)
def test_bad_params_stop_the_stage_with_one_line(stage_dir: Path, case: str, stage: str) -> None:
    changes, line = PARAM_CASES[case]
    before = snapshot(stage_dir)
    set_params(stage_dir, **changes)
    assert refused(run(stage_dir, stage)).startswith(line)
    assert snapshot(stage_dir) == before


def test_more_folds_than_the_smaller_class_holds(stage_dir: Path) -> None:
    positives = pl.read_parquet(stage_dir / paths.PREPARED_TRAIN).get_column("label").sum()
    before = snapshot(stage_dir)
    set_params(stage_dir, search__cv_folds=positives + 1)
    line = refused(run(stage_dir, "train"))
    assert line == (f"error: search.cv_folds = {positives + 1}: the training rows hold only {positives} "
                    f"of the smaller class; allowed: 2 to {positives}")
    assert snapshot(stage_dir) == before


# ---- data: prep refuses a raw table it cannot learn from ------------------------------

def _raw(root: Path) -> pl.DataFrame:
    return pl.read_parquet(root / paths.RAW)


DATA_CASES = {
    "empty table": (lambda raw: raw.head(0), "error: prep: the raw table has no rows (is the source table empty?)"),
    "duplicate imdb_id": (
        lambda raw: pl.concat([raw, raw.slice(3, 1)]),
        "error: column imdb_id: {id3} appears 2 times (1 repeated ids); each movie must be one row",
    ),
    "no movies after filtering": (
        lambda raw: raw.with_columns(media_type=pl.lit("tv_show").cast(raw.schema["media_type"])),
        "error: prep: no training rows among {n}: {labeled} labeled, prep.media_types = ['movie'], "
        "prep.drop_anomalous = true, prep.include_unreviewed = false; the raw media types: tv_show",
    ),
    "a single class": (
        lambda raw: raw.with_columns(label=pl.lit("would_not_watch").cast(raw.schema["label"])),
        "error: column label: all {training} training rows are would_not_watch; the model needs both would_watch and would_not_watch",
    ),
    "no confirmed label": (
        lambda raw: raw.with_columns(reviewed=pl.lit(False)),
        "error: column reviewed: none of the {labeled} labeled rows is reviewed (TRUE), so no label was confirmed by a "
        "person; confirm labels in the review screens, or set prep.include_unreviewed: true to train on the {labeled} "
        "unconfirmed labels",
    ),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_stops_prep_with_one_line(stage_dir: Path, case: str) -> None:
    change, line = DATA_CASES[case]
    raw = _raw(stage_dir)
    (stage_dir / paths.RAW).unlink()  # a new file, not a write through DVC's cache link
    change(raw).write_parquet(stage_dir / paths.RAW)
    before = snapshot(stage_dir)
    labeled = raw.filter(pl.col("label").is_not_null())
    training = labeled.filter(pl.col("media_type") == "movie", ~pl.col("anomalous"), pl.col("reviewed")).height
    expected = line.format(id3=raw.item(3, "imdb_id"), n=raw.height, labeled=labeled.height, training=training)
    assert refused(run(stage_dir, "prep")) == expected
    assert snapshot(stage_dir) == before


def test_a_feature_column_entirely_null_is_a_warning_not_an_error(stage_dir: Path) -> None:
    raw = _raw(stage_dir)
    (stage_dir / paths.RAW).unlink()
    raw.with_columns(pl.lit(None, raw.schema["metascore"]).alias("metascore")).write_parquet(stage_dir / paths.RAW)
    result = run(stage_dir, "prep")
    assert result.returncode == 0, result.stderr
    assert "WARNING reel_driver.prep: column(s) metascore NULL in every training row" in result.stderr
    assert pl.read_parquet(stage_dir / paths.PREPARED_TRAIN).get_column("metascore_norm").is_null().all()


def test_arrays_with_null_elements_are_read_and_encoded(stage_dir: Path) -> None:
    raw = _raw(stage_dir)
    (stage_dir / paths.RAW).unlink()
    with_nulls = raw.with_columns(genre=pl.col("genre").list.concat(pl.lit([None], dtype=pl.List(pl.String))))
    with_nulls.write_parquet(stage_dir / paths.RAW)
    result = run(stage_dir, "prep")
    assert result.returncode == 0, result.stderr
    prepared = pl.read_parquet(stage_dir / paths.PREPARED_TRAIN)
    assert prepared.get_column("genre_drama").sum() > 0 and not any("null" in c for c in prepared.columns)


# ---- the model: a booster without its ensemble file is refused, not scored alone -------

@pytest.mark.parametrize("command", [["stages.evaluate"], ["reel_driver.cli", "predict", "data/raw/training.parquet",
                                                            "--out", "scored.parquet"]],
                         ids=["evaluate", "predict"])
def test_a_model_without_its_ensemble_file_is_refused(stage_dir: Path, command: list[str]) -> None:
    (stage_dir / paths.ENSEMBLE).unlink()
    before = snapshot(stage_dir)
    result = subprocess.run([sys.executable, "-m", *command], cwd=stage_dir, env=stage_env(), capture_output=True,
                            text=True, timeout=300)
    assert refused(result) == (f"error: {paths.ENSEMBLE} is missing: train writes it beside models/model.json "
                               "(an empty list when train.ensemble is); dvc checkout restores it, "
                               "dvc repro train rebuilds it")
    assert snapshot(stage_dir) == before
    assert not (stage_dir / "scored.parquet").exists()


# ---- the database: extract from a real PostgreSQL ------------------------------------

def test_a_table_whose_reviewed_column_holds_no_true_stops_prep(from_postgres: Path, atp_db: str) -> None:
    raw = _raw(from_postgres).head(200)
    insert_rows(atp_db, raw.with_columns(reviewed=pl.lit(False)))  # today's DDL, nothing confirmed yet
    assert run(from_postgres, "extract").returncode == 0
    before = snapshot(from_postgres)
    labeled = raw.filter(pl.col("label").is_not_null()).height
    assert refused(run(from_postgres, "prep")) == (
        f"error: column reviewed: none of the {labeled} labeled rows is reviewed (TRUE), so no label was confirmed "
        "by a person; confirm labels in the review screens, or set prep.include_unreviewed: true to train on the "
        f"{labeled} unconfirmed labels"
    )
    assert snapshot(from_postgres) == before


@pytest.fixture
def from_postgres(stage_dir: Path, atp_db: str) -> Path:
    set_params(stage_dir, extract__source="postgres")
    return stage_dir


def test_unknown_label_in_a_text_label_column(from_postgres: Path, atp_db: str) -> None:
    raw = _raw(from_postgres).head(20)
    execute(atp_db, "ALTER TABLE atp.training ALTER COLUMN label TYPE text")
    insert_rows(atp_db, raw.with_columns(label=pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("maybe"))
                                         .otherwise(pl.col("label").cast(pl.String))))
    before = snapshot(from_postgres)
    assert refused(run(from_postgres, "extract")) == (
        f"error: column label: unknown value 'maybe' (imdb_id {raw.item(7, 'imdb_id')}); "
        "allowed: would_watch, would_not_watch"
    )
    assert snapshot(from_postgres) == before


@pytest.mark.parametrize(
    ("statement", "table", "line"),
    [
        ("ALTER TABLE atp.training DROP COLUMN genre", "atp.training",
         "error: atp.training is missing required column(s) genre; found: imdb_id, tmdb_id, label,"),
        ("SELECT 1", "atp.trainig", 'error: table "atp"."trainig" does not exist'),
    ],
    ids=["missing required column", "missing table"],
)
def test_database_shape_errors(from_postgres: Path, atp_db: str, statement: str, table: str, line: str) -> None:
    execute(atp_db, statement)
    set_params(from_postgres, extract__table=table)
    before = snapshot(from_postgres)
    assert refused(run(from_postgres, "extract")).startswith(line)
    assert snapshot(from_postgres) == before


def test_a_table_without_the_optional_flag_columns_extracts(from_postgres: Path, atp_db: str) -> None:
    execute(atp_db, "ALTER TABLE atp.training DROP COLUMN human_labeled, DROP COLUMN anomalous, DROP COLUMN reviewed")
    insert_rows(atp_db, _raw(from_postgres).head(30).drop("human_labeled", "anomalous", "reviewed"))
    result = run(from_postgres, "extract")
    assert result.returncode == 0, result.stderr
    assert "anomalous" not in _raw(from_postgres).columns and _raw(from_postgres).height == 30


PASSWORD = "correct-horse-7f3a"


@pytest.fixture
def password_role(pg_server: str) -> str:
    """A role that must give its password (the session server trusts everyone else)."""
    with psycopg.connect(pg_server, autocommit=True) as conn:
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        rule = "local all reader scram-sha-256\n"
        if not hba.read_text().startswith(rule):
            hba.write_text(rule + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
        conn.execute(f"DROP ROLE IF EXISTS reader; CREATE ROLE reader LOGIN PASSWORD '{PASSWORD}'")
    return pg_server


@pytest.mark.parametrize("where", ["unreachable", "wrong password"])
def test_connection_failures_are_one_line_and_never_show_the_password(
    stage_dir: Path, password_role: str, where: str, tmp_path: Path
) -> None:
    from psycopg.conninfo import conninfo_to_dict

    host = conninfo_to_dict(password_role)["host"] if where == "wrong password" else f"{tmp_path}/nowhere"
    wrong = f"{PASSWORD}-but-wrong"
    dsn = f"host={host} dbname=postgres user=reader password={wrong} connect_timeout=3"
    set_params(stage_dir, extract__source="postgres")
    before = snapshot(stage_dir)
    result = run(stage_dir, "extract", env={"REEL_DRIVER_PG_DSN": dsn})
    line = refused(result)
    assert line.startswith(f"error: cannot connect to PostgreSQL at socket directory {host}, port ")
    assert ", database postgres, user reader: connection to server on socket" in line
    assert line.endswith("(set REEL_DRIVER_PG_DSN or the PG* variables)")
    if where == "wrong password":
        assert 'password authentication failed for user "reader"' in line
    assert wrong not in result.stdout + result.stderr
    assert snapshot(stage_dir) == before


def test_auto_says_why_it_tried_the_database(stage_dir: Path, tmp_path: Path) -> None:
    """A shell that names a database (here an unreachable one) makes extract.source auto read it:
    the one line says so, for a user who did not mean it."""
    set_params(stage_dir, extract__source="auto")
    before = snapshot(stage_dir)
    line = refused(run(stage_dir, "extract", env={"PGHOST": f"{tmp_path}/nowhere", "PGCONNECT_TIMEOUT": "3"}))
    assert line.startswith(f"error: cannot connect to PostgreSQL at socket directory {tmp_path}/nowhere, port ")
    assert line.endswith("(set REEL_DRIVER_PG_DSN or the PG* variables) "
                         "[extract.source auto, PGHOST is set; extract.source: sample reads the synthetic sample]")
    assert snapshot(stage_dir) == before


# ---- MLflow: a store that cannot be written is one warning; the outputs are written -----

def test_an_unwritable_mlflow_store_warns_and_keeps_the_outputs(stage_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    uri = f"sqlite:///{tmp_path}/a-file/mlflow.db"  # its directory cannot be made
    (stage_dir / paths.EVALUATE_METRICS).unlink()
    result = run(stage_dir, "evaluate", env={"MLFLOW_TRACKING_URI": uri})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == [
        f"WARNING reel_driver.tracking: MLflow store {uri} failed ([Errno 17] File exists: '{tmp_path}/a-file'): "
        "this evaluate run is not recorded; the stage's outputs are written"
    ]
    assert (stage_dir / paths.EVALUATE_METRICS).exists()


@pytest.mark.slow
def test_a_locked_mlflow_store_warns_and_keeps_the_outputs(stage_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "locked" / "mlflow.db"
    store.parent.mkdir()
    uri = f"sqlite:///{store}"
    created = run(stage_dir, "evaluate", env={"MLFLOW_TRACKING_URI": uri})  # the store exists, with its tables
    assert created.returncode == 0, created.stderr
    (stage_dir / paths.EVALUATE_METRICS).unlink()
    with sqlite3.connect(store, isolation_level=None) as lock:
        lock.execute("BEGIN EXCLUSIVE")  # another writer holds the database
        result = run(stage_dir, "evaluate", env={"MLFLOW_TRACKING_URI": uri})
        lock.execute("ROLLBACK")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "database is locked" in warnings[0] and "this evaluate run is not recorded" in warnings[0]
    assert (stage_dir / paths.EVALUATE_METRICS).exists()


# ---- through DVC: a typo key from `dvc exp run -S`, and no password anywhere ----------

@pytest.mark.slow
def test_dvc_refuses_a_typo_key_and_leaks_no_password(reproduced_copy: Path, tmp_path: Path) -> None:
    # a committed run with small params, edited as text (the file keeps its comments, as a user's does)
    repo_copy = reproduced_copy

    def run_in_repo(*args: str, extra: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=repo_copy, env=user_env(**(extra or {})), capture_output=True, text=True,
                              timeout=600)

    def dvc(*args: str, extra: dict | None = None) -> subprocess.CompletedProcess:
        return run_in_repo(sys.executable, "-m", "dvc", *args, extra=extra)

    before = snapshot(repo_copy)
    committed = (repo_copy / "params.yaml").read_bytes()

    def recover() -> None:
        """README's recovery: params.yaml from the last commit, whatever git's index says."""
        assert run_in_repo("sh", "-c", "git show HEAD:params.yaml > params.yaml").returncode == 0
        assert (repo_copy / "params.yaml").read_bytes() == committed

    # DVC (Hydra) refuses an unknown key on its own; with "+" it adds it, and the first stage refuses it
    plain = dvc("exp", "run", "-S", "scale_pos_wieght=9")
    assert plain.returncode != 0 and "Could not override 'scale_pos_wieght'" in plain.stderr
    typo = dvc("exp", "run", "-S", "+scale_pos_wieght=9")
    assert typo.returncode != 0
    assert "Traceback" not in typo.stdout + typo.stderr
    assert ("error: params.yaml: unknown key scale_pos_wieght; did you mean scale_pos_weight? allowed keys here:"
            in typo.stdout + typo.stderr)
    # extract refused before writing, and DVC left its output in place (persist): every output
    # is as it was; only params.yaml holds the experiment's value, and one command undoes it
    assert snapshot(repo_copy) == before
    recover()
    assert dvc("status").stdout.split() == ["extract:", "always", "changed"]
    # --temp runs in a copy: the workspace, params.yaml included, is not touched at all
    assert dvc("exp", "run", "--temp", "-S", "+scale_pos_wieght=9").returncode != 0
    assert run_in_repo("git", "status", "--porcelain", "--untracked-files=no").stdout == ""

    # an unreachable server with a password in the DSN
    password = f"s3cret-{secrets.token_hex(8)}"  # made here, so that no file holds it beforehand
    dsn = f"host={tmp_path}/nowhere dbname=media user=reader password={password} connect_timeout=2"
    unreachable = dvc("exp", "run", "-S", "extract.source=postgres", extra={"REEL_DRIVER_PG_DSN": dsn})
    assert unreachable.returncode != 0
    assert (f"error: cannot connect to PostgreSQL at socket directory {tmp_path}/nowhere, port 5432, database media, "
            "user reader: connection to server on socket") in unreachable.stderr
    assert password not in unreachable.stdout + unreachable.stderr  # the only output made with it
    assert snapshot(repo_copy) == before
    # "source: postgres" has the length of "source: sample" plus its padding: the file keeps its size,
    # DVC has refreshed git's index, and git status may call the tree clean; the recovery still works
    assert b"source: postgres        #" in (repo_copy / "params.yaml").read_bytes()
    recover()
    assert dvc("status").stdout.split() == ["extract:", "always", "changed"]

    # the secret scan: every file in the repository, dvc.lock, .dvc/tmp, the MLflow store included
    assert (repo_copy / "mlflow.db").exists()
    leaks = [str(f) for f in repo_copy.rglob("*") if f.is_file() and password.encode() in f.read_bytes()]
    assert leaks == []
