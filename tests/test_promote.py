"""reel-driver promote: the champion alias moves only through review's gate, or by --force with a reason."""

import json
from pathlib import Path

import mlflow
import pytest

from reel_driver.commands import promote
from reel_driver.config import paths
from reel_driver.config.errors import PipelineError
from reel_driver.tracking import registry
from tests.conftest import copy_of_store


@pytest.fixture
def store(in_pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> mlflow.MlflowClient:
    """A copy of the pipeline's store (version 1, evaluated), as the repository's store."""
    uri = copy_of_store(in_pipeline, tmp_path / "store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def evaluated_again(**changes: float) -> str:
    """A new version of the pipeline's model with other hold-out metrics; returns it."""
    scores = json.loads(paths.EVALUATE_METRICS.read_text()) | changes
    return registry.record_evaluation(registry.Version.of(_version("1")).model_sha256, scores, "a-test")


def _version(number: str):
    return mlflow.MlflowClient().get_model_version(registry.REGISTERED_MODEL, number)


def champion_version(client: mlflow.MlflowClient) -> str | None:
    found = registry.champion(client)
    return found.version if found else None


def test_the_workspace_model_is_promoted_then_a_worse_one_is_refused(store: mlflow.MlflowClient) -> None:
    recall = json.loads(paths.EVALUATE_METRICS.read_text())["recall"]
    assert champion_version(store) is None
    line = promote.promote(None, None)
    assert line.startswith(f"reel-driver version 1 is now champion: hold-out recall {recall:.4f} at threshold 0.35 "
                           "(no champion before); gate passed")
    assert promote.promote("1", None).startswith("reel-driver version 1 is already champion")

    worse = evaluated_again(recall=recall - 0.1)
    with pytest.raises(PipelineError) as refused:
        promote.promote(worse, None)
    assert str(refused.value) == (
        f"promote refused: hold-out recall fell 0.1000 below champion version 1's {recall:.4f} "
        f"(review.recall_drop_tolerance 0.05); `reel-driver promote {worse} --force REASON` promotes anyway")
    assert champion_version(store) == "1"

    line = promote.promote(worse, "the owner relabeled the hold-out")
    assert "forced past the gate (hold-out recall fell 0.1000" in line and line.endswith(
        f": the owner relabeled the hold-out ({mlflow.get_tracking_uri()})")
    assert champion_version(store) == worse
    assert _version(worse).tags[registry.FORCED] == "the owner relabeled the hold-out"


def test_a_slightly_lower_recall_within_the_tolerance_passes(store: mlflow.MlflowClient) -> None:
    recall = json.loads(paths.EVALUATE_METRICS.read_text())["recall"]
    promote.promote("1", None)
    close = evaluated_again(recall=recall - 0.04)
    assert "gate passed" in promote.promote(close, None)
    assert champion_version(store) == close


def test_with_no_champion_only_the_floor_applies(store: mlflow.MlflowClient) -> None:
    low = evaluated_again(recall=0.59)
    with pytest.raises(PipelineError, match=r"^promote refused: hold-out recall 0.5900 is below review.recall_floor 0.6;"):
        promote.promote(low, None)
    assert champion_version(store) is None


def test_a_version_without_hold_out_metrics_is_never_promoted(store: mlflow.MlflowClient) -> None:
    unevaluated = store.create_model_version(registry.REGISTERED_MODEL, _version("1").source,
                                             tags={registry.MODEL_SHA256: "0" * 64})
    for forced in (None, "I know"):
        with pytest.raises(PipelineError, match=f"version {unevaluated.version} has no hold-out metrics"):
            promote.promote(str(unevaluated.version), forced)
    with pytest.raises(PipelineError, match="reel-driver has no version 99"):
        promote.promote("99", None)


def test_a_workspace_model_the_store_never_saw(store: mlflow.MlflowClient, in_pipeline: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    other, no_members = tmp_path / "model.json", tmp_path / "ensemble.json"
    other.write_text("{}")
    no_members.write_text('{"members": []}')  # the identity is then the model file's own sha256
    with pytest.raises(PipelineError, match=r"no version of reel-driver holds .*model.json \(sha256 44136fa355b3\)"):
        promote.promote(None, None, model=other, ensemble=no_members)
    with pytest.raises(PipelineError, match=r"missing.json does not exist: run dvc repro first, or name a version"):
        promote.promote(None, None, model=tmp_path / "missing.json")
