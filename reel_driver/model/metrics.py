"""Scoring: the search objectives and the hold-out metrics contract, from sklearn."""

import numpy as np
import polars as pl
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    fbeta_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

# Recall leads (seed 001), but recall alone is won by flagging everything;
# F2 weighs recall four times as much as precision and cannot be won that way.
F_BETA = 2.0


def flagged(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """The owner's rule: a probability at or above the threshold is a yes."""
    return (np.asarray(probabilities) >= threshold).astype(np.int8)


def confusion_cell(label: pl.Expr, predicted: pl.Expr) -> pl.Expr:
    """TP, FP, TN or FN for a 0/1 label and a boolean prediction."""
    return (
        pl.when(label == 1)
        .then(pl.when(predicted).then(pl.lit("TP")).otherwise(pl.lit("FN")))
        .otherwise(pl.when(predicted).then(pl.lit("FP")).otherwise(pl.lit("TN")))
    )


def objective(
    scoring: str, labels: np.ndarray, probabilities: np.ndarray, threshold: float, precision_floor: float
) -> float:
    """The search's score of one fold: higher is better."""
    if scoring == "average_precision":
        return float(average_precision_score(labels, probabilities))
    predicted = flagged(probabilities, threshold)
    if scoring == "f2":
        return float(fbeta_score(labels, predicted, beta=F_BETA, zero_division=0))
    if scoring == "recall_at_precision":
        # recall counts only while precision stays above the floor
        precision = precision_score(labels, predicted, zero_division=0)
        return float(recall_score(labels, predicted, zero_division=0)) if precision >= precision_floor else 0.0
    raise ValueError(f"unknown scoring {scoring!r}")


def scoring_name(scoring: str, threshold: float, precision_floor: float) -> str:
    """How a score is named in metrics and MLflow, with what it depends on."""
    if scoring == "f2":
        return f"f2@{threshold:g}"
    if scoring == "recall_at_precision":
        return f"recall@{threshold:g}|precision>={precision_floor:g}"
    return scoring


def evaluation(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float | int | None]:
    """The metrics contract of metrics/evaluate.json (design.md)."""
    predicted = flagged(probabilities, threshold)
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    both_classes = len(np.unique(labels)) == 2
    return {
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "f2": float(fbeta_score(labels, predicted, beta=F_BETA, zero_division=0)),
        "average_precision": float(average_precision_score(labels, probabilities)) if both_classes else None,
        "roc_auc": float(roc_auc_score(labels, probabilities)) if both_classes else None,
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "log_loss": float(log_loss(labels, probabilities, labels=[0, 1])),
        "accuracy": float(accuracy_score(labels, predicted)),
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
        "threshold": float(threshold),
        "n_test": int(len(labels)),
    }


def recall_gate(new: float, old: float | None, floor: float, drop_tolerance: float, baseline: str) -> str | None:
    """Review's rule on hold-out recall (review.* in params.yaml): why ``new`` fails against
    ``baseline``'s ``old`` (None: the baseline has none, and only the floor applies), or None."""
    if new < floor:
        return f"hold-out recall {new:.4f} is below review.recall_floor {floor:g}"
    if old is not None and old - new > drop_tolerance:
        return (f"hold-out recall fell {old - new:.4f} below {baseline}'s {old:.4f} "
                f"(review.recall_drop_tolerance {drop_tolerance:g})")
    return None
