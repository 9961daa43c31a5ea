"""GLUE metrics on small cases with known answers, including the degenerate ones."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.classification_metrics import compute


def test_accuracy_and_f1_of_the_positive_class():
    labels, preds = [1, 1, 0, 0, 1], [1, 0, 1, 0, 1]
    scores = compute(("accuracy", "f1"), labels, preds)
    assert scores["accuracy"] == pytest.approx(3 / 5)
    precision, recall = 2 / 3, 2 / 3
    assert scores["f1"] == pytest.approx(2 * precision * recall / (precision + recall))


def test_f1_is_zero_when_nothing_is_predicted_positive():
    assert compute(("f1",), [1, 0, 1], [0, 0, 0])["f1"] == 0.0


def test_matthews_correlation_known_value_and_sign():
    labels = [1, 1, 1, 0, 0, 0]
    assert compute(("matthews_correlation",), labels, labels)["matthews_correlation"] == pytest.approx(1.0)
    inverted = [1 - x for x in labels]
    assert compute(("matthews_correlation",), labels, inverted)["matthews_correlation"] == pytest.approx(-1.0)
    preds = [1, 1, 0, 0, 0, 1]  # tp=2 fn=1 tn=2 fp=1 -> (4 - 1) / sqrt(3*3*3*3)
    assert compute(("matthews_correlation",), labels, preds)["matthews_correlation"] == pytest.approx(3 / 9)


def test_matthews_correlation_is_zero_when_every_prediction_is_one_class():
    labels = [1, 0, 1, 1, 0]
    for constant in (0, 1):
        value = compute(("matthews_correlation",), labels, [constant] * 5)["matthews_correlation"]
        assert value == 0.0 and not np.isnan(value)


def test_pearson_and_spearman_match_numpy_on_real_valued_targets():
    labels = [0.0, 1.2, 2.5, 3.1, 4.8, 5.0]
    preds = [0.3, 0.9, 3.0, 2.7, 4.0, 4.9]
    scores = compute(("pearson", "spearman"), labels, preds)
    assert scores["pearson"] == pytest.approx(np.corrcoef(labels, preds)[0, 1])
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731 (no ties here)
    assert scores["spearman"] == pytest.approx(np.corrcoef(ranks(labels), ranks(preds))[0, 1])


def test_correlation_of_a_constant_prediction_is_zero_not_nan():
    scores = compute(("pearson", "spearman"), [0.5, 2.0, 4.0], [3.0, 3.0, 3.0])
    assert scores == {"pearson": 0.0, "spearman": 0.0}


def test_bad_input_is_an_error_that_says_what_is_valid():
    with pytest.raises(ValueError, match="known: accuracy"):
        compute(("acc",), [1], [1])
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        compute(("accuracy",), [1, 0], [1])
    with pytest.raises(ValueError, match="no examples"):
        compute(("accuracy",), [], [])
