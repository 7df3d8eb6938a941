"""Scoring raw movie rows with exactly the training feature build.

`reel-driver predict`, `reel-driver serve` and the MLflow model every train run
registers all go through ``Scorer``: the vocabulary and normalization of
models/features.json and models/normalization.json, then the booster (and the
members of models/ensemble.json, averaged with it). One path
from raw row to probability is what keeps serving equal to training. (No MLflow
here: predict does not pay for importing it.)
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import xgboost as xgb

from reel_driver.config.errors import PipelineError
from reel_driver.data import schema
from reel_driver.model import ensemble, metrics
from reel_driver.preparation import features

ID = "imdb_id"


def required_columns(spec: features.FeatureSpec) -> list[str]:
    """The raw columns the feature build reads (label and the rest are optional)."""
    return [ID, *features.CONTINUOUS, *spec.lists, *spec.categoricals, *(spec.text.sources if spec.text else [])]


def model_probabilities(booster: xgb.Booster, members: list[ensemble.Member], built: pl.DataFrame) -> np.ndarray:
    """The model's probabilities for built feature rows (any column order): the booster's, averaged
    with the ensemble's members where there are any. Evaluate scores its prepared rows with this too."""
    built = built.select(booster.feature_names)
    values, types = features.model_values(built)
    from_booster = booster.predict(xgb.DMatrix(values, feature_names=built.columns, feature_types=types,
                                               enable_categorical=True, nthread=1))
    return ensemble.probabilities(from_booster, members, built)


def load_booster(model_path: Path) -> xgb.Booster:
    booster = xgb.Booster(model_file=str(model_path))
    # one thread: scoring comes in small batches, several at once in a server, and XGBoost's
    # OpenMP threads wait busily on a shared machine: a 50-row DMatrix took 25 ms with a
    # thread per core while other work ran, 1.2 ms with one (4,000 rows: 96 -> 88 ms)
    booster.set_param({"nthread": 1})
    return booster


@dataclass(frozen=True)
class Scorer:
    spec: features.FeatureSpec
    booster: xgb.Booster
    members: list[ensemble.Member]

    @classmethod
    def load(cls, features_path: Path, normalization_path: Path, model_path: Path,
             ensemble_path: Path | None) -> "Scorer":
        return cls(features.FeatureSpec.load(features_path, normalization_path), load_booster(model_path),
                   ensemble.load(ensemble_path))

    def inputs(self, raw: pl.DataFrame) -> pl.DataFrame:
        """The columns the build needs, in schema dtypes; extra columns are ignored."""
        needed = required_columns(self.spec)
        missing = [c for c in needed if c not in raw.columns]
        if missing:
            raise PipelineError(f"input rows lack required column(s) {', '.join(missing)}")
        return schema.cast(raw, needed)

    def probabilities(self, raw: pl.DataFrame) -> np.ndarray:
        return model_probabilities(self.booster, self.members, features.build(self.inputs(raw), self.spec))

    def scored(self, raw: pl.DataFrame, threshold: float) -> pl.DataFrame:
        """imdb_id, probability and the 0/1 prediction at ``threshold``, one row per input row."""
        probability = self.probabilities(raw)
        return pl.DataFrame({
            ID: raw.get_column(ID).cast(pl.String),
            "probability": pl.Series(probability, dtype=pl.Float64),
            "prediction": pl.Series(metrics.flagged(probability, threshold), dtype=pl.Int8),
        })
