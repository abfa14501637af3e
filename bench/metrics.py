"""Detection metrics (docs/design.md), computed with scikit-learn.

Scores are *higher = more anomalous*; outliers are the positive class for AUROC, so 0.5 is chance and
0.0 means an attack fully inverted the ranking. Values are fractions in [0, 1].
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out", "id_acc")


def _as_arrays(scores, is_outlier) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    is_outlier = np.asarray(is_outlier, dtype=bool).reshape(-1)
    if scores.shape != is_outlier.shape:
        raise ValueError("scores and is_outlier differ in length")
    if is_outlier.all() or not is_outlier.any():
        raise ValueError("need at least one inlier and one outlier")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    return scores, is_outlier


def auroc(scores, is_outlier) -> float:
    """Area under the ROC curve with outliers as positives (ties count one half)."""
    scores, is_outlier = _as_arrays(scores, is_outlier)
    return float(roc_auc_score(is_outlier, scores))


def fpr95(scores, is_outlier) -> float:
    """Fraction of outliers accepted as inliers at the threshold that accepts 95% of inliers.

    As in ATOM (Sec. 4.1) and OpenOOD v1.5: inliers are the positive class of the ROC curve computed on
    ``-score``; the result is the false-positive rate at the first point where TPR >= 0.95. (Current
    OpenOOD and pytorch-ood 0.4.0 take outliers as the positive class instead.)
    """
    scores, is_outlier = _as_arrays(scores, is_outlier)
    fpr, tpr, _ = roc_curve(~is_outlier, -scores, drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr, 0.95, side="left")])


def aupr_in(scores, is_outlier) -> float:
    """Average precision with inliers as positives (ranked by ``-score``), as the OE/ATOM code; pytorch-ood
    and OpenOOD integrate the PR curve with the trapezoid rule, which differs on ties (up to 0.5)."""
    scores, is_outlier = _as_arrays(scores, is_outlier)
    return float(average_precision_score(~is_outlier, -scores))


def aupr_out(scores, is_outlier) -> float:
    """Average precision with outliers as positives (ranked by ``score``)."""
    scores, is_outlier = _as_arrays(scores, is_outlier)
    return float(average_precision_score(is_outlier, scores))


def id_acc(predictions, labels) -> float:
    """Classification accuracy on inliers."""
    predictions = np.asarray(predictions).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if predictions.shape != labels.shape or len(labels) == 0:
        raise ValueError("predictions and labels must be non-empty and of equal length")
    return float((predictions == labels).mean())


def detection_metrics(scores, is_outlier) -> dict[str, float]:
    """auroc, fpr95, aupr_in and aupr_out of one score vector."""
    return {
        "auroc": auroc(scores, is_outlier),
        "fpr95": fpr95(scores, is_outlier),
        "aupr_in": aupr_in(scores, is_outlier),
        "aupr_out": aupr_out(scores, is_outlier),
    }
