"""reel-driver serve: the media pipeline's contract against a real server on a loopback port
and a real MLflow store; parity with evaluate; a promote under load."""

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from reel_driver.config import paths
from reel_driver.serving import api
from reel_driver.tracking import registry
from tests.conftest import ISOLATED, copy_of_store, free_port, model_identity
from tests.test_scoring import hold_out_raw

FIELDS = list(api.Movie.model_fields)
# each model's server (a module fixture per parameter) is started once, on one worker
pytestmark = pytest.mark.xdist_group("serve")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self):
        return json.loads(self.text)


class Client:
    """One keep-alive connection, as the media pipeline's HTTP client holds one."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, body=None, raw: str | None = None) -> Answer:
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode())


@dataclass
class Server:
    port: int
    env: dict[str, str]
    log: Path
    store: str

    def client(self) -> Client:
        return Client(self.port)

    def promote(self, *arguments: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "reel_driver.cli", "promote", *arguments], cwd=cwd, env=self.env,
                              capture_output=True, text=True)


class MediaPipeline:
    """The media pipeline's scoring, without its 15 minutes: a batch and the served version every
    50 ms on one keep-alive connection, in a thread from start() to stop(). Every failure is kept
    (none ends the calls), and every version that answered."""

    def __init__(self, server: Server, items: list[dict]) -> None:
        self.server, self.body = server, {"items": items}
        self.failures: list = []
        self.served: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._calls, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _calls(self) -> None:
        caller = self.server.client()
        while not self._stop.wait(0.05):
            try:
                answer = caller.call("POST", "/reel-driver/api/predict_batch", self.body)
                if answer.status != 200:
                    self.failures.append(answer.status)
                self.served.add(caller.call("GET", "/reel-driver/api/model").json["version"])
            except Exception as error:  # noqa: BLE001
                self.failures.append(repr(error))
                caller = self.server.client()


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_model_reading_a_field_the_media_pipeline_never_sends_is_not_served() -> None:
    from reel_driver.preparation import features
    from tests.test_prep import prep_settings, raw_rows

    sent = set(FIELDS) - {"imdb_id", *api.NOT_SENT}
    assert len(sent) == 18  # the metadata fields the media pipeline sends
    train = raw_rows(production_companies=[["A24"], ["A24", "Neon"]], genre=[["Drama"], ["Drama"]])
    default = prep_settings(min_count=1)
    assert api.unsent_fields(features.fit(train, default)) == []
    with_companies = default.model_copy(update={"list_columns": [*default.list_columns, "production_companies"]})
    assert api.unsent_fields(features.fit(train, with_companies)) == ["production_companies"]


@pytest.fixture(scope="module", params=["sample", pytest.param("sample, text branch and ensemble", marks=pytest.mark.slow),
                                        pytest.param("real export", marks=pytest.mark.slow)])
def pipeline(request: pytest.FixtureRequest) -> Path:
    """Every test below runs on the sample's model, then (CI) on the sample's with the text
    branch and the ensemble on, and on the real export's."""
    fixtures = {"sample": "pipeline", "sample, text branch and ensemble": "text_pipeline", "real export": "real_pipeline"}
    return request.getfixturevalue(fixtures[request.param])


@pytest.fixture(scope="module")
def server(pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`reel-driver serve` on a copy of the pipeline's store, polling the alias every 0.2 s."""
    home = tmp_path_factory.mktemp("serve")
    with serving(pipeline, home, copy_of_store(pipeline, home / "store")) as running:
        yield running


@contextmanager
def serving(pipeline: Path, home: Path, store: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """`reel-driver serve` in ``home`` with the pipeline's params, polling ``store`` every 0.2 s, with
    ``env`` added to its environment."""
    settings = yaml.safe_load((pipeline / "params.yaml").read_text())
    settings["serve"]["poll_seconds"] = 0.2
    (home / "params.yaml").write_text(yaml.safe_dump(settings))
    env = {key: value for key, value in os.environ.items() if key not in ISOLATED} | (env or {}) | {
        "MLFLOW_TRACKING_URI": store}
    port, log = free_port(), home / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "reel_driver.cli", "serve", "--port", str(port)], cwd=home,
                                   env=env, stdout=sink, stderr=subprocess.STDOUT)
    running = Server(port, env, log, store)

    def up() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return running.client().call("GET", "/reel-driver/").status == 200
        except OSError:
            return False

    try:
        wait_for(up, 90, "the server did not start")
        yield running
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_without_a_champion_it_starts_and_says_how_to_fix_it(server: Server) -> None:
    client = server.client()
    health = client.call("GET", "/reel-driver/health")
    assert health.status == 503 and "reel-driver promote" in health.json["detail"]
    for path, body in (("/reel-driver/api/predict", {"imdb_id": "tt0111161"}),
                       ("/reel-driver/api/predict_batch", {"items": [{"imdb_id": "tt0111161"}]})):
        answer = client.call("POST", path, body)
        assert answer.status == 503 and "run `dvc repro`, then `reel-driver promote`" in answer.json["detail"]
    assert client.call("GET", "/reel-driver/api/model").status == 503
    assert client.call("GET", "/reel-driver/").status == 200


