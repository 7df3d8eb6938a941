"""The owner's cluster on loopback: the real export in PostgreSQL (realdb.py --today), `mlflow server`
with its store in PostgreSQL and its artifacts on an S3 API (moto, as MinIO answers it), and the DVC
remote in a bucket there. The weekly run, promote and serve, a second run hot-swapped under load,
each server stopped once on the way, and a fresh clone that reviews and pulls from the remote.
Nothing reel-driver writes holds a key."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import psycopg
import pytest

from reel_driver.config import paths
from reel_driver.tracking import registry
from tests.conftest import (
    GIT_AND_PYTHON,
    ISOLATED,
    REPO,
    S3_KEYS,
    S3Server,
    TrackingServer,
    _tracked_copy,
    free_port,
    small_params,
)
from tests.test_pipeline import _outputs
from tests.test_scoring import hold_out_raw
from tests.test_serve import MediaPipeline, items_of, scraped, serving, wait_for

REALDB = REPO.parent / "shared" / "tools" / "realdb.py"
# what the owner's pods hold in their Secret, each looked for in everything reel-driver writes
# (drawn at each run, as S3_KEYS: this file is copied into the test's repository)
PG_PASSWORD = secrets.token_urlsafe(16)  # the table's server trusts loopback: the password is carried, never checked
TRACKING_PASSWORD = secrets.token_urlsafe(16)
SECRETS = [S3_KEYS["AWS_ACCESS_KEY_ID"], S3_KEYS["AWS_SECRET_ACCESS_KEY"], PG_PASSWORD, TRACKING_PASSWORD]


@pytest.fixture
def real_table(tmp_path: Path):
    """realdb.py --today: the export in the production schema, with the labels a model wrote and the
    new arrivals no one labeled yet; a second database on the same server holds MLflow's store."""
    if not REALDB.exists():
        pytest.skip(f"{REALDB} is not here (a clone without ../shared)")
    folder = tmp_path / "realdb"
    started = subprocess.run([sys.executable, str(REALDB), str(folder), "--today"], capture_output=True, text=True,
                             timeout=180)
    try:
        assert started.returncode == 0, started.stderr
        dsn = next(line[4:] for line in started.stdout.splitlines() if line.startswith("DSN="))
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute("CREATE DATABASE mlflow")
        yield dsn
    finally:
        if (pid_file := folder / "postmaster.pid").exists():
            os.kill(int(pid_file.read_text().split()[0]), 15)


