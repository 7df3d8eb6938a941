"""reel-driver serve when its registry is away: a real `mlflow server` on loopback, stopped and started
again under the running API."""

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pytest

from reel_driver.tracking import registry
from tests.conftest import TrackingServer, copy_of_store, free_port
from tests.test_scoring import hold_out_raw
from tests.test_serve import items_of, scraped, serving, wait_for


@pytest.mark.slow
def test_the_registry_away_while_serving_keeps_the_champion_and_back_it_brings_the_new_one(
        pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = copy_of_store(pipeline, tmp_path / "store")
    registry_server = TrackingServer(store, free_port(), tmp_path / "mlflow-server.log")
    registry_server.start()
    (tmp_path / "serve").mkdir()
    try:
        promoted = subprocess.run([sys.executable, "-m", "reel_driver.cli", "promote"], cwd=pipeline, capture_output=True,
                                  text=True, timeout=120, env={**os.environ, "MLFLOW_TRACKING_URI": registry_server.uri})
        assert promoted.returncode == 0, promoted.stderr
        with serving(pipeline, tmp_path / "serve", registry_server.uri) as server:
            client = server.client()
            wait_for(lambda: client.call("GET", "/reel-driver/health").status == 200, 60, "the champion was not loaded")
            assert client.call("GET", "/reel-driver/health").json["registry"] == {"reachable": True}
            items = items_of(hold_out_raw(pipeline).head(5))
            answered = client.call("POST", "/reel-driver/api/predict_batch", {"items": items}).json

            # the registry goes away: version 1 answers every request, health says since when
            registry_server.stop()
            wait_for(lambda: not client.call("GET", "/reel-driver/health").json["registry"]["reachable"], 60,
                     "health did not report the registry away")
            health = client.call("GET", "/reel-driver/health")
            assert health.status == 200 and health.json["model"]["version"] == "1"
            since = datetime.fromisoformat(health.json["registry"]["unreachable_since"])
            assert abs((datetime.now(UTC) - since).total_seconds()) < 60
            for _ in range(5):
                answer = client.call("POST", "/reel-driver/api/predict_batch", {"items": items})
                assert answer.status == 200 and answer.json == answered
            wait_for(lambda: scraped(server)[("reel_driver_registry_poll_failures_total", ())] >= 2, 60,
                     "no failed poll was counted")
            assert scraped(server)[("reel_driver_registry_last_success_age_seconds", ())] > 0

            # meanwhile the owner promotes another version, in the store itself (MLflow resolves the
            # version's source through the process's own tracking URI)
            monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
            mlflow.set_tracking_uri(store)
            local = mlflow.MlflowClient(store)
            first = local.get_model_version(registry.REGISTERED_MODEL, "1")
            second = local.create_model_version(registry.REGISTERED_MODEL, first.source, run_id=first.run_id,
                                                tags=first.tags, model_id=first.model_id)
            local.set_registered_model_alias(registry.REGISTERED_MODEL, registry.CHAMPION, second.version)

            # back: the next poll finds the new champion and health says the registry answers again
            registry_server.start()
            client = server.client()  # the old keep-alive connection idled out while the registry started
            wait_for(lambda: client.call("GET", "/reel-driver/health").json["model"]["version"] == str(second.version), 90,
                     "the new champion was not picked up")
            assert client.call("GET", "/reel-driver/health").json["registry"] == {"reachable": True}
            assert scraped(server)[("reel_driver_served_model_version", ())] == int(second.version)
            assert client.call("POST", "/reel-driver/api/predict_batch", {"items": items}).json == answered
    finally:
        registry_server.stop()