@pytest.fixture(scope="module")
def champion(server: Server, pipeline: Path) -> registry.Version:
    """The pipeline's model promoted by the CLI from the pipeline's directory (its default version)."""
    result = server.promote(cwd=pipeline)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("reel-driver version 1 is now champion: hold-out recall ")
    assert "(no champion before); gate passed" in result.stdout
    client = server.client()
    wait_for(lambda: client.call("GET", "/reel-driver/health").status == 200, 15, "the champion was not loaded")
    return registry.Version.of(mlflow.MlflowClient(server.store).get_model_version(registry.REGISTERED_MODEL, "1"))


def test_health_and_the_read_routes(champion: registry.Version, server: Server, pipeline: Path) -> None:
    client = server.client()
    health = client.call("GET", "/reel-driver/health")
    assert health.status == 200
    assert health.json == {"status": "ok", "model": {"name": "reel-driver", "version": "1", "run_id": champion.run_id},
                           "registry": {"reachable": True}}
    assert client.call("GET", "/health").status == 404
    for path in ("/openapi.json", "/reel-driver/openapi.json"):
        answer = client.call("GET", path)
        assert answer.status == 200 and "/reel-driver/api/predict_batch" in answer.json["paths"]
    docs = client.call("GET", "/reel-driver/docs")
    assert docs.status == 200 and docs.headers["content-type"].startswith("text/html")
    index = client.call("GET", "/reel-driver/")
    assert index.status == 200 and index.json["links"]["predict"] == "/reel-driver/api/predict"

    model = client.call("GET", "/reel-driver/api/model").json
    evaluated = json.loads((pipeline / paths.EVALUATE_METRICS).read_text())
    assert model == {
        "name": "reel-driver", "version": "1", "run_id": champion.run_id,
        "model_sha256": model_identity(pipeline),
        "threshold": 0.35, "trained_at": champion.trained_at,
        "training_rows": pl.read_parquet(pipeline / paths.PREPARED_TRAIN).height,
        "hold_out": pytest.approx(evaluated),
    }


def test_a_single_movie_with_fields_the_model_does_not_read(champion, server: Server) -> None:
    answer = server.client().call("POST", "/reel-driver/api/predict",
                                  {"imdb_id": "tt0111161", "title": "The Shawshank Redemption", "year": 1994, "rating": 9.3})
    assert answer.status == 200 and answer.headers["x-model-version"] == "1"
    assert set(answer.json) == {"imdb_id", "prediction", "probability"} and answer.json["imdb_id"] == "tt0111161"
    assert answer.json["prediction"] is (answer.json["probability"] >= 0.35)


ACCEPTED = {
    "imdb_id": "tt12345678", "release_year": 1900.0, "budget": 1e6, "revenue": 0, "runtime": 142.0,
    "tmdb_votes": 10.0, "imdb_votes": 0.0, "rt_score": 100.0, "metascore": 0, "tmdb_rating": 10, "imdb_rating": 100,
    "original_language": "en", "production_status": "x" * 25, "tagline": "t" * 255, "overview": "o" * 5000,
    "genre": ["Drama", "Crime"], "origin_country": ["US"], "production_countries": [], "spoken_languages": ["en", "fr"],
    "production_companies": ["Castle Rock Entertainment"],
}


def test_every_field_at_its_limits_and_integers_sent_as_floats(champion, server: Server) -> None:
    answer = server.client().call("POST", "/reel-driver/api/predict", ACCEPTED)
    assert answer.status == 200, answer.text
    as_ints = {k: int(v) if isinstance(v, float) and k not in ("tmdb_rating", "imdb_rating") else v
               for k, v in ACCEPTED.items()}
    assert server.client().call("POST", "/reel-driver/api/predict", as_ints).json == answer.json


