"""tracking.run: a fault in what is logged fails the stage (a locked or unwritable store is a warning:
tests/test_bad_input.py)."""

import mlflow
import pytest

from reel_driver.config.errors import PipelineError
from reel_driver.tracking import runs


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
