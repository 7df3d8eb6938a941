"""The models averaged with XGBoost when `train.ensemble` lists them (LightGBM, CatBoost).

Each member learns from the same built features as the booster, with the search's best cell's
trees, depth, learning rate and positive weight; the model's probability is the mean of the
booster's and every member's. The members live in models/ensemble.json (an empty list when
`train.ensemble` is), so train, evaluate, predict, publish, the registered MLflow model and
`reel-driver serve` all read one file beside models/model.json. Why both are on by default:
docs/benchmarks.md#choices.
"""

import importlib.util
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from reel_driver.config.errors import PipelineError

FAMILIES = ("lightgbm", "catboost")
# CatBoost reads a category as its text; a missing one needs a text of its own
MISSING = "(missing)"
# what CatBoost's JSON model holds that differs between two identical fits
UNSTABLE = ("model_guid", "train_finish_time")


def check_installed(families: list[str]) -> None:
    """One error naming what `train.ensemble` asks for and how to install it."""
    missing = [family for family in families if importlib.util.find_spec(family) is None]
    if missing:
        raise PipelineError(f"train.ensemble lists {', '.join(missing)}, which is not installed here: "
                            "pip install -e . installs it")


def check_present(path: Path) -> None:
    """A model.json without its ensemble.json would score as XGBoost alone: refuse instead."""
    if not path.exists():
        raise PipelineError(f"{path} is missing: train writes it beside models/model.json (an empty list "
                            "when train.ensemble is); dvc checkout restores it, dvc repro train rebuilds it")


def _categoricals(built: pl.DataFrame) -> list[str]:
    return [name for name, dtype in built.schema.items() if isinstance(dtype, pl.Enum)]


def _catboost_frame(built: pl.DataFrame):
    return built.with_columns(pl.col(_categoricals(built)).cast(pl.String).fill_null(MISSING)).to_pandas()


@dataclass(frozen=True)
class Member:
    family: str
    model: Any

    def probabilities(self, built: pl.DataFrame) -> np.ndarray:
        if self.family == "lightgbm":
            # pandas categories: LightGBM maps them by the category lists it stored at fit time
            return np.asarray(self.model.predict(built.to_pandas(), num_threads=1), dtype=np.float64)
        return np.asarray(self.model.predict(_catboost_frame(built), prediction_type="Probability",
                                             thread_count=1)[:, 1], dtype=np.float64)

    def to_json(self) -> dict:
        if self.family == "lightgbm":
            return {"family": self.family, "model": self.model.model_to_string()}
        with tempfile.TemporaryDirectory(prefix="reel-driver-") as directory:
            path = Path(directory) / "model.json"
            self.model.save_model(str(path), format="json")
            model = json.loads(path.read_text())
        # a random id and the clock: without them the same fit writes the same bytes
        for unstable in UNSTABLE:
            model["model_info"].pop(unstable, None)
        return {"family": self.family, "model": model}

    @classmethod
    def from_json(cls, entry: dict) -> "Member":
        check_installed([entry["family"]])
        if entry["family"] == "lightgbm":
            import lightgbm

            return cls("lightgbm", lightgbm.Booster(model_str=entry["model"]))
        from catboost import CatBoostClassifier

        with tempfile.TemporaryDirectory(prefix="reel-driver-") as directory:
            path = Path(directory) / "model.json"
            path.write_text(json.dumps(entry["model"]))
            return cls("catboost", CatBoostClassifier().load_model(str(path), format="json"))


def fit(family: str, built: pl.DataFrame, labels: np.ndarray, cell: dict, seed: int) -> Member:
    """One member on ``built`` rows, at the best cell's shared settings."""
    trees, depth = int(cell["n_estimators"]), int(cell["max_depth"])
    if family == "lightgbm":
        import lightgbm

        training = lightgbm.Dataset(built.to_pandas(), label=labels, free_raw_data=False)
        settings = {"objective": "binary", "num_leaves": 2**depth, "max_depth": depth,
                    "learning_rate": cell["learning_rate"], "scale_pos_weight": cell["scale_pos_weight"],
                    "seed": seed, "num_threads": 1, "deterministic": True, "verbose": -1}
        return Member(family, lightgbm.train(settings, training, num_boost_round=trees))
    from catboost import CatBoostClassifier, Pool

    model = CatBoostClassifier(iterations=trees, depth=depth, learning_rate=cell["learning_rate"],
                               scale_pos_weight=cell["scale_pos_weight"], random_seed=seed, thread_count=1,
                               verbose=0, allow_writing_files=False)
    return Member(family, model.fit(Pool(_catboost_frame(built), labels, cat_features=_categoricals(built))))


def probabilities(booster_probabilities: np.ndarray, members: list[Member], built: pl.DataFrame) -> np.ndarray:
    """The model's probability: the booster's alone, or its mean with every member's."""
    if not members:
        return booster_probabilities
    return np.mean([booster_probabilities, *(member.probabilities(built) for member in members)], axis=0)


def to_json(members: list[Member]) -> dict:
    return {"members": [member.to_json() for member in members]}


def load(path: Path | None) -> list[Member]:
    """The members in ``path``; none for ``None`` (a model registered before ensembles)."""
    if path is None:
        return []
    check_present(Path(path))
    return [Member.from_json(entry) for entry in json.loads(Path(path).read_text())["members"]]
