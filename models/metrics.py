"""ROC-AUC and PR-AUC (average precision), ties handled exactly, and calibration (Brier score,
reliability bins, expected calibration error), in numpy.

Small own implementations instead of a scikit-learn dependency; checked against
brute-force definitions in tests/test_models.py.
"""

from __future__ import annotations

import numpy as np


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted half
    (the Mann-Whitney U statistic with average ranks). nan if one class is missing."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, np.float64)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), np.float64)
    # average rank per group of equal scores
    bounds = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(s)]))
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y].sum() - pos * (pos + 1) / 2.0
    return float(u / (pos * neg))


def pr_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision: sum over thresholds of (recall step) x precision, with tied
    scores forming one threshold (as scikit-learn's average_precision_score)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, np.float64)
    pos = int(y.sum())
    if pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last = np.concatenate((np.flatnonzero(np.diff(s_sorted)), [len(s) - 1]))  # end of each tie group
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / pos
    prev = np.concatenate(([0.0], recall[:-1]))
    return float(np.sum((recall - prev) * precision))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of predicted probabilities against 0/1 outcomes (lower is better;
    a constant at the base rate r scores r(1 - r)). nan when empty."""
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    return float(np.mean((p - y) ** 2)) if len(y) else float("nan")


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """The reliability diagram's points: predictions cut into ``bins`` equal-width bins of
    [0, 1] (1.0 falls in the last); for each non-empty bin its range, the mean predicted
    probability, the observed positive rate and the count."""
    y = np.asarray(y, np.float64)
    p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
    which = np.minimum((p * bins).astype(np.intp), bins - 1)
    count = np.bincount(which, minlength=bins)
    predicted = np.bincount(which, weights=p, minlength=bins)
    observed = np.bincount(which, weights=y, minlength=bins)
    return [{"lo": b / bins, "hi": (b + 1) / bins, "predicted": float(predicted[b] / count[b]),
             "observed": float(observed[b] / count[b]), "count": int(count[b])}
            for b in range(bins) if count[b]]


def calibration_error(points: list[dict[str, float]]) -> float:
    """Expected calibration error: |observed - predicted| of each bin, weighted by its count."""
    total = sum(pt["count"] for pt in points)
    if not total:
        return float("nan")
    return float(sum(pt["count"] * abs(pt["observed"] - pt["predicted"]) for pt in points) / total)
