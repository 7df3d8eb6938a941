"""MLflow: where runs go, and the tags that tie a run to DVC and git.

By default runs go to MLflow's own default store, SQLite `mlflow.db` at the
repository root, with artifacts in `mlruns/` beside it. Queued and --temp DVC
experiments run in a copy under .dvc/tmp/exps/; DVC sets DVC_ROOT to the main
repository for them, so every run lands in the main store, not in the copy.
MLFLOW_TRACKING_URI overrides the store. Where it names a tracking server (the owner's, with
its artifacts in MinIO), a server that does not answer fails the stage: a run the server never
recorded is a model it never registered, which nothing could serve.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from reel_driver.config.errors import PipelineError, first_line
from reel_driver.model.ensemble import check_present

if TYPE_CHECKING:
    import mlflow

# MLflow is imported where it is used: importing it takes 2 s, which train spends
# on a thread beside the search instead (open_in_background)

log = logging.getLogger("reel_driver.tracking")

EXPERIMENT = "reel-driver"
TRACKING_URI = "MLFLOW_TRACKING_URI"


def repository_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_sha256(model: Path, ensemble: Path | None) -> str:
    """The served model's identity: the booster file's sha256, over the ensemble's members too
    when it has any (a model without members keeps the identity it always had)."""
    digest = hashlib.sha256(model.read_bytes())
    if ensemble is not None:
        check_present(ensemble)
        if json.loads(ensemble.read_bytes())["members"]:
            digest.update(ensemble.read_bytes())
    return digest.hexdigest()


def raw_data_md5(lock: Path = Path("dvc.lock")) -> str:
    """The raw table's hash as DVC recorded it in dvc.lock (extract's output)."""
    try:
        outs = yaml.safe_load(lock.read_text())["stages"]["extract"]["outs"]
        return str(outs[0]["md5"])
    except (OSError, KeyError, IndexError, TypeError):
        return "unknown"


def _git_commit() -> str:
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if baseline:
        return baseline
    result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown"


def tags() -> dict[str, str]:
    return {
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "git_commit": _git_commit(),
        "raw_data_md5": raw_data_md5(),
    }


def store_errors() -> tuple[type[Exception], ...]:
    """What a failing store raises: MLflow wraps most database errors (not those of
    opening a SQL store: SQLAlchemy's come through); artifacts hit the file system."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return (MlflowException, SQLAlchemyError, OSError)



def _store() -> tuple[Path, str]:
    """The repository root and the store's URI."""
    root = repository_root()
    return root, os.environ.get(TRACKING_URI) or f"sqlite:///{root / 'mlflow.db'}"


def names_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_server() -> None:
    """Where MLFLOW_TRACKING_URI names a tracking server, that it answers, before a long search
    whose run and model only it would keep. Any HTTP answer counts (a proxy asking for a login
    is an answer); no answer is one line naming the server, never its credentials."""
    _, uri = _store()
    if not names_server(uri):
        return
    where = without_credentials(uri)
    try:
        with urllib.request.urlopen(f"{where.rstrip('/')}/health", timeout=10):
            pass
    except urllib.error.HTTPError:
        pass
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise PipelineError(f"MLflow: the tracking server {where} does not answer ({reason}): nothing is trained, "
                            "as the run and its model would be recorded there; run dvc repro again once "
                            "it answers") from error


def _open_store(root: Path, uri: str) -> None:
    """Point MLflow at the store, with the experiment in it."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        # A tracking server keeps the artifacts where it is told (its --artifacts-destination, the
        # owner's MinIO): a location here would be this machine's disk, a training pod's, gone with
        # the Job. A local store gets an absolute one: a relative one would follow the working copy.
        location = None if names_server(uri) else (root / "mlruns").as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)


def _no_progress_bars() -> None:
    """MLflow draws artifact progress bars even into CI logs and a server's."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def use_store() -> str:
    """Point MLflow (runs and registry) at the store without starting a run; returns where it
    is, without credentials."""
    import mlflow

    _no_progress_bars()
    _, uri = _store()
    mlflow.set_tracking_uri(uri)
    return without_credentials(uri)


def requirements(families: list[str] | tuple = ()) -> list[str]:
    """The model's pip requirements (with the ensemble's ``families``), named rather than inferred:
    MLflow's inference loads the model in a fresh process, which took minutes here."""
    names = ("mlflow", "xgboost", "polars", "pandas", "numpy", "pydantic", "pyarrow", *families)
    return [f"{name}=={version(name)}" for name in names]


def open_in_background() -> Callable[[], None]:
    """Import MLflow, open its store and check the model's requirements against this
    environment on a thread while the stage computes. The three took 2 s of CPU in the
    train stage (the first check reads every installed package's metadata; MLflow
    repeats it at each log_model, then from its cache). Call the returned function
    before logging; it re-raises what went wrong, except a failing store, which
    `run` reports as it always does. A tracking server is checked first, here, before the work."""
    check_server()
    failures: list[BaseException] = []

    def work() -> None:
        try:
            import mlflow.pyfunc
            import mlflow.xgboost  # noqa: F401
            from mlflow.utils.requirements_utils import (
                warn_dependency_requirement_mismatches,
            )

            warn_dependency_requirement_mismatches(requirements())
            with suppress(*store_errors()):
                _open_store(*_store())
        except BaseException as error:  # noqa: BLE001 (re-raised in the caller's thread)
            failures.append(error)

    thread = threading.Thread(target=work, name="mlflow-store", daemon=True)
    thread.start()

    def ready() -> None:
        thread.join()
        if failures:
            raise failures[0]

    return ready


@contextmanager
def _started(stage: str, root: Path, uri: str) -> Iterator[mlflow.ActiveRun]:
    import mlflow

    _open_store(root, uri)
    run_tags = {**tags(), "stage": stage}
    name = f"{stage}:{run_tags['dvc_exp_name']}" if run_tags["dvc_exp_name"] else stage
    with mlflow.start_run(run_name=name, tags=run_tags) as active:
        log.info("MLflow run %s (%s) in %s", active.info.run_id, name, without_credentials(uri))
        yield active


def without_credentials(uri: str) -> str:
    """The store without credentials (a server URI may carry user:password@)."""
    scheme, _, rest = uri.rpartition("://")
    return f"{scheme}://{rest.split('@')[-1]}" if scheme else uri


def _unavailable(error: BaseException) -> bool:
    """A store that cannot be reached or written, or is locked (not a fault in what is logged)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                                                          errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ETIMEDOUT):
            return True
        text = str(error).lower()
        if any(sign in text for sign in ("database is locked", "unable to open database", "connection refused",
                                         "max retries exceeded", "failed to establish a new connection")):
            return True
        error = error.__cause__ or error.__context__
    return False


@contextmanager
def run(stage: str) -> Iterator[mlflow.ActiveRun | None]:
    """An MLflow run in the main repository's store, named after the stage and DVC experiment.

    A local store that cannot be opened, reached or written, or is locked, is one warning, not
    a failure: the stage's outputs are already written, and a long search is not thrown
    away for want of its record. A tracking server that stops answering fails the stage with
    one line: DVC then records nothing for it, and the next `dvc repro` runs it again and
    records the run (a warning would have let DVC lock a model that no registry holds). (A store that fails to open runs the body without a
    run: its MLflow calls fail again and are swallowed here.) Any other error while
    logging, registering the model above all, fails the stage with one line: a model
    that silently did not register is never served.
    """
    _no_progress_bars()
    root, uri = _store()
    started = False
    try:
        with _started(stage, root, uri) as active:
            started = True
            yield active
    except PipelineError:
        raise
    except Exception as error:
        if names_server(uri) and _unavailable(error):
            raise PipelineError(f"MLflow: the tracking server {without_credentials(uri)} stopped answering while the {stage} run "
                                f"was recorded ({first_line(error)}): the run is not recorded, so the stage fails; "
                                "run dvc repro again once it answers") from error
        if started and not _unavailable(error):
            raise PipelineError(f"MLflow: recording the {stage} run in {without_credentials(uri)} failed: "
                                f"{type(error).__name__}: {first_line(error)}") from error
        if not started and not isinstance(error, store_errors()):
            raise
        log.warning("MLflow store %s failed (%s): this %s run is not recorded; the stage's outputs are written",
                    without_credentials(uri), first_line(error), stage)
        if not started:
            with suppress(*store_errors()):
                yield None
