"""tracking.run: a fault in what is logged fails the stage (a locked or unwritable store is a warning:
tests/test_bad_input.py)."""

import mlflow
import pytest

from reel_driver.config.errors import PipelineError
from reel_driver.tracking import runs
from tests.conftest import TrackingServer, free_port


def test_a_logging_error_fails_the_stage_with_one_line(workdir, tmp_path) -> None:
    with pytest.raises(PipelineError) as failed:
        with runs.run("train"):
            mlflow.log_param("search.budget", 12)
            mlflow.log_param("search.budget", 6)  # a param cannot change within a run: a bug in the stage
    message = str(failed.value)
    assert message.startswith(f"MLflow: recording the train run in sqlite:///{tmp_path}/mlflow.db failed: "
                              "MlflowException: ") and "\n" not in message
    run = mlflow.search_runs(experiment_names=["reel-driver"]).iloc[0]
    assert run["status"] == "FAILED"


@pytest.mark.slow
def test_with_a_tracking_server_the_artifacts_go_where_the_server_keeps_them(workdir, tmp_path, monkeypatch) -> None:
    server = TrackingServer(f"sqlite:///{tmp_path / 'server.db'}", free_port(), tmp_path / "server.log",
                            artifacts=tmp_path / "object-store")
    server.start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        (tmp_path / "cv_results.parquet").write_bytes(b"PAR1")
        with runs.run("train") as active:
            mlflow.log_artifact(str(tmp_path / "cv_results.parquet"))
        logged = mlflow.MlflowClient(server.uri).get_run(active.info.run_id)
        assert logged.info.artifact_uri.startswith("mlflow-artifacts:/")  # the server's, proxied
        stored = list((tmp_path / "object-store").rglob("cv_results.parquet"))
        assert [path.read_bytes() for path in stored] == [b"PAR1"]
        # nothing of MLflow's in the workspace: no store, no artifacts
        assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    finally:
        server.stop()
