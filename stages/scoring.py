"""Scoring raw movie rows with exactly the training feature build.

`reel-driver predict`, `reel-driver publish` and the MLflow model that
`mlflow models serve` runs all go through ``Scorer``: the vocabulary and
normalization of models/features.json and models/normalization.json, then the
booster. One path from raw row to probability is what keeps serving equal to
training.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import polars as pl
import xgboost as xgb
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema
from psycopg import sql

from stages import features, metrics, sample, schema, tracking
from stages.errors import PipelineError

ID = "imdb_id"
REGISTERED_MODEL = "reel-driver"


def required_columns(spec: features.FeatureSpec) -> list[str]:
    """The raw columns the feature build reads (label and the rest are optional)."""
    return [ID, *features.CONTINUOUS, *spec.lists, *spec.categoricals]


@dataclass(frozen=True)
class Scorer:
    spec: features.FeatureSpec
    booster: xgb.Booster

    @classmethod
    def load(cls, features_path: Path, normalization_path: Path, model_path: Path) -> "Scorer":
        return cls(features.FeatureSpec.load(features_path, normalization_path), xgb.Booster(model_file=str(model_path)))

    def inputs(self, raw: pl.DataFrame) -> pl.DataFrame:
        """The columns the build needs, in schema dtypes; extra columns are ignored."""
        needed = required_columns(self.spec)
        missing = [c for c in needed if c not in raw.columns]
        if missing:
            raise PipelineError(f"input rows lack required column(s) {', '.join(missing)}")
        return schema.cast(raw, needed)

    def probabilities(self, raw: pl.DataFrame) -> np.ndarray:
        built = features.build(self.inputs(raw), self.spec).select(self.booster.feature_names)
        return self.booster.predict(xgb.DMatrix(built.to_pandas(), enable_categorical=True))

    def scored(self, raw: pl.DataFrame, threshold: float) -> pl.DataFrame:
        """imdb_id, probability and the 0/1 prediction at ``threshold``, one row per input row."""
        probability = self.probabilities(raw)
        return pl.DataFrame({
            ID: raw.get_column(ID).cast(pl.String),
            "probability": pl.Series(probability, dtype=pl.Float64),
            "prediction": pl.Series(metrics.flagged(probability, threshold), dtype=pl.Int8),
        })


def predictions_table(table: sql.Identifier) -> sql.Composed:
    """The owner's predictions table (imdb_id, prediction, probability, cm_value, created_at),
    plus the model's identity and how each row was scored."""
    return sql.SQL("""
        CREATE TABLE IF NOT EXISTS {table} (
            imdb_id      VARCHAR(10) PRIMARY KEY,
            prediction   SMALLINT NOT NULL CHECK (prediction IN (0, 1)),
            probability  DOUBLE PRECISION NOT NULL CHECK (probability BETWEEN 0 AND 1),
            cm_value     CHAR(2) NOT NULL CHECK (cm_value IN ('TP', 'FP', 'TN', 'FN')),
            scored_by    VARCHAR(12) NOT NULL,
            model_sha256 CHAR(64) NOT NULL,
            created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        -- an older table gains the two columns; only then: ALTER TABLE locks out
        -- readers until the commit, and they should see the old rows meanwhile
        DO $publish$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {name}::regclass
                           AND attname = 'model_sha256' AND NOT attisdropped) THEN
                ALTER TABLE {table} ADD COLUMN IF NOT EXISTS scored_by VARCHAR(12),
                                    ADD COLUMN IF NOT EXISTS model_sha256 CHAR(64);
            END IF;
        END $publish$
    """).format(table=table, name=sql.Literal(table.as_string()))


def labeled(out_of_fold: pl.DataFrame, hold_out: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Every labeled movie once: training rows with their out-of-fold probability,
    hold-out rows with the trained model's, a 0/1 prediction and its confusion cell."""
    rows = pl.concat([
        out_of_fold.select(ID, "label", "probability").with_columns(scored_by=pl.lit("out_of_fold")),
        hold_out.select(ID, "label", "probability").with_columns(scored_by=pl.lit("hold_out")),
    ]).sort(ID)
    predicted = pl.col("probability") >= threshold
    return rows.select(
        ID,
        predicted.cast(pl.Int8).alias("prediction"),
        "probability",
        metrics.confusion_cell(pl.col("label"), predicted).alias("cm_value"),
        "scored_by",
    )


class ServedModel(mlflow.pyfunc.PythonModel):
    """The MLflow model behind `mlflow models serve`: raw atp.training rows in, probabilities out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        artifacts = context.artifacts
        self.scorer = Scorer.load(artifacts["features"], artifacts["normalization"], artifacts["model"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        raw = pl.from_pandas(model_input)
        return pd.DataFrame({ID: raw.get_column(ID).to_list(), "probability": self.scorer.probabilities(raw)})


def serving_signature(spec: features.FeatureSpec) -> ModelSignature:
    """What the served model takes (the raw columns the build reads; only imdb_id must be
    there, any other may be null) and returns."""
    def kind(name: str) -> Any:
        if name in spec.lists:
            return Array(DataType.string)
        return DataType.double if name in features.CONTINUOUS else DataType.string

    inputs = Schema([ColSpec(kind(name), name, required=name == ID) for name in required_columns(spec)])
    outputs = Schema([ColSpec(DataType.string, ID), ColSpec(DataType.double, "probability")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _synthetic_rows(rows: int) -> pl.DataFrame:
    """Raw rows for the models' input examples: synthetic, so no real movie goes to MLflow."""
    return sample.generate(100, seed=0).head(rows)


def serving_example(spec: features.FeatureSpec, rows: int = 3) -> pd.DataFrame:
    """The serving model's input example: raw rows."""
    raw = _synthetic_rows(rows).select(required_columns(spec))
    return raw.with_columns(pl.col(features.CONTINUOUS).cast(pl.Float64)).to_pandas()


def feature_example(spec: features.FeatureSpec, columns: list[str], rows: int = 5) -> pl.DataFrame:
    """The booster's input example: the built features of synthetic rows, in ``columns`` order."""
    raw = schema.cast(_synthetic_rows(rows), required_columns(spec))
    return features.build(raw, spec).select(columns)


def _not_the_pickle_hint(record: logging.LogRecord) -> bool:
    """MLflow warns on every log that a pickled model may run code when loaded: this one is a
    stateless ServedModel, whose code ships in code_paths, loaded from the owner's own store."""
    return "CloudPickle" not in record.getMessage()


def log_served_model(paths_: dict[str, Path], spec: features.FeatureSpec) -> None:
    """Log the pyfunc (feature build + booster) with the active MLflow run, as "serving"."""
    logging.getLogger("mlflow.pyfunc").addFilter(_not_the_pickle_hint)  # added once, however often called
    mlflow.pyfunc.log_model(
        pip_requirements=tracking.requirements(),
        name="serving",
        python_model=ServedModel(),
        artifacts={name: str(path) for name, path in paths_.items()},
        code_paths=[str(Path(__file__).parent)],
        signature=serving_signature(spec),
        input_example=serving_example(spec),
        # a new version of one registered model per run: `mlflow models serve -m models:/reel-driver/latest`
        # serves the newest without a run id
        registered_model_name=REGISTERED_MODEL,
    )
