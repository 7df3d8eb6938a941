"""Objectives and the metrics contract, on cases computed by hand."""

import numpy as np
import pytest

from reel_driver.model import metrics

LABELS = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
PROBABILITIES = np.array([0.9, 0.3, 0.4, 0.1, 0.05, 0.2, 0.2, 0.1, 0.1, 0.35])


def test_threshold_is_inclusive() -> None:
    assert metrics.flagged(np.array([0.34999, 0.35, 0.9]), 0.35).tolist() == [0, 1, 1]


def test_f2_by_hand() -> None:
    # at 0.35: TP 1 (0.9), FN 1 (0.3), FP 2 (0.4, 0.35) -> precision 1/3, recall 1/2
    # F2 = 5 * P * R / (4 * P + R) = (5/6) / (4/3 + 1/2) = 5/11
    assert metrics.objective("f2", LABELS, PROBABILITIES, 0.35, 0.5) == pytest.approx(5 / 11)


def test_flagging_everything_does_not_win_f2() -> None:
    everything = np.ones_like(PROBABILITIES)
    # recall 1, precision 0.2 -> F2 = 1 / (0.8 + 1) = 5/9 ... below a model that ranks the positives first
    assert metrics.objective("f2", LABELS, everything, 0.35, 0.5) == pytest.approx(5 / 9)
    ranked = np.array([0.9, 0.8, 0.3, 0.1, 0.05, 0.2, 0.2, 0.1, 0.1, 0.3])
    assert metrics.objective("f2", LABELS, ranked, 0.35, 0.5) == 1.0


def test_recall_under_a_precision_floor() -> None:
    # precision 1/3 is under a 0.5 floor: no credit for the recall
    assert metrics.objective("recall_at_precision", LABELS, PROBABILITIES, 0.35, 0.5) == 0.0
    assert metrics.objective("recall_at_precision", LABELS, PROBABILITIES, 0.35, 0.3) == pytest.approx(0.5)


def test_average_precision_ignores_the_threshold() -> None:
    # ranking: 0.9(+), 0.4(-), 0.35(-), 0.3(+) -> AP = (1/1 + 2/4) / 2 = 0.75
    for threshold in (0.1, 0.35, 0.9):
        assert metrics.objective("average_precision", LABELS, PROBABILITIES, threshold, 0.5) == pytest.approx(0.75)


def test_scoring_names_say_what_they_depend_on() -> None:
    assert metrics.scoring_name("f2", 0.35, 0.5) == "f2@0.35"
    assert metrics.scoring_name("recall_at_precision", 0.35, 0.5) == "recall@0.35|precision>=0.5"
    assert metrics.scoring_name("average_precision", 0.35, 0.5) == "average_precision"


def test_evaluation_contract_by_hand() -> None:
    result = metrics.evaluation(LABELS, PROBABILITIES, 0.35)
    assert list(result) == [
        "recall", "precision", "f1", "f2", "average_precision", "roc_auc", "balanced_accuracy",
        "log_loss", "accuracy", "tp", "fp", "tn", "fn", "threshold", "n_test",
    ]
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (1, 2, 6, 1)
    assert result["recall"] == 0.5 and result["precision"] == pytest.approx(1 / 3)
    assert result["f1"] == pytest.approx(0.4) and result["f2"] == pytest.approx(5 / 11)
    assert result["accuracy"] == pytest.approx(0.7)
    assert result["balanced_accuracy"] == pytest.approx((0.5 + 6 / 8) / 2)
    # positives rank 1st and 4th of 10: AUC = (8 + 6) / 16
    assert result["roc_auc"] == pytest.approx(14 / 16)
    expected_log_loss = -np.mean(LABELS * np.log(PROBABILITIES) + (1 - LABELS) * np.log(1 - PROBABILITIES))
    assert result["log_loss"] == pytest.approx(expected_log_loss)
    assert (result["threshold"], result["n_test"]) == (0.35, 10)
