"""`reel-driver retrain`: the weekly job the owner's scheduler starts (a Kubernetes Job, or
Dagster's k8s_job_op), with every setting from the environment.

It clones the repository's branch, brings its committed run back from the DVC remote and runs
`dvc repro` on the real table. Only when train ran (the reviewed training rows changed: new
arrivals alone leave the prepared files byte-identical, so DVC skips the rest) does it go on: the
outputs to the remote, the run's params, dvc.lock and metrics to a git branch of their own (so
`reel-driver review main` shows what the job did), then promote's gate. Passed: the predictions
replace atp.prediction and the champion alias moves, in one transaction. Refused: the champion
stays, and the verdict is a tag on the version and its run. A PostgreSQL advisory lock on the
owner's database keeps a second job (a retry overlapping a slow first run) from doing any of it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from reel_driver.commands import promote as promotion
from reel_driver.commands import publish as publication
from reel_driver.config import params, paths
from reel_driver.config.errors import PipelineError, first_line
from reel_driver.data import database
from reel_driver.tracking import registry, runs

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("reel_driver.retrain")

# what the job's exit code says (the scheduler sees only this): the three outcomes, and failure
PROMOTED = 0
NOTHING_TO_RETRAIN = 3
REFUSED = 4
FAILED = 1

GIT_URL = "REEL_DRIVER_GIT_URL"  # may carry a token: never printed
GIT_BRANCH = "REEL_DRIVER_GIT_BRANCH"  # the branch retrained against, and the review's base (default main)
COMMIT = "REEL_DRIVER_COMMIT"  # set in the image: the commit its code was built from
WORKDIR = "REEL_DRIVER_WORKDIR"  # where the clone goes (default: a temporary directory, removed after)
BRANCH_PREFIX = "retrain/"
LOCK = "reel-driver retrain"
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "reel-driver retrain", "GIT_AUTHOR_EMAIL": "reel-driver@localhost",
                "GIT_COMMITTER_NAME": "reel-driver retrain", "GIT_COMMITTER_EMAIL": "reel-driver@localhost"}
# what the branch commits: the run as code (data and models go to the DVC remote)
COMMITTED = ["dvc.lock", "params.yaml", "metrics"]


def retrain() -> int:
    """The whole job; returns its exit code."""
    url = os.environ.get(GIT_URL)
    if not url:
        raise PipelineError(f"{GIT_URL} is not set: the weekly job clones the repository from it")
    branch = os.environ.get(GIT_BRANCH, "main")
    runs.check_server()  # the registry away: fail now, not after the clone, the pull and the stages before train
    with _the_only_retrain(), _workdir() as repo:
        _git(repo.parent, "clone", "--quiet", "--branch", branch, url, str(repo), what=f"cloning branch {branch}")
        if commit := os.environ.get(COMMIT):  # the code that runs is the code the run records
            _git(repo, "checkout", "--quiet", commit, what=f"checking out the image's commit {commit[:12]}")
        os.chdir(repo)
        base = _last_run(repo) or branch
        if base != branch:  # this code's newest run is a weekly branch not merged yet: its lock, not main's
            _git(repo, "checkout", "--quiet", f"origin/{base}", "--", *COMMITTED, what=f"taking {base}'s run")
        log.info("the last run: %s", base)
        _dvc("pull", what=f"bringing {base}'s run back from the DVC remote")
        before = _train_outputs()
        _dvc("repro", what="dvc repro on the table")
        if _train_outputs() == before:
            log.info("the reviewed training rows did not change since %s's run: nothing to retrain (exit %d)", base,
                     NOTHING_TO_RETRAIN)
            return NOTHING_TO_RETRAIN
        client, where = registry.connect()
        candidate = registry.of_model_file(client, paths.MODEL, paths.ENSEMBLE)
        current = registry.champion(client)
        if current and current.model_sha256 == candidate.model_sha256:
            log.info("the model trained is champion version %s's own: nothing to retrain (exit %d)", current.version,
                     NOTHING_TO_RETRAIN)
            return NOTHING_TO_RETRAIN
        _dvc("push", what="pushing the run's data and models to the DVC remote")
        pushed = _push_branch(repo, branch)
        try:
            return _promote_and_publish(client, where, candidate, current, pushed, branch)
        except BaseException:
            # nothing was promoted or published: a branch left behind would show a run that did not happen
            with suppress(PipelineError):
                _git(repo, "push", "--quiet", "origin", "--delete", pushed, what=f"deleting branch {pushed} again")
            raise


def _promote_and_publish(client: MlflowClient, where: str, candidate: registry.Version,
                         current: registry.Version | None, pushed: str, branch: str) -> int:
    settings = params.load()
    refused = promotion.gate(candidate, current, settings.review)
    if refused:
        registry.record_gate(client, candidate, f"refused: {refused}")
        log.warning("version %s refused by the gate (%s): version %s stays champion; review it with "
                    "`git checkout %s && reel-driver review %s` (exit %d)", candidate.version, refused,
                    current.version if current else "none", pushed, branch, REFUSED)
        return REFUSED

    def move_the_alias() -> None:
        registry.promote(client, candidate, None)
        registry.record_gate(client, candidate, "passed")

    try:
        publication.publish(None, before_commit=move_the_alias)
    except BaseException as error:
        # the alias moved, then the commit failed: the previous champion comes back with the old rows
        if current is None:
            client.delete_registered_model_alias(registry.REGISTERED_MODEL, registry.CHAMPION)
        elif registry.champion(client) != current:
            registry.promote(client, current, None)
        registry.record_gate(client, candidate, f"passed, not promoted: {first_line(error)}")
        raise
    log.info("version %s is now %s (was %s; %s), its predictions in %s; the run is branch %s (exit %d)",
             candidate.version, registry.CHAMPION, current.version if current else "none", where,
             settings.publish.table, pushed, PROMOTED)
    return PROMOTED


@contextmanager
def _the_only_retrain() -> Iterator[None]:
    """The owner's database's advisory lock, held for the whole job on a connection of its own."""
    with database.connect() as conn:
        conn.autocommit = True
        if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [LOCK]).fetchone()[0]:
            raise PipelineError("another reel-driver retrain holds its lock on the database (a run still going, "
                                "or a retry that overlapped it): this one did nothing")
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [LOCK])


@contextmanager
def _workdir() -> Iterator[Path]:
    where = os.environ.get(WORKDIR)
    parent = Path(where) if where else Path(tempfile.mkdtemp(prefix="reel-driver-retrain-"))
    repo = parent / "repo"
    if repo.exists():
        shutil.rmtree(repo)  # a previous attempt's clone (the Job's retry on the same volume)
    parent.mkdir(parents=True, exist_ok=True)
    back = Path.cwd()
    try:
        yield repo
    finally:
        os.chdir(back)
        if not where:
            shutil.rmtree(parent, ignore_errors=True)


def _train_outputs() -> object:
    """What dvc.lock says train wrote (the model's hashes): unchanged means train did not run."""
    stages = yaml.safe_load(Path("dvc.lock").read_text()).get("stages", {}) if Path("dvc.lock").exists() else {}
    return stages.get("train", {}).get("outs")


def _last_run(repo: Path) -> str | None:
    """The newest weekly branch that is a run on top of this checkout (it holds this code, and
    differs only in the run's files), or None."""
    listed = _git(repo, "for-each-ref", "--format=%(refname:lstrip=3)", f"refs/remotes/origin/{BRANCH_PREFIX}",
                  what="listing the weekly branches", echo=False).stdout.split()
    for name in sorted(listed, reverse=True):  # retrain/YYYYMMDD-HHMMSS: the newest first
        ref = f"origin/{name}"
        if _git(repo, "merge-base", "--is-ancestor", "HEAD", ref, what="", echo=False, check=False).returncode:
            continue
        changed = _git(repo, "diff", "--name-only", "HEAD", ref, what=f"comparing {name}", echo=False).stdout.split()
        if all(path.split("/")[0] in COMMITTED for path in changed):
            return name
    return None


def _push_branch(repo: Path, branch: str) -> str:
    name = f"{BRANCH_PREFIX}{datetime.now(UTC):%Y%m%d-%H%M%S}"
    _git(repo, "checkout", "--quiet", "-b", name, what=f"creating branch {name}")
    _git(repo, "add", *COMMITTED, what="staging the run")
    _git(repo, "commit", "--quiet", "-m", f"weekly retrain against {branch}: dvc repro on the table",
         what="committing the run")
    _git(repo, "push", "--quiet", "origin", name, what=f"pushing branch {name}")
    log.info("the run is on branch %s: its params, dvc.lock and metrics, reviewable against %s", name, branch)
    return name


def _environment() -> dict[str, str]:
    """The stages run this checkout's code, with the job's Python first on PATH."""
    python = str(Path(sys.executable).parent)
    return {**GIT_IDENTITY, **os.environ, "PATH": f"{python}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(Path.cwd())}


def _git(cwd: Path, *args: str, what: str, echo: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    """git; its output passed on (``echo``) with the repository's URL (and any token in it) left out."""
    done = subprocess.run(["git", *args], cwd=cwd, env=_environment(), capture_output=True, text=True, check=False)
    url = os.environ.get(GIT_URL, "")
    if echo or (check and done.returncode):
        sys.stderr.write((done.stdout + done.stderr).replace(url, runs.without_credentials(url)) if url else
                         done.stdout + done.stderr)
    if check:
        _check(done.returncode, what)
    return done


def _dvc(*args: str, what: str) -> None:
    """dvc, its output going straight to the job's log (DVC prints no key)."""
    _check(subprocess.run([sys.executable, "-m", "dvc", *args], env=_environment(), check=False).returncode, what)


def _check(returncode: int, what: str) -> None:
    if returncode != 0:
        raise PipelineError(f"retrain: {what} failed (its output is above); the champion, the DVC remote's "
                            "committed runs and atp.prediction are as they were")
