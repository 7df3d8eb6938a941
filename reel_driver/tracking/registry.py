"""The MLflow model registry: each train run registers its serving model as a version of
`reel-driver`, evaluate records the hold-out metrics and threshold on that version,
`reel-driver promote` moves the `champion` alias and `reel-driver serve` serves it.

A version's tags are written once: evaluating the same model again with another
threshold (or other hold-out rows) registers a new version of it, so the champion
never changes under the server without a promote.
"""

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow.artifacts
import mlflow.pyfunc
import pandas as pd
import polars as pl
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

from reel_driver.config.errors import PipelineError, first_line
from reel_driver.data import schema
from reel_driver.model import scoring
from reel_driver.preparation import features
from reel_driver.tracking import runs

log = logging.getLogger("reel_driver.registry")

REGISTERED_MODEL = "reel-driver"
CHAMPION = "champion"
# tags of a version: train writes the first two, evaluate the rest
MODEL_SHA256 = "model_sha256"
TRAINING_ROWS = "training_rows"
THRESHOLD = "threshold"
HOLD_OUT = "hold_out_metrics"
EVALUATE_RUN = "evaluate_run_id"
FORCED = "promoted_by_force"
# the weekly job's verdict on a version it trained (`passed` or `refused: why`), on the version and its run
GATE = "retrain_gate"


class ServedModel(mlflow.pyfunc.PythonModel):
    """The logged pyfunc: raw atp.training rows in, probabilities out (`mlflow models serve`
    runs it; `reel-driver serve` loads the same artifacts into a ``Scorer``)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        artifacts = context.artifacts
        self.scorer = scoring.Scorer.load(artifacts["features"], artifacts["normalization"], artifacts["model"],
                                          artifacts.get("ensemble"))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        raw = pl.from_pandas(model_input)
        return pd.DataFrame({scoring.ID: raw.get_column(scoring.ID).to_list(),
                             "probability": self.scorer.probabilities(raw)})


def serving_signature(spec: features.FeatureSpec) -> ModelSignature:
    """What the served model takes (the raw columns the build reads; only imdb_id must be
    there, any other may be null) and returns."""
    def kind(name: str) -> Any:
        if name in spec.lists:
            return Array(DataType.string)
        return DataType.double if name in features.CONTINUOUS else DataType.string

    inputs = Schema([ColSpec(kind(name), name, required=name == scoring.ID) for name in scoring.required_columns(spec)])
    outputs = Schema([ColSpec(DataType.string, scoring.ID), ColSpec(DataType.double, "probability")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def serving_example(spec: features.FeatureSpec) -> pd.DataFrame:
    """The serving model's input example, made up from the spec alone so that no movie goes to
    MLflow: one row at the middle of every training range with the first value of every
    vocabulary, and one row with nothing but an id."""
    middle: dict[str, Any] = {scoring.ID: "tt0000000"}
    for column, bounds in spec.normalization.items():
        known = bounds.min is not None and bounds.max is not None
        middle[column] = round((bounds.min + bounds.max) / 2, 1) if known else None
    for column, encoding in spec.lists.items():
        middle[column] = encoding.values[:1]
    for column, vocabulary in spec.categoricals.items():
        middle[column] = vocabulary[0] if vocabulary else None
    for column in spec.text.sources if spec.text else []:
        middle[column] = " ".join(spec.text.vocabulary[:3])
    bare = {column: None for column in middle} | {scoring.ID: "tt0000001"}
    dtypes = {name: schema.BY_NAME[name].dtype for name in middle}
    dtypes |= {name: pl.Float64 for name in features.CONTINUOUS}
    return pl.DataFrame([middle, bare], schema=dtypes).to_pandas()


def feature_example(spec: features.FeatureSpec, columns: list[str]) -> pl.DataFrame:
    """The booster's input example: ``serving_example`` through the feature build, in ``columns`` order."""
    raw = schema.cast(pl.from_pandas(serving_example(spec)), scoring.required_columns(spec))
    return features.build(raw, spec).select(columns)


def _not_the_pickle_hint(record: logging.LogRecord) -> bool:
    """MLflow warns on every log that a pickled model may run code when loaded: this one is a
    stateless ServedModel, whose code ships in code_paths, loaded from the owner's own store."""
    return "CloudPickle" not in record.getMessage()


