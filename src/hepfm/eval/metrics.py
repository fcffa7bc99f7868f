"""Classification metrics: accuracy, exact tie-aware ROC curve and AUC, background rejection.

Everything is plain numpy and O(n log n); torch tensors are accepted and converted. Conventions:
an event is called positive when ``score >= threshold``; tied scores move together, so they form one
diagonal step of the ROC curve and the AUC counts each tied (signal, background) pair as 1/2, which makes
it equal to the Mann-Whitney U statistic divided by ``n_pos * n_neg``.
"""

from __future__ import annotations

import numpy as np


def _to_numpy(x, name: str, dtype=None) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu()
        x = (x.double() if x.is_floating_point() else x).numpy()
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: cannot convert to a numeric array ({err})") from None
    return arr


def _binary_labels(y_true) -> np.ndarray:
    y = _to_numpy(y_true, "y_true")
    if y.ndim != 1:
        raise ValueError(f"y_true: expected a 1-d array of 0/1 labels, got shape {y.shape}")
    if y.dtype == bool:
        return y
    if not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"y_true: expected 0/1 labels, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating) and np.isnan(y).any():
        raise ValueError("y_true: contains NaN")
    bad = (y != 0) & (y != 1)
    if bad.any():
        raise ValueError(f"y_true: labels must be 0 or 1, found {np.unique(y[bad])[:5].tolist()}")
    return y == 1


def _scores(score, n: int) -> np.ndarray:
    s = _to_numpy(score, "score", dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"score: expected a 1-d array, got shape {s.shape}")
    if len(s) != n:
        raise ValueError(f"score: length {len(s)} does not match y_true length {n}")
    if np.isnan(s).any():
        raise ValueError(f"score: contains {int(np.isnan(s).sum())} NaN value(s)")
    return s


def _weights(sample_weight, n: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    w = _to_numpy(sample_weight, "sample_weight", dtype=np.float64)
    if w.ndim != 1 or len(w) != n:
        raise ValueError(f"sample_weight: expected shape ({n},), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight: weights must be finite and non-negative")
    return w


def accuracy(y_true, score, threshold: float = 0.5) -> float:
    """Fraction of events whose predicted class (``score >= threshold``) equals the 0/1 label."""
    y = _binary_labels(y_true)
    s = _scores(score, len(y))
    if len(y) == 0:
        raise ValueError("y_true: empty")
    return float(np.mean((s >= threshold) == y))


def multiclass_accuracy(y_true, logits_or_probs) -> float:
    """Fraction of events whose argmax over classes (axis 1) equals the integer label."""
    y = _to_numpy(y_true, "y_true")
    p = _to_numpy(logits_or_probs, "logits_or_probs", dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"logits_or_probs: expected shape [n, n_classes], got {p.shape}")
    if y.ndim != 1 or len(y) != len(p):
        raise ValueError(f"y_true: expected shape ({len(p)},), got {y.shape}")
    if len(y) == 0:
        raise ValueError("y_true: empty")
    if np.isnan(p).any():
        raise ValueError("logits_or_probs: contains NaN")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(y == np.round(y)):
            raise ValueError("y_true: expected integer class labels")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"y_true: labels must lie in [0, {p.shape[1]}), found [{y.min()}, {y.max()}]")
    return float(np.mean(np.argmax(p, axis=1) == y))


def _cumulative_counts(y_true, score, sample_weight):
    """(fps, tps, distinct thresholds) at each distinct score, highest score first."""
    y = _binary_labels(y_true)
    s = _scores(score, len(y))
    w = _weights(sample_weight, len(y))
    pos_w = y.astype(np.float64) if w is None else np.where(y, w, 0.0)
    neg_w = (~y).astype(np.float64) if w is None else np.where(y, 0.0, w)
    if pos_w.sum() <= 0 or neg_w.sum() <= 0:
        which = "positive" if pos_w.sum() <= 0 else "negative"
        raise ValueError(f"y_true: needs both classes (with non-zero weight); no {which} events")
    order = np.argsort(-s, kind="stable")
    s = s[order]
    tps = np.cumsum(pos_w[order])
    fps = np.cumsum(neg_w[order])
    # The last index of each run of equal scores: ties cross the threshold together.
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    return fps[last], tps[last], s[last]


def roc_curve(y_true, score, sample_weight=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC curve: (fpr, tpr, thresholds), one point per distinct score plus the origin.

    ``thresholds[k]`` is the cut ``score >= thresholds[k]`` giving ``(fpr[k], tpr[k])``; the first
    point is (0, 0) at threshold +inf. Weights act as repetition counts.
    """
    fps, tps, thr = _cumulative_counts(y_true, score, sample_weight)
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return fpr, tpr, np.r_[np.inf, thr]


def roc_auc(y_true, score, sample_weight=None) -> float:
    """Area under the exact ROC curve; equals U / (n_pos n_neg) with ties counted 1/2."""
    fps, tps, _ = _cumulative_counts(y_true, score, sample_weight)
    fps = np.r_[0.0, fps]
    tps = np.r_[0.0, tps]
    # Trapezoids on raw counts: a tied block contributes (its negatives) x (positives above + half its own).
    area = np.sum(np.diff(fps) * (tps[1:] + tps[:-1])) / 2.0
    return float(area / (fps[-1] * tps[-1]))


def background_rejection_at(fpr, tpr, signal_eff):
    """Background rejection 1/fpr at signal efficiency ``signal_eff`` (scalar or array) on a ROC curve.

    ``fpr``/``tpr`` as from :func:`roc_curve` (tpr non-decreasing). Between two ROC points the fpr is
    interpolated linearly (the operating points in between are reachable by mixing the two cuts).
    Returns inf where fpr is 0.
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    eff = np.asarray(signal_eff, dtype=np.float64)
    if fpr.shape != tpr.shape or fpr.ndim != 1 or len(fpr) < 2:
        raise ValueError("fpr, tpr: expected two 1-d arrays of equal length >= 2")
    if np.any(np.diff(tpr) < 0) or np.any(np.diff(fpr) < 0):
        raise ValueError("fpr, tpr: must be non-decreasing (as returned by roc_curve)")
    if np.any(~np.isfinite(eff)) or np.any(eff <= 0) or np.any(eff > tpr[-1]):
        raise ValueError(f"signal_eff: must lie in (0, {tpr[-1]}], got {signal_eff}")
    k = np.clip(np.searchsorted(tpr, eff, side="left"), 1, len(tpr) - 1)  # first point with tpr >= eff
    t0, t1, f0, f1 = tpr[k - 1], tpr[k], fpr[k - 1], fpr[k]
    frac = np.where(t1 > t0, (eff - t0) / np.where(t1 > t0, t1 - t0, 1.0), 1.0)
    f = f0 + frac * (f1 - f0)
    with np.errstate(divide="ignore"):
        rej = np.where(f > 0, 1.0 / np.where(f > 0, f, 1.0), np.inf)
    return float(rej) if rej.ndim == 0 else rej
