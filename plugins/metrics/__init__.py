"""Built-in metrics, each computed once on the full test predictions with scikit-learn's definition.

Conventions (the ones scikit-learn uses, stated here because they change numbers):
- ``macro_f1``: unweighted mean of per-class F1 over *all* dataset classes (``labels=range(K)``); a
  class that is never predicted and never present counts as F1 = 0 (``zero_division=0``).
- ``balanced_accuracy``: mean recall over the classes present in ``y_true``.
- ``mcc``: the multi-class Matthews correlation (Gorodkin's R_K); 0 when it is undefined.
- ``auroc``: binary -> AUROC of the positive class's probability; multi-class -> macro one-vs-rest
  over the classes present in ``y_true`` (probabilities renormalised over them), undefined (recorded as
  missing) with fewer than two classes present.
- ``ece``: expected calibration error of the top-1 confidence, 15 equal-width bins (Guo et al., 2017).
"""

from __future__ import annotations

import numpy as np

from harness import MetricSpec, hookimpl


def macro_f1(y_true: np.ndarray, probs: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return f1_score(y_true, probs.argmax(1), average="macro", labels=np.arange(probs.shape[1]),
                    zero_division=0)


def balanced_accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return balanced_accuracy_score(y_true, probs.argmax(1))


def mcc(y_true: np.ndarray, probs: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return matthews_corrcoef(y_true, probs.argmax(1))


def accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return accuracy_score(y_true, probs.argmax(1))


def auroc(y_true: np.ndarray, probs: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    present = np.unique(y_true)
    if len(present) < 2:
        raise ValueError(f"AUROC needs at least two classes in y_true; found {present.tolist()}")
    if probs.shape[1] == 2:
        return roc_auc_score(y_true, probs[:, 1])
    scores = probs[:, present]
    scores = scores / np.clip(scores.sum(1, keepdims=True), 1e-12, None)
    if len(present) == 2:
        return roc_auc_score(y_true == present[1], scores[:, 1])
    return roc_auc_score(y_true, scores, multi_class="ovr", average="macro", labels=present)


def ece(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    confidence = probs.max(1)
    correct = (probs.argmax(1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


@hookimpl
def register_metrics(register):
    sk = "scikit-learn"
    register(MetricSpec("macro_f1", "Macro-averaged F1 over all classes", macro_f1, f"{sk} f1_score(average='macro')"))
    register(MetricSpec("balanced_accuracy", "Balanced accuracy (mean per-class recall)", balanced_accuracy,
                        f"{sk} balanced_accuracy_score"))
    register(MetricSpec("mcc", "Matthews correlation coefficient (multi-class)", mcc, f"{sk} matthews_corrcoef"))
    register(MetricSpec("accuracy", "Top-1 accuracy", accuracy, f"{sk} accuracy_score"))
    register(MetricSpec("auroc", "AUROC: binary, or macro one-vs-rest", auroc, f"{sk} roc_auc_score"))
    register(MetricSpec("ece", "Expected calibration error, 15 bins", ece, "Guo et al. 2017", higher_is_better=False))
