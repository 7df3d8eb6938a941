"""What train and evaluate record in MLflow: one run per execution, its params, tags, metrics
and artifacts, and for train the registered serving model.

MLflow is imported inside each function: train starts its import in the background
(``runs.open_in_background``) while the search runs.
"""

import logging
import warnings
from pathlib import Path

from reel_driver.config import params
from reel_driver.model import search
from reel_driver.preparation import features
from reel_driver.tracking import runs

_TRAIN_LOG = logging.getLogger("reel_driver.train")
_EVALUATE_LOG = logging.getLogger("reel_driver.evaluate")


def train_run(settings: params.Params, summary_: dict, seconds: float, booster, columns: list[str],
              training_rows: int, served: dict[str, Path], training_data: Path, artifacts: list[Path]) -> None:
    """The train run: grid, search settings and best cell as params, the model's identity and the
    training data's hash as tags, the search's figures, ``artifacts``, the XGBoost model, and the
    serving model (``served``: features, normalization, model, ensemble) registered as a version."""
    # imported here: runs.open_in_background has loaded them beside the search
    import mlflow
    import mlflow.xgboost

    from reel_driver.tracking import registry

    with runs.run("train"):
        mlflow.log_params({
            **{f"grid.{k}": v for k, v in settings.grid.items()},
            **{f"search.{k}": v for k, v in settings.search.model_dump().items()},
            "train.device": settings.train.device,
            "train.ensemble": ",".join(settings.train.ensemble) or "none",
            **{f"best.{k}": v for k, v in summary_["best_params"].items()},
        })
        mlflow.set_tags({"model_sha256": runs.model_sha256(served["model"], served["ensemble"]),
                         "train_data_sha256": runs.sha256(training_data)})
        mlflow.log_metrics({"cv_best_score": summary_["best_cv_score"], "search_seconds": seconds,
                            "configurations": summary_["configurations"], "fits": summary_["fits"],
                            "boosting_rounds": summary_["boosting_rounds"]})
        for path in artifacts:
            mlflow.log_artifact(str(path))
        spec = features.FeatureSpec.load(served["features"], served["normalization"])
        built = registry.feature_example(spec, columns)
        example = built.to_pandas()
        # MLflow tries the example as a JSON serving request, which cannot carry the
        # pandas categories the booster reads, and warns; this flavor is for loading
        # the booster, not for serving raw rows, so those warnings are noise here.
        # mlflow.pyfunc announces at INFO, on every run, that it checks the serving
        # model's example against its signature: a failed check still raises.
        for noisy, level in (("mlflow.models.model", logging.ERROR), ("mlflow.utils.requirements_utils", logging.ERROR),
                             ("mlflow.pyfunc", logging.WARNING)):
            logging.getLogger(noisy).setLevel(level)
        with warnings.catch_warnings():
            # the integer columns are the one-hot ones, which the feature build never leaves empty
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
            signature = mlflow.models.infer_signature(example, booster.predict(search.matrix(built)))
        mlflow.xgboost.log_model(booster, name="model", model_format="json", input_example=example,
                                 pip_requirements=runs.requirements(), signature=signature)
        version = registry.log_served_model(served, spec, training_rows, settings.train.ensemble)
        _TRAIN_LOG.info("registered %s version %s (`reel-driver promote` makes it the served champion)",
                        registry.REGISTERED_MODEL, version)


def evaluate_run(settings: params.EvaluateParams, scores: dict, artifacts: list[Path], model: Path,
                 ensemble: Path) -> None:
    """The evaluate run: its params, the model's identity, the hold-out metrics and files; the
    registered version of this model gets the hold-out metrics and threshold, which promote gates
    on and serve answers with."""
    import mlflow

    from reel_driver.tracking import registry

    with runs.run("evaluate") as active:
        model_sha256 = runs.model_sha256(model, ensemble)
        mlflow.log_params({f"evaluate.{k}": v for k, v in settings.model_dump().items()})
        mlflow.set_tag("model_sha256", model_sha256)
        mlflow.log_metrics({f"test_{k}": v for k, v in scores.items() if v is not None})
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path="evaluate")
        if active is not None and (version := registry.record_evaluation(model_sha256, scores, active.info.run_id)):
            _EVALUATE_LOG.info("hold-out metrics recorded on %s version %s", registry.REGISTERED_MODEL, version)
