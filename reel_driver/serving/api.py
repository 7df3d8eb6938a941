"""`reel-driver serve`: the prediction API the media pipeline calls (its routes and bodies
unchanged), on the registry version the `champion` alias points at.

Every request scores through ``scoring.Scorer``, the path predict and the logged pyfunc
take, at the served version's own evaluate.threshold. A thread asks the registry for the
alias every serve.poll_seconds; a new champion is loaded beside the current one and
swapped in with one assignment, so a request in flight finishes on the model it started
with and none waits for the load.
"""

import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import polars as pl
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from mlflow import MlflowClient
from pydantic import BaseModel, ConfigDict, Field

from reel_driver.config import params
from reel_driver.config.errors import PipelineError, first_line
from reel_driver.data import schema
from reel_driver.model import scoring
from reel_driver.preparation import features
from reel_driver.serving.telemetry import CONTENT_TYPE, Instrumented, Telemetry
from reel_driver.tracking import registry

log = logging.getLogger("reel_driver.serve")

PREFIX = "/reel-driver"
VERSION_HEADER = "X-Model-Version"  # which registered version answered (the body stays the caller's contract)
NO_CHAMPION = (f"no model is served: the registry has no {registry.CHAMPION} version of {registry.REGISTERED_MODEL}; "
               "run `dvc repro`, then `reel-driver promote`")

Count = Annotated[int, Field(ge=0)]  # an integer; JSON's 142.0 is read as 142, 142.5 is refused
Percent = Annotated[int, Field(ge=0, le=100)]
Names = list[str]


class Movie(BaseModel):
    """One movie as the media pipeline sends it: atp.training's metadata fields."""

    model_config = ConfigDict(extra="ignore")  # it sends fields the model does not read (title, year ...)
    imdb_id: Annotated[str, Field(pattern=r"^tt[0-9]{7,8}$")]
    release_year: Annotated[int, Field(ge=1900, le=2100)] | None = None
    budget: Count | None = None
    revenue: Count | None = None
    runtime: Count | None = None
    tmdb_votes: Count | None = None
    imdb_votes: Count | None = None
    rt_score: Percent | None = None
    metascore: Percent | None = None
    tmdb_rating: Annotated[float, Field(ge=0, le=10)] | None = None
    imdb_rating: Annotated[float, Field(ge=0, le=100)] | None = None
    original_language: Annotated[str, Field(max_length=2)] | None = None
    production_status: Annotated[str, Field(max_length=25)] | None = None
    tagline: Annotated[str, Field(max_length=255)] | None = None
    overview: str | None = None
    genre: Names | None = None
    origin_country: Names | None = None
    production_countries: Names | None = None
    spoken_languages: Names | None = None
    production_companies: Names | None = None


# Accepted, but the media pipeline never sends it (its 18 other metadata fields it does): a model
# that reads it would score every real request without it, unlike the rows it was trained on
NOT_SENT = ("production_companies",)


def unsent_fields(spec: features.FeatureSpec) -> list[str]:
    """The fields a model's feature build reads that the media pipeline does not send."""
    return [name for name in NOT_SENT if name in scoring.required_columns(spec)]


class Batch(BaseModel):
    items: list[Movie]


class Prediction(BaseModel):
    imdb_id: str
    prediction: bool  # probability >= the served version's threshold; the caller reads probability
    probability: float


class BatchPredictions(BaseModel):
    results: list[Prediction]


# Movie's fields as a frame in atp.training's own dtypes (the validation keeps every value in range)
_FRAME_SCHEMA = {name: schema.BY_NAME[name].dtype for name in Movie.model_fields}


def movies_frame(movies: list[Movie]) -> pl.DataFrame:
    return pl.DataFrame([movie.model_dump() for movie in movies], schema=_FRAME_SCHEMA)


@dataclass(frozen=True)
class Served:
    version: registry.Version
    scorer: scoring.Scorer

    def predict(self, movies: list[Movie]) -> list[dict]:
        scored = self.scorer.scored(movies_frame(movies), self.version.threshold)
        return [{"imdb_id": imdb_id, "prediction": bool(flag), "probability": probability}
                for imdb_id, probability, flag in scored.iter_rows()]