def _with_password(dsn: str, password: str) -> str:
    return dsn.replace("postgres:@", f"postgres:{password}@", 1)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_weekly_run_on_the_owners_servers(real_table: str, tmp_path: Path) -> None:
    s3 = S3Server(free_port(), tmp_path / "s3.log", tmp_path / "s3-recording.jsonl")
    s3.start()
    s3.create_buckets("mlflow", "dvc")
    store = real_table.replace("postgresql://", "postgresql+psycopg://").replace("/postgres?", "/mlflow?")
    tracking = TrackingServer(store, free_port(), tmp_path / "mlflow.log", artifacts="s3://mlflow/artifacts",
                              env={"MLFLOW_S3_ENDPOINT_URL": s3.uri, **S3_KEYS})
    tracking.start()
    repo = _tracked_copy(tmp_path / "repo")
    small_params(repo, ensemble=False)
    # the training Job's environment: the Secret's keys and DSN, MLflow's own variables
    job = {**{key: value for key, value in os.environ.items() if key not in ISOLATED},
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **GIT_AND_PYTHON, **S3_KEYS,
           "REEL_DRIVER_PG_DSN": _with_password(real_table, PG_PASSWORD), "MLFLOW_TRACKING_URI": tracking.uri,
           "MLFLOW_TRACKING_USERNAME": "reel-driver", "MLFLOW_TRACKING_PASSWORD": TRACKING_PASSWORD,
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}  # no MLFLOW_S3_ENDPOINT_URL: artifacts go through the server
    printed: list[str] = []  # everything every command printed, scanned for the secrets at the end

    def run(*args: str, cwd: Path = repo, env: dict = job, ok: bool | None = True) -> subprocess.CompletedProcess:
        """``args`` run; ``ok`` says whether it must succeed or fail (None: either)."""
        result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        printed.append(result.stdout + result.stderr)
        assert ok is None or (result.returncode == 0) == ok, f"{args}: {result.stdout}{result.stderr}"
        return result

    dvc = lambda *args, **where: run(sys.executable, "-m", "dvc", *args, **where)  # noqa: E731
    cli = lambda *args, **where: run(sys.executable, "-m", "reel_driver.cli", *args, **where)  # noqa: E731
    client = mlflow.MlflowClient(tracking.uri)
    calls = None
    try:
        run("git", "checkout", "-q", "-b", "main")
        dvc("remote", "add", "--default", "minio", "s3://dvc/reel-driver")
        dvc("remote", "modify", "minio", "endpointurl", s3.uri)
        run("git", "add", "-A")
        run("git", "commit", "-qm", "DVC remote on MinIO")

        # ---- the weekly run: the table read, the runs and the model on the servers ----
        first = dvc("repro")
        assert "rows from PostgreSQL table atp.training (extract.source auto, REEL_DRIVER_PG_DSN is set)" in first.stderr
        assert not (repo / "mlflow.db").exists() and not (repo / "mlruns").exists()
        runs = client.search_runs([client.get_experiment_by_name("reel-driver").experiment_id])
        assert sorted(run_.data.tags["stage"] for run_ in runs) == ["evaluate", "train"]
        assert {run_.info.artifact_uri.split(":")[0] for run_ in runs} == {"mlflow-artifacts"}  # through the server
        artifacts = s3.objects("mlflow")
        assert any(key.endswith("/cv_results.parquet") for key in artifacts), sorted(artifacts)
        assert any(key.endswith("/MLmodel") for key in artifacts)
        version_1 = client.get_model_version(registry.REGISTERED_MODEL, "1")
        assert version_1.tags[registry.MODEL_SHA256] == runs[0].data.tags["model_sha256"]
        assert "version 1 is now champion" in cli("promote", "--force", "the owner's first run").stdout
        assert client.get_model_version_by_alias(registry.REGISTERED_MODEL, registry.CHAMPION).version == "1"

        # ---- serve loads the champion from the server, with evaluate's probabilities ----
        (tmp_path / "serve").mkdir()
        # the serve pod holds no S3 key: the model comes through the server's artifact proxy
        with serving(repo, tmp_path / "serve", tracking.uri, env={"MLFLOW_TRACKING_USERNAME": "reel-driver",
                                                                 "MLFLOW_TRACKING_PASSWORD": TRACKING_PASSWORD}) as server:
            # a new connection for each call of the test's own: the server closes one idle for 5 s
            health = lambda: server.client().call("GET", "/reel-driver/health")  # noqa: E731
            wait_for(lambda: health().status == 200, 90, "the champion was not loaded")
            hold_out = hold_out_raw(repo)
            assert _parity(server.client(), hold_out, repo) <= 1e-6

            calls = MediaPipeline(server, items_of(hold_out.head(20)))
            calls.start()

            # ---- MinIO away during dvc push: DVC's own error; the push again completes ----
            run("git", "add", "-A")
            run("git", "commit", "-qm", "the weekly run")
            s3.stop()
            refused = dvc("push", ok=False, env={**job, "AWS_MAX_ATTEMPTS": "1"})  # botocore's retries took 10 s
            assert "ERROR" in refused.stderr and "Traceback" not in refused.stderr
            s3.start()
            dvc("push")
            assert "Cache and remote 'minio' are in sync." in dvc("status", "--cloud").stdout

            # ---- the registry away during an experiment: one line naming it, nothing lost; then recorded ----
            lock = (repo / "dvc.lock").read_text()
            tracking.stop()
            failed = dvc("exp", "run", "-S", "scale_pos_weight=9", ok=False)
            lines = [line for line in failed.stderr.splitlines() if line.startswith("error: MLflow")]
            assert lines == [f"error: MLflow: the tracking server {tracking.uri} does not answer ([Errno 111] "
                             "Connection refused): nothing is trained, as the run and its model would be recorded "
                             "there; run dvc repro again once it answers"], failed.stderr
            assert (repo / "dvc.lock").read_text() == lock
            assert "prep:" not in dvc("status").stdout  # what ran before train stays as it was
            tracking.start()
            dvc("exp", "run", "-S", "scale_pos_weight=9")
            version_2 = client.get_model_version(registry.REGISTERED_MODEL, "2")
            assert client.get_run(version_2.run_id).data.tags["dvc_exp_name"]

            # ---- MinIO away while the new champion is promoted: version 1 answers until it is back ----
            s3.stop()
            assert "is now champion" in cli("promote", "--force", "the owner's second run").stdout
            wait_for(lambda: scraped(server)[("reel_driver_model_load_failures_total", ())] >= 2, 60,
                     "no failed load was counted")
            assert health().json["model"]["version"] == "1"
            s3.start()
            wait_for(lambda: health().json["model"]["version"] == "2", 90,
                     "the new champion was not loaded once MinIO was back")
            assert _parity(server.client(), hold_out, repo) <= 1e-6
            metrics_text = server.client().call("GET", "/metrics").text
            calls.stop()
            assert calls.failures == [] and calls.served == {"1", "2"}, (calls.failures, calls.served)
        serve_log = (tmp_path / "serve" / "serve.log").read_text()
        assert "did not load" in serve_log and serve_log.count("did not load") == 1, serve_log

        run("git", "checkout", "-q", "-b", "scale-pos-weight-9")
        run("git", "add", "-A")
        run("git", "commit", "-qm", "scale_pos_weight 9")
        dvc("push")
        outputs = _outputs(repo)

        # ---- a fresh clone: the review reads main's rows from MinIO, dvc pull restores every byte ----
        clone = tmp_path / "clone"
        run("git", "clone", "-q", "-b", "scale-pos-weight-9", str(repo), str(clone))
        reviewer = {key: value for key, value in job.items() if key not in (*S3_KEYS, "REEL_DRIVER_PG_DSN")}
        dvc("remote", "modify", "--local", "minio", "access_key_id", S3_KEYS["AWS_ACCESS_KEY_ID"], cwd=clone,
            env=reviewer)
        dvc("remote", "modify", "--local", "minio", "secret_access_key", S3_KEYS["AWS_SECRET_ACCESS_KEY"], cwd=clone,
            env=reviewer)
        review = cli("review", "main", cwd=clone, env=reviewer, ok=None)
        # main's training rows and hold-out predictions, read from MinIO: the same table, other weights
        data = review.stdout.split("## Data against main\n\n")[1].split("\n## ")[0]
        training_rows = sum(pl.read_parquet(repo / path).height for path in (paths.PREPARED_TRAIN, paths.PREPARED_TEST))
        assert data.startswith(f"Training rows: {training_rows} (main: {training_rows}); 0 added, 0 removed.\n\n"
                               "0 labels changed"), review.stdout
        hold_out_rows = pl.read_parquet(repo / paths.PREDICTIONS).height
        assert f"Both models on the {hold_out_rows} movies both held out" in data, data
        dvc("pull", cwd=clone, env=reviewer)
        assert _outputs(clone) == outputs

        # ---- no key anywhere reel-driver wrote ----
        written = [*printed, serve_log, metrics_text, (repo / "dvc.lock").read_text(),
                   run("git", "log", "-p", "--all").stdout,
                   *(path.read_text(errors="replace") for path in repo.rglob("*")
                     if path.is_file() and ".git" not in path.parts and path.name != "config.local"
                     and "cache" not in path.parts),
                   *(body.decode(errors="replace") for body in s3.objects("mlflow").values())]
        for run_ in client.search_runs([client.get_experiment_by_name("reel-driver").experiment_id]):
            written += [json.dumps(run_.data.params), json.dumps(run_.data.tags)]
        written += [json.dumps(version.tags) for version in client.search_model_versions()]
        for secret in SECRETS:
            assert not [text for text in written if secret in text], secret
    finally:
        if calls:
            calls.stop()
        tracking.stop()
        s3.stop()


def _parity(api, hold_out: pl.DataFrame, repo: Path) -> float:
    """The largest gap between what the API answers for the hold-out rows and evaluate's probabilities."""
    answer = api.call("POST", "/reel-driver/api/predict_batch", {"items": items_of(hold_out)})
    assert answer.status == 200, answer.text
    served = pl.DataFrame(answer.json["results"]).select("imdb_id", served="probability")
    expected = pl.read_parquet(repo / paths.PREDICTIONS).join(served, on="imdb_id")
    assert expected.height == hold_out.height
    return float(np.abs(expected["probability"] - expected["served"]).max())