@pytest.mark.parametrize(("change", "field"), [
    ({"imdb_id": None}, "imdb_id"), ({"imdb_id": "nm0000151"}, "imdb_id"), ({"imdb_id": "tt123456"}, "imdb_id"),
    ({"imdb_id": "tt123456789"}, "imdb_id"), ({"release_year": 1899}, "release_year"),
    ({"release_year": 2101}, "release_year"), ({"budget": -1}, "budget"), ({"runtime": 142.5}, "runtime"),
    ({"imdb_votes": "many"}, "imdb_votes"), ({"rt_score": 101}, "rt_score"), ({"metascore": -1}, "metascore"),
    ({"tmdb_rating": 10.01}, "tmdb_rating"), ({"imdb_rating": 100.1}, "imdb_rating"),
    ({"original_language": "eng"}, "original_language"), ({"production_status": "x" * 26}, "production_status"),
    ({"tagline": "t" * 256}, "tagline"), ({"genre": "Drama"}, "genre"), ({"spoken_languages": [1]}, "spoken_languages[0]"),
])
def test_an_invalid_value_is_422_naming_the_field(champion, server: Server, change: dict, field: str) -> None:
    body = {k: v for k, v in (ACCEPTED | change).items() if v is not None}
    single = server.client().call("POST", "/reel-driver/api/predict", body)
    assert single.status == 422 and single.json["message"].startswith(f"{field}: ")
    batch = server.client().call("POST", "/reel-driver/api/predict_batch", {"items": [ACCEPTED, ACCEPTED, body]})
    assert batch.status == 422 and batch.json["message"].startswith(f"items[2].{field}: ")