class Champion:
    """The served version, refreshed from the registry's alias; ``telemetry`` counts the polls."""

    def __init__(self, client: MlflowClient, telemetry: Telemetry | None = None) -> None:
        self.client = client
        self.telemetry = telemetry or Telemetry()
        self.served: Served | None = None
        self._rejected: str | None = None  # a version that loaded but cannot be served: never tried again
        self._unloaded: str | None = None  # a version whose artifacts did not come: tried at each poll, warned once

    def refresh(self) -> None:
        """Ask the registry for the champion; load and swap in a new one. A store that does not
        answer, or a version that does not load, keeps the current model."""
        try:
            found = registry.champion(self.client)
        except Exception as error:  # noqa: BLE001 (any store failure: keep serving)
            if self.telemetry.unreachable_since is None:  # once an outage: /metrics counts each failed poll
                log.warning("the registry did not answer (%s): still serving %s", first_line(error), self._serving())
            self.telemetry.poll_failed()
            return
        if (since := self.telemetry.unreachable_since) is not None:
            log.info("the registry answers again, after %.0f s away", self.telemetry.clock() - since)
        self.telemetry.polled()
        if found is None or (self.served and self.served.version.version == found.version) or found.version == self._rejected:
            return
        try:
            if found.threshold is None:
                raise ValueError("it has no threshold (evaluate did not record it)")
            served = Served(found, registry.load_scorer(found))
            if unsent := unsent_fields(served.scorer.spec):
                raise ValueError(f"it reads {', '.join(unsent)}, which the media pipeline does not send "
                                 "(train without it: remove it from prep.list_columns)")
        except (ValueError, PipelineError) as error:  # the version itself: no later poll would serve it
            self._rejected = found.version
            log.error("version %s of %s cannot be served (%s): still serving %s", found.version,
                      registry.REGISTERED_MODEL, error, self._serving())
            return
        except Exception as error:  # noqa: BLE001 (its artifacts did not come, MinIO away: the next poll tries again)
            self.telemetry.load_failures.inc()
            if self._unloaded != found.version:
                self._unloaded = found.version
                log.error("version %s of %s did not load (%s): still serving %s; trying again at each poll",
                          found.version, registry.REGISTERED_MODEL, first_line(error), self._serving())
            return
        self.served = served  # the swap: requests read self.served once
        self.telemetry.version.set(int(found.version))
        log.info("serving %s version %s (run %s, threshold %g)", registry.REGISTERED_MODEL, found.version,
                 found.run_id, found.threshold)

    def _serving(self) -> str:
        return f"version {self.served.version.version}" if self.served else "nothing"

    def poll(self, seconds: float, stop: threading.Event) -> None:
        while not stop.wait(seconds):
            self.refresh()



