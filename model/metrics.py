"""The ranking metrics every measurement uses: training's validation, retraining's report,
the head snapshots and `model.quality` (the yardstick, the probes, the everyday suite, the
sweep). One AUROC, so that a figure means the same wherever it is printed.

    >>> auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.5, 0.5, 0.9]))
    0.875
    >>> auroc(np.array([1, 1]), np.array([0.2, 0.3]))
    nan
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUROC of scores `s` for labels `y` (1 or True = positive; ties count
    half), equal to scikit-learn's `roc_auc_score` to float rounding; nan with one class."""
    pos = np.asarray(y) == 1
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(np.asarray(s))
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pr_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision (scikit-learn's), nan with one class."""
    return float(average_precision_score(y, s)) if 0 < np.sum(y) < len(y) else float("nan")