def test_methods_paths_and_malformed_bodies(champion, server: Server) -> None:
    client = server.client()
    assert client.call("GET", "/reel-driver/api/predict").status == 405
    assert client.call("PUT", "/reel-driver/api/predict_batch", {"items": []}).status == 405
    assert client.call("POST", "/reel-driver/api/score", {"imdb_id": "tt0111161"}).status == 404
    malformed = client.call("POST", "/reel-driver/api/predict", raw='{"imdb_id": "tt0111161",')
    assert malformed.status == 422 and malformed.json["message"].startswith("the body is not valid JSON")
    assert client.call("POST", "/reel-driver/api/predict_batch", {"items": []}).json == {"results": []}
    bare = client.call("POST", "/reel-driver/api/predict_batch", [ACCEPTED])
    assert bare.status == 422
    # without a Content-Type (or curl -d's form type) the body is still read as JSON
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("POST", "/reel-driver/api/predict", body='{"imdb_id": "tt0111161"}',
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert connection.getresponse().status == 200


def items_of(raw: pl.DataFrame) -> list[dict]:
    """Rows as the media pipeline sends them in batches: its fields only, every number a float."""
    return [{k: float(v) if isinstance(v, int) else v for k, v in row.items()}
            for row in raw.select(FIELDS).iter_rows(named=True)]


def test_a_batch_answers_every_item_in_order(champion, server: Server, pipeline: Path) -> None:
    items = items_of(hold_out_raw(pipeline).head(25))
    items = items + items[::-1]  # 50, each movie twice
    answer = server.client().call("POST", "/reel-driver/api/predict_batch", {"items": items})
    results = answer.json["results"]
    assert [r["imdb_id"] for r in results] == [item["imdb_id"] for item in items]
    assert [r["probability"] for r in results[:25]] == [r["probability"] for r in results[25:][::-1]]


def test_served_probabilities_equal_evaluates_on_the_hold_out(champion, server: Server, pipeline: Path) -> None:
    items = items_of(hold_out_raw(pipeline))
    client = server.client()
    served = [result for start in range(0, len(items), 50)
              for result in client.call("POST", "/reel-driver/api/predict_batch",
                                        {"items": items[start:start + 50]}).json["results"]]
    singles = [client.call("POST", "/reel-driver/api/predict", item).json for item in items[:10]]
    assert singles == served[:10]
    expected = pl.read_parquet(pipeline / paths.PREDICTIONS).join(
        pl.DataFrame(served).rename({"probability": "served", "prediction": "flagged"}), on="imdb_id")
    assert expected.height == len(items) > 50
    assert np.abs(expected["probability"] - expected["served"]).max() <= 1e-6
    assert expected["flagged"].to_list() == (expected["prediction"] == 1).to_list()


def scraped(server: Server) -> dict[tuple[str, tuple], float]:
    """GET /metrics, parsed by prometheus-client's own parser: {(sample name, sorted labels): value}."""
    answer = server.client().call("GET", "/metrics")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def requests(route: str, status: int, method: str = "POST") -> tuple[str, tuple]:
    return "reel_driver_requests_total", (("method", method), ("route", route), ("status", str(status)))


def test_metrics_count_what_was_asked_by_route_template_and_status(champion, server: Server, pipeline: Path) -> None:
    client = server.client()
    before = scraped(server)
    items = items_of(hold_out_raw(pipeline).head(7))
    single = client.call("POST", "/reel-driver/api/predict", items[0])
    batch = client.call("POST", "/reel-driver/api/predict_batch", {"items": items})
    assert client.call("POST", "/reel-driver/api/predict", {"imdb_id": "not an id"}).status == 422
    assert client.call("GET", "/reel-driver/no-such-route").status == 404
    answers = [single.json, *batch.json["results"]]
    after = scraped(server)

    def moved(key: tuple[str, tuple]) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved(requests("/reel-driver/api/predict", 200)) == 1
    assert moved(requests("/reel-driver/api/predict_batch", 200)) == 1
    assert moved(requests("/reel-driver/api/predict", 422)) == 1
    assert moved(requests("unmatched", 404, "GET")) == 1  # the path asked is never a label
    assert not any("no-such-route" in str(labels) for _, labels in after)
    latency = ("reel_driver_request_duration_seconds_count",
               (("method", "POST"), ("route", "/reel-driver/api/predict_batch"), ("status", "200")))
    assert moved(latency) == 1
    assert moved(("reel_driver_items_scored_total", ())) == 8
    assert moved(("reel_driver_items_above_threshold_total", ())) == sum(a["prediction"] for a in answers)
    assert after[("reel_driver_served_model_version", ())] == int(champion.version)
    # the registry answers every 0.2 s here
    assert 0 <= after[("reel_driver_registry_last_success_age_seconds", ())] < 5
    assert after[("reel_driver_registry_poll_failures_total", ())] == 0
    assert after[("process_resident_memory_bytes", ())] > 0


def test_a_promote_under_load_swaps_versions_and_fails_no_request(champion, server: Server, pipeline: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # the same model evaluated at another threshold: promote's gate passes, and the swap shows in the answers
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.store)
    mlflow.set_tracking_uri(server.store)
    scores = json.loads((pipeline / paths.EVALUATE_METRICS).read_text()) | {"threshold": 0.2}
    assert registry.record_evaluation(champion.model_sha256, scores, "a-test") == "2"

    items = {"items": items_of(hold_out_raw(pipeline).head(50))}
    stop, seen = threading.Event(), [[] for _ in range(4)]

    def send(answers: list) -> None:
        client = server.client()
        while not stop.is_set():
            try:
                answer = client.call("POST", "/reel-driver/api/predict_batch", items)
                answers.append((answer.status, answer.headers.get("x-model-version"), answer.json))
            except Exception as error:  # noqa: BLE001 (counted as a failure below)
                answers.append((0, None, repr(error)))
                client = server.client()

    clients = [threading.Thread(target=send, args=(answers,)) for answers in seen]
    for thread in clients:
        thread.start()
    try:
        wait_for(lambda: all(len(answers) >= 5 for answers in seen), 30, "the clients did not get going")
        promoted = server.promote("2", cwd=pipeline)
        assert promoted.returncode == 0, promoted.stderr
        wait_for(lambda: all(answers and answers[-1][1] == "2" for answers in seen), 15, "the new version never answered")
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=30)

    answers = [answer for per_client in seen for answer in per_client]
    failed = [answer for answer in answers if answer[0] != 200]
    print(f"\nhot swap under load: {len(answers)} batch requests from 4 clients, {len(failed)} failed, "
          f"{sum(a[1] == '1' for a in answers)} answered by version 1, {sum(a[1] == '2' for a in answers)} by version 2")
    assert failed == []
    for per_client in seen:  # each client: version 1, then version 2, never back
        versions = [version for _, version, _ in per_client]
        assert versions == sorted(versions) and versions[0] == "1" and versions[-1] == "2"
    for _, version, body in answers:
        threshold = 0.2 if version == "2" else 0.35
        assert all(r["prediction"] is (r["probability"] >= threshold) for r in body["results"])
    # requests are not logged by default (serve.log_requests)
    assert "POST /reel-driver" not in server.log.read_text()
    assert "serving reel-driver version 2" in server.log.read_text()
