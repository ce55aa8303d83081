"""Metrics equal scikit-learn's definitions, on the full arrays, including edge cases."""

import numpy as np
import pytest
from sklearn import metrics as skm

from plugins import metrics as hm


def _probs(pred, k, rng):
    p = rng.random((len(pred), k)) * 0.5
    p[np.arange(len(pred)), pred] += 1.0
    return p / p.sum(1, keepdims=True)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_multiclass_against_sklearn(rng):
    y = rng.integers(0, 5, 300)
    pred = np.where(rng.random(300) < 0.6, y, rng.integers(0, 5, 300))
    p = _probs(pred, 5, rng)
    assert hm.macro_f1(y, p) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert hm.balanced_accuracy(y, p) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert hm.mcc(y, p) == pytest.approx(skm.matthews_corrcoef(y, pred))
    assert hm.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, pred))
    assert hm.auroc(y, p) == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))


def test_class_never_predicted_counts_as_zero_f1(rng):
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 1])  # class 2 never predicted
    p = _probs(pred, 3, rng)
    expected = skm.f1_score(y, pred, average="macro", labels=[0, 1, 2], zero_division=0)
    assert hm.macro_f1(y, p) == pytest.approx(expected)
    assert hm.macro_f1(y, p) == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_class_absent_from_truth_and_predictions(rng):
    # 4 dataset classes, class 3 appears nowhere: it still counts in the macro mean (as 0).
    y = np.array([0, 1, 2, 0, 1, 2])
    p = _probs(y, 4, rng)
    assert hm.macro_f1(y, p) == pytest.approx(
        skm.f1_score(y, y, average="macro", labels=[0, 1, 2, 3], zero_division=0))
    assert hm.balanced_accuracy(y, p) == pytest.approx(1.0)
    # AUROC over the classes present, probabilities renormalised over them
    sub = p[:, :3] / p[:, :3].sum(1, keepdims=True)
    assert hm.auroc(y, p) == pytest.approx(skm.roc_auc_score(y, sub, multi_class="ovr"))


def test_binary(rng):
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    p = np.stack([1 - p1, p1], 1)
    pred = p.argmax(1)
    assert hm.auroc(y, p) == pytest.approx(skm.roc_auc_score(y, p1))
    assert hm.macro_f1(y, p) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert hm.mcc(y, p) == pytest.approx(skm.matthews_corrcoef(y, pred))


def test_auroc_undefined_with_one_class_raises():
    with pytest.raises(ValueError, match="two classes"):
        hm.auroc(np.zeros(5, int), np.full((5, 2), 0.5))


def test_ece_perfectly_calibrated_and_overconfident():
    y = np.array([0, 1, 0, 1])
    confident_right = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert hm.ece(y, confident_right) == pytest.approx(0.0)
    confident_wrong = confident_right[:, ::-1]
    assert hm.ece(y, confident_wrong) == pytest.approx(1.0)
