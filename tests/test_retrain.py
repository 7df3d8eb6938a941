"""`reel-driver retrain`, the weekly job, as the scheduler starts it: a git remote holding main's
committed run, a DVC remote with its data, a real `mlflow server` and the owner's table in
PostgreSQL. Each outcome's exit code, and what it leaves on every one of them."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import psycopg
import pytest

from reel_driver.commands import retrain
from reel_driver.data import sample
from reel_driver.tracking import registry
from tests.conftest import GIT_AND_PYTHON, ISOLATED, TrackingServer, _tracked_copy, free_port, insert_rows, small_params

PREDICTIONS = "atp.prediction"


class Owner:
    """The owner's side: the remotes, the server, the table, and a job started the way the scheduler does."""

    def __init__(self, tmp_path: Path, dsn: str, tracking: TrackingServer) -> None:
        self.tmp_path, self.dsn, self.tracking = tmp_path, dsn, tracking
        self.origin = tmp_path / "origin.git"
        self.client = mlflow.MlflowClient(tracking.uri)
        self.env = {**{key: value for key, value in os.environ.items() if key not in ISOLATED},
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **GIT_AND_PYTHON,
                    "REEL_DRIVER_PG_DSN": dsn, "MLFLOW_TRACKING_URI": tracking.uri,
                    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", retrain.GIT_URL: self.origin.as_uri()}

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        done = subprocess.run(args, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        return done

    def job(self) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "reel_driver.cli", "retrain"], cwd=self.tmp_path, env=self.env,
                              capture_output=True, text=True, timeout=600)

    def branches(self) -> list[str]:
        listed = self.run("git", "branch", "--format=%(refname:short)", cwd=self.origin).stdout
        return sorted(listed.split())

    def champion(self) -> str:
        return self.client.get_model_version_by_alias(registry.REGISTERED_MODEL, registry.CHAMPION).version

    def published(self) -> tuple[int, set[str]]:
        """atp.prediction's rows and the models that wrote them."""
        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute(f"SELECT model_sha256 FROM {PREDICTIONS}").fetchall()
        return len(rows), {sha for (sha,) in rows}

    def published_ids(self, scored_by: str, label: str | None = None, count: int = 1) -> list[str]:
        """Movies of atp.prediction scored ``out_of_fold`` (training rows) or ``hold_out``, lowest
        probability first, with ``label`` in atp.training."""
        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute(f"SELECT p.imdb_id FROM {PREDICTIONS} p JOIN atp.training t USING (imdb_id) "
                                "WHERE p.scored_by = %s AND (%s::text IS NULL OR t.label::text = %s) "
                                "ORDER BY p.probability, p.imdb_id LIMIT %s", [scored_by, label, label, count])
            return [imdb_id for (imdb_id,) in rows.fetchall()]

    def relabel(self, imdb_ids: list[str]) -> None:
        """Labels a person flipped in the review screens."""
        with psycopg.connect(self.dsn) as conn:
            conn.execute("UPDATE atp.training SET label = CASE WHEN label = 'would_watch' THEN 'would_not_watch' "
                         "ELSE 'would_watch' END::atp.label_type, human_labeled = TRUE WHERE imdb_id = ANY(%s)",
                         [imdb_ids])


def _set_gate(repo: Path, setting: str, to: str) -> None:
    """A review.* line of params.yaml changed as text (its comment stays, as in a user's edit)."""
    text = (repo / "params.yaml").read_text()
    assert f"  {setting} " in text, setting
    (repo / "params.yaml").write_text(text.replace(f"  {setting} ", f"  {to} ", 1))