def _instant(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _unavailable() -> JSONResponse:
    return JSONResponse({"status": "unavailable", "detail": NO_CHAMPION}, status_code=503)


def _where(location: tuple) -> str:
    """("body", "items", 3, "runtime") -> items[3].runtime"""
    text = ""
    for part in location[1:] if location[:1] == ("body",) else location:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "body"


async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 as FastAPI words it, plus one line naming the first bad field (and item)."""
    problems = error.errors()
    first = problems[0] if problems else {"loc": ("body",), "msg": "invalid", "type": ""}
    if first["type"] == "json_invalid":
        message = f"the body is not valid JSON: {first['ctx']['error']} (character {first['loc'][-1]})"
    else:
        message = f"{_where(tuple(first['loc']))}: {first['msg']}"
    return JSONResponse({"detail": jsonable_encoder(problems), "message": message}, status_code=422)


class JsonBodies:
    """Every body is read as JSON, whatever its Content-Type says: the API speaks nothing else,
    and FastAPI would otherwise take a body sent without the header (or by `curl -d`, which
    labels it a form) for one string."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(name, value) for name, value in scope["headers"] if name != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


def create_app(champion: Champion, poll_seconds: float | None = None) -> FastAPI:
    """The API on ``champion``; with ``poll_seconds`` it refreshes the champion while it runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        if poll_seconds:
            threading.Thread(target=champion.poll, args=(poll_seconds, stop), name="champion-poll", daemon=True).start()
        yield
        stop.set()

    app = FastAPI(title="reel-driver", summary="Would the owner watch this movie?", lifespan=lifespan,
                  openapi_url=f"{PREFIX}/openapi.json", docs_url=f"{PREFIX}/docs", redoc_url=None)
    app.add_exception_handler(RequestValidationError, _invalid)
    telemetry = champion.telemetry
    # added first, so it runs inside JsonBodies: it sees the scope the router writes the route into
    app.add_middleware(Instrumented, telemetry=telemetry)
    app.add_middleware(JsonBodies)
    api = APIRouter(prefix=PREFIX)

    @api.get("/")
    def index() -> dict:
        return {"name": "reel-driver", "links": {"health": f"{PREFIX}/health", "model": f"{PREFIX}/api/model",
                                                 "predict": f"{PREFIX}/api/predict",
                                                 "predict_batch": f"{PREFIX}/api/predict_batch",
                                                 "docs": f"{PREFIX}/docs", "openapi": f"{PREFIX}/openapi.json"}}

    @api.get("/health", responses={503: {"description": "no model is loaded"}})
    def health():
        served = champion.served
        if served is None:
            return _unavailable()
        version = served.version
        # a registry that does not answer leaves a healthy model healthy: it is reported, not failed on
        since = telemetry.unreachable_since
        reachable = {"reachable": True} if since is None else {"reachable": False, "unreachable_since": _instant(since)}
        return {"status": "ok", "model": {"name": registry.REGISTERED_MODEL, "version": version.version,
                                          "run_id": version.run_id}, "registry": reachable}

    @api.get("/api/model", responses={503: {"description": "no model is loaded"}})
    def model():
        served = champion.served
        return served.version.describe() if served else _unavailable()

    @api.post("/api/predict", response_model=Prediction, responses={503: {"description": "no model is loaded"}})
    def predict(movie: Movie, response: Response):
        served = champion.served  # read once: a swap meanwhile does not touch this request
        if served is None:
            return _unavailable()
        response.headers[VERSION_HEADER] = served.version.version
        [answer] = served.predict([movie])
        telemetry.scored(1, int(answer["prediction"]))
        return answer

    @api.post("/api/predict_batch", response_model=BatchPredictions,
              responses={503: {"description": "no model is loaded"}})
    def predict_batch(batch: Batch, response: Response):
        served = champion.served
        if served is None:
            return _unavailable()
        response.headers[VERSION_HEADER] = served.version.version
        results = served.predict(batch.items) if batch.items else []
        telemetry.scored(len(results), sum(answer["prediction"] for answer in results))
        return {"results": results}

    app.include_router(api)

    # where the owner's Prometheus scrapes every pod (prometheus.io/path: /metrics, on the API's port)
    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(telemetry.exposition(), media_type=CONTENT_TYPE)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict:
        return app.openapi()

    return app


# A poll that waits out MLflow's default retries of a tracking server (7, backing off for minutes)
# leaves health and /metrics blind to an outage that long: serve retries once, within seconds, and
# polls again anyway. The user's own settings of these variables win.
QUICK_REGISTRY = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def serve(host: str | None, port: int | None, log_requests: bool) -> None:
    settings = params.load().serve
    for name, value in QUICK_REGISTRY.items():
        os.environ.setdefault(name, value)
    # urllib3 warns of each retry of each poll while a tracking server is away; the outage is one line
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    client, where = registry.connect()
    champion = Champion(client)
    champion.refresh()
    if champion.served is None:
        log.warning("%s (store %s); health answers 503 until a version is promoted", NO_CHAMPION, where)
    uvicorn.run(create_app(champion, settings.poll_seconds), host=host or settings.host, port=port or settings.port,
                access_log=log_requests or settings.log_requests, log_level="info")
