"""Statistics of Table I: seed spread, test-sample error and the combined error of each gain.

Two sources of error are reported separately and combined in quadrature:

* the seed spread: the standard deviation over seeds (each seed has its own initialisation and, when the pool
  allows, its own training events); a gain's seed error is the root sum of squares of the two strategies'
  standard deviations, as in arXiv:2412.10665;
* the test-sample error: every cell is scored on the same finite test set. For one model it is binomial
  (accuracy) or Hanley-McNeil (AUC); for a gain it comes from a paired bootstrap over test events (the same
  resampled events score both strategies' seeds, so the correlation between them is kept).
"""

from __future__ import annotations

import math

import numpy as np

from hepfm.eval.metrics import accuracy_error, auc_error

N_BOOTSTRAP = 200


def _metric_rows(y: np.ndarray, scores: np.ndarray, idx: np.ndarray, metric: str) -> np.ndarray:
    """``metric`` of each model (rows of ``scores``) on each bootstrap resample (rows of ``idx``)."""
    from sklearn.metrics import roc_auc_score

    out = np.empty((len(idx), len(scores)))
    for b, sample in enumerate(idx):
        yb = y[sample]
        for m, s in enumerate(scores):
            sb = s[sample]
            out[b, m] = np.mean((sb >= 0.5) == (yb == 1)) if metric == "accuracy" else roc_auc_score(yb, sb)
    return out


def bootstrap_indices(y: np.ndarray, n: int = N_BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """``n`` resamples of test-event indices, stratified by class (so every resample holds both classes)."""
    rng = np.random.default_rng(seed)
    parts = [np.flatnonzero(y == c) for c in (0, 1)]
    return np.stack([np.concatenate([rng.choice(p, len(p)) for p in parts]) for _ in range(n)])


def gain_test_error(y: np.ndarray, base: list[np.ndarray], other: list[np.ndarray], metric: str,
                    n: int = N_BOOTSTRAP, seed: int = 0) -> float:
    """Test-sample error of mean(other) - mean(base) over seeds: paired bootstrap over the shared test events."""
    if not base or not other:
        return math.nan
    idx = bootstrap_indices(y, n, seed)
    values = _metric_rows(y, np.stack(other + base), idx, metric)
    diff = values[:, :len(other)].mean(axis=1) - values[:, len(other):].mean(axis=1)
    return float(diff.std(ddof=1))


def single_test_error(value: float, y: np.ndarray, metric: str) -> float:
    """Test-sample error of one model's metric: binomial (accuracy) or Hanley-McNeil (AUC)."""
    n_pos = int((y == 1).sum())
    if metric == "accuracy":
        return accuracy_error(value, len(y))
    return auc_error(value, n_pos, len(y) - n_pos)