def _main_with_its_run(owner: Owner) -> None:
    """main as the owner keeps it: a run on the table committed, its data pushed, version 1 champion
    with its predictions published; the gate lets any recall pass (review.* below)."""
    repo = _tracked_copy(owner.tmp_path / "main")
    small_params(repo, ensemble=False)
    _set_gate(repo, "recall_drop_tolerance: 0.05", "recall_drop_tolerance: 1.0")
    _set_gate(repo, "recall_floor: 0.6", "recall_floor: 0.0")
    run = lambda *args: owner.run(*args, cwd=repo)  # noqa: E731
    run("git", "checkout", "-q", "-b", "main")
    run(sys.executable, "-m", "dvc", "remote", "add", "--default", "store", str(owner.tmp_path / "dvc-remote"))
    run(sys.executable, "-m", "dvc", "repro")
    run(sys.executable, "-m", "reel_driver.cli", "promote")
    run(sys.executable, "-m", "reel_driver.cli", "publish")
    run(sys.executable, "-m", "dvc", "push")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "main's run on the table")
    run("git", "clone", "-q", "--bare", str(repo), str(owner.origin))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_weekly_job(atp_db: str, tmp_path: Path) -> None:
    insert_rows(atp_db, sample.generate(1200, 7))
    tracking = TrackingServer(f"sqlite:///{tmp_path / 'mlflow.db'}", free_port(), tmp_path / "mlflow.log",
                              artifacts=tmp_path / "artifacts")
    tracking.start()
    try:
        owner = Owner(tmp_path, atp_db, tracking)
        _main_with_its_run(owner)
        published = owner.published()

        # ---- new arrivals only (no label yet): the prepared files are the same, nothing retrains ----
        with psycopg.connect(atp_db) as conn:
            conn.execute("INSERT INTO atp.training (imdb_id, media_type, media_title, release_year) "
                         "VALUES ('tt9900001', 'movie', 'A new arrival', 2026)")
        job = owner.job()
        assert job.returncode == retrain.NOTHING_TO_RETRAIN, job.stderr
        assert "nothing to retrain" in job.stderr
        assert owner.branches() == ["main"] and owner.champion() == "1" and owner.published() == published
        remote = sorted(path.name for path in (tmp_path / "dvc-remote").rglob("*"))

        # ---- a second job while one holds the lock: it does nothing ----
        owner.relabel(owner.published_ids("out_of_fold", "would_not_watch"))  # a training row a person relabeled
        with psycopg.connect(atp_db, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(hashtext(%s))", [retrain.LOCK])
            job = owner.job()
        assert job.returncode == retrain.FAILED
        assert "error: another reel-driver retrain holds its lock" in job.stderr
        assert owner.branches() == ["main"] and owner.champion() == "1" and owner.published() == published

        # ---- the tracking server away: the job fails, and every store is as it was ----
        tracking.stop()
        job = owner.job()
        assert job.returncode == retrain.FAILED
        assert f"error: MLflow: the tracking server {tracking.uri} does not answer" in job.stderr
        tracking.start()
        assert owner.branches() == ["main"] and owner.champion() == "1" and owner.published() == published
        assert sorted(path.name for path in (tmp_path / "dvc-remote").rglob("*")) == remote

        # ---- atp.prediction refuses the commit (after the alias moved): the champion moves back, the branch goes ----
        with psycopg.connect(atp_db) as conn:
            conn.execute("CREATE FUNCTION atp.refuse() RETURNS trigger LANGUAGE plpgsql AS "
                         "$$ BEGIN RAISE EXCEPTION 'no space left on device'; END $$")
            conn.execute("CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON atp.prediction DEFERRABLE INITIALLY "
                         "DEFERRED FOR EACH ROW EXECUTE FUNCTION atp.refuse()")  # fires at the commit
        job = owner.job()
        assert job.returncode == retrain.FAILED, job.stderr
        error = [line for line in job.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and error[0].startswith("error: writing ") and error[0].endswith(
            "failed, its previous content is unchanged: no space left on device CONTEXT: PL/pgSQL function "
            "atp.refuse() line 1 at RAISE"), job.stderr[-2000:]
        assert owner.branches() == ["main"] and owner.champion() == "1" and owner.published() == published
        undone = owner.client.get_model_version(registry.REGISTERED_MODEL, "2").tags[registry.GATE]
        assert undone.startswith("passed, not promoted: writing ") and "no space left on device" in undone, undone
        with psycopg.connect(atp_db) as conn:
            conn.execute("DROP TRIGGER refuse ON atp.prediction")

        # ---- the same relabeled row, the server back: retrained, the gate passes, promoted and published ----
        job = owner.job()
        assert job.returncode == retrain.PROMOTED, job.stderr
        assert owner.champion() == "3"  # the failed job's run registered version 2
        version_3 = owner.client.get_model_version(registry.REGISTERED_MODEL, "3")
        assert version_3.tags[registry.GATE] == "passed"
        assert owner.client.get_run(version_3.run_id).data.tags[registry.GATE] == "passed"
        rows, writers = owner.published()
        assert rows == published[0] and writers == {version_3.tags[registry.MODEL_SHA256]}
        weekly = [branch for branch in owner.branches() if branch.startswith(retrain.BRANCH_PREFIX)]
        assert len(weekly) == 1
        # reviewable as code: a clone of the job's branch, with no database, against main
        clone = tmp_path / "review"
        owner.run("git", "clone", "-q", "-b", weekly[0], str(owner.origin), str(clone), cwd=tmp_path)
        owner.run("git", "branch", "main", "origin/main", cwd=clone)
        reviewer = {key: value for key, value in owner.env.items() if key != "REEL_DRIVER_PG_DSN"}
        review = subprocess.run([sys.executable, "-m", "reel_driver.cli", "review", "main"], cwd=clone, env=reviewer,
                                capture_output=True, text=True, timeout=300).stdout
        assert "1 label changed: 1 to would_watch, 0 to would_not_watch (0 of them in the hold-out)" in review, review

        # ---- main's gate back to its default, and ten held-out movies the model scores lowest now
        # marked would_watch: the next model misses them, its recall falls, the champion stays ----
        main = tmp_path / "main-again"
        owner.run("git", "clone", "-q", str(owner.origin), str(main), cwd=tmp_path)
        _set_gate(main, "recall_drop_tolerance: 1.0", "recall_drop_tolerance: 0.05")
        owner.run("git", "commit", "-qam", "review: the default gate again", cwd=main)
        owner.run("git", "push", "-q", "origin", "main", cwd=main)
        owner.relabel(owner.published_ids("hold_out", "would_not_watch", 10)
                      + owner.published_ids("out_of_fold", "would_not_watch"))
        published = owner.published()
        job = owner.job()
        assert job.returncode == retrain.REFUSED, job.stderr
        assert owner.champion() == "3" and owner.published() == published
        version_4 = owner.client.get_model_version(registry.REGISTERED_MODEL, "4")
        assert version_4.tags[registry.GATE].startswith("refused: hold-out recall fell"), version_4.tags
        assert "version 4 refused by the gate" in job.stderr and "version 3 stays champion" in job.stderr
        assert len([branch for branch in owner.branches() if branch.startswith(retrain.BRANCH_PREFIX)]) == 2
    finally:
        tracking.stop()