def log_served_model(paths_: dict[str, Path], spec: features.FeatureSpec, training_rows: int,
                     families: list[str]) -> str:
    """Log the pyfunc (feature build + booster, and the ensemble's ``families``) with the active run
    as "serving" and register it as a new version of `reel-driver`; returns the version."""
    logging.getLogger("mlflow.pyfunc").addFilter(_not_the_pickle_hint)  # added once, however often called
    info = mlflow.pyfunc.log_model(
        pip_requirements=runs.requirements(families),
        name="serving",
        python_model=ServedModel(),
        artifacts={name: str(path) for name, path in paths_.items()},
        code_paths=[str(Path(__file__).parents[1])],  # the whole reel_driver package
        signature=serving_signature(spec),
        input_example=serving_example(spec),
        registered_model_name=REGISTERED_MODEL,
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    identity = runs.model_sha256(paths_["model"], paths_.get("ensemble"))
    for key, value in {MODEL_SHA256: identity, TRAINING_ROWS: str(training_rows)}.items():
        client.set_model_version_tag(REGISTERED_MODEL, version, key, value)
    return version


@dataclass(frozen=True)
class Version:
    """A registered version as serving and promotion see it."""

    version: str
    run_id: str
    model_sha256: str
    trained_at: str
    training_rows: int | None
    threshold: float | None
    hold_out: dict | None
    tags: dict[str, str]

    @classmethod
    def of(cls, found: ModelVersion) -> "Version":
        tags = dict(found.tags)
        created = datetime.fromtimestamp(found.creation_timestamp / 1000, UTC)
        return cls(
            version=str(found.version),
            run_id=found.run_id or "",
            model_sha256=tags.get(MODEL_SHA256, ""),
            trained_at=created.isoformat(timespec="seconds"),
            training_rows=int(tags[TRAINING_ROWS]) if TRAINING_ROWS in tags else None,
            threshold=float(tags[THRESHOLD]) if THRESHOLD in tags else None,
            hold_out=json.loads(tags[HOLD_OUT]) if HOLD_OUT in tags else None,
            tags=tags,
        )

    def describe(self) -> dict:
        """The served model, as `GET /reel-driver/api/model` answers."""
        return {"name": REGISTERED_MODEL, "version": self.version, "run_id": self.run_id,
                "model_sha256": self.model_sha256, "threshold": self.threshold, "trained_at": self.trained_at,
                "training_rows": self.training_rows, "hold_out": self.hold_out}


def _versions(client: MlflowClient, model_sha256: str) -> list[ModelVersion]:
    """The versions of one model file, newest first."""
    found = client.search_model_versions(f"name = '{REGISTERED_MODEL}' and tags.{MODEL_SHA256} = '{model_sha256}'")
    return sorted(found, key=lambda v: int(v.version), reverse=True)


def record_evaluation(model_sha256: str, scores: dict, evaluate_run_id: str) -> str | None:
    """Write the hold-out metrics and threshold on the newest version of this model; a version
    that holds another evaluation already is left as it is, and a new version of the same
    model takes this one. Returns the version, or None when no version has this model."""
    client = MlflowClient()
    versions = _versions(client, model_sha256)
    if not versions:
        log.warning("no version of %s holds model %s (its train run was not recorded): the hold-out "
                    "metrics are in the evaluate run only, and promote cannot use it", REGISTERED_MODEL,
                    model_sha256[:12])
        return None
    newest = versions[0]
    evaluation = {THRESHOLD: repr(float(scores["threshold"])), HOLD_OUT: json.dumps(scores, sort_keys=True),
                  EVALUATE_RUN: evaluate_run_id}
    if HOLD_OUT in newest.tags and json.loads(newest.tags[HOLD_OUT]) == scores:
        return str(newest.version)  # the same evaluation again (dvc repro -f)
    if HOLD_OUT not in newest.tags:
        for key, value in evaluation.items():
            client.set_model_version_tag(REGISTERED_MODEL, newest.version, key, value)
        return str(newest.version)
    trained = {key: newest.tags[key] for key in (MODEL_SHA256, TRAINING_ROWS) if key in newest.tags}
    again = client.create_model_version(REGISTERED_MODEL, newest.source, run_id=newest.run_id,
                                        tags=trained | evaluation, model_id=newest.model_id)
    return str(again.version)


def connect() -> tuple[MlflowClient, str]:
    """A client of the repository's store (MLFLOW_TRACKING_URI overrides it) and where that is."""
    where = runs.use_store()
    return MlflowClient(), where


def get(client: MlflowClient, version: str) -> Version:
    try:
        return Version.of(client.get_model_version(REGISTERED_MODEL, version))
    except MlflowException as error:
        raise PipelineError(f"{REGISTERED_MODEL} has no version {version} ({first_line(error)})") from None


def champion(client: MlflowClient) -> Version | None:
    """The version the `champion` alias points at, or None (no alias, or no registered model yet)."""
    try:
        return Version.of(client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION))
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def of_model_file(client: MlflowClient, model: Path, ensemble: Path | None) -> Version:
    """The newest version of the workspace's model (models/model.json and models/ensemble.json)."""
    if not model.exists():
        raise PipelineError(f"{model} does not exist: run dvc repro first, or name a version")
    sha = runs.model_sha256(model, ensemble)
    versions = _versions(client, sha)
    if not versions:
        raise PipelineError(f"no version of {REGISTERED_MODEL} holds {model} (sha256 {sha[:12]}): its train run "
                            "was not recorded in this store; run dvc repro -f train with the store reachable")
    return Version.of(versions[0])


def promote(client: MlflowClient, version: Version, forced_because: str | None) -> None:
    if forced_because:
        client.set_model_version_tag(REGISTERED_MODEL, version.version, FORCED, forced_because)
    client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, version.version)


def record_gate(client: MlflowClient, version: Version, verdict: str) -> None:
    client.set_model_version_tag(REGISTERED_MODEL, version.version, GATE, verdict)
    if version.run_id:
        client.set_tag(version.run_id, GATE, verdict)


def load_scorer(version: Version) -> scoring.Scorer:
    """The version's feature spec and booster, read from its logged artifacts; the model file
    is checked against the sha256 train recorded."""
    with tempfile.TemporaryDirectory(prefix="reel-driver-") as directory:
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{REGISTERED_MODEL}/{version.version}",
                                                         dst_path=directory))
        artifacts = Model.load(local / "MLmodel").flavors["python_function"]["artifacts"]
        files = {name: local / entry["path"] for name, entry in artifacts.items()}
        if version.model_sha256 and runs.model_sha256(files["model"], files.get("ensemble")) != version.model_sha256:
            raise PipelineError(f"{REGISTERED_MODEL} version {version.version}: its model files do not match "
                                f"the sha256 train recorded ({version.model_sha256[:12]})")
        return scoring.Scorer.load(files["features"], files["normalization"], files["model"], files.get("ensemble"))

