"""Classification metrics: accuracy, ROC curve and AUC (scikit-learn), their statistical errors, background
rejection.

Inputs are checked here (shapes, NaN, 0/1 labels, both classes present) so a bad array gives a clear
message; torch tensors are accepted and converted. Conventions: an event is called positive when
``score >= threshold``; tied scores move together, so they form one diagonal step of the ROC curve and the
AUC counts each tied (signal, background) pair as 1/2, which makes it equal to the Mann-Whitney U statistic
divided by ``n_pos * n_neg``.
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


def _checked(y_true, score, sample_weight):
    y = _binary_labels(y_true)
    s = _scores(score, len(y))
    w = _weights(sample_weight, len(y))
    pos = y.sum() if w is None else w[y].sum()
    neg = (~y).sum() if w is None else w[~y].sum()
    if pos <= 0 or neg <= 0:
        which = "positive" if pos <= 0 else "negative"
        raise ValueError(f"y_true: needs both classes (with non-zero weight); no {which} events")
    return y, s, w


def roc_curve(y_true, score, sample_weight=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve (scikit-learn): (fpr, tpr, thresholds), one point per distinct score plus the origin.

    ``thresholds[k]`` is the cut ``score >= thresholds[k]`` giving ``(fpr[k], tpr[k])``; the first
    point is (0, 0) at threshold +inf. Weights act as repetition counts.
    """
    from sklearn.metrics import roc_curve as sk_roc_curve

    y, s, w = _checked(y_true, score, sample_weight)
    fpr, tpr, thr = sk_roc_curve(y, s, sample_weight=w, drop_intermediate=False)
    thr = thr.astype(np.float64)
    thr[0] = np.inf  # scikit-learn < 1.3 used max(score) + 1
    return fpr, tpr, thr


def roc_auc(y_true, score, sample_weight=None) -> float:
    """Area under the ROC curve (scikit-learn); equals U / (n_pos n_neg) with tied pairs counted 1/2."""
    from sklearn.metrics import roc_auc_score

    y, s, w = _checked(y_true, score, sample_weight)
    return float(roc_auc_score(y, s, sample_weight=w))


def accuracy_error(acc: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on ``n`` independent test events."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    return float(np.sqrt(max(acc * (1 - acc), 0.0) / n))


def auc_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of a ROC AUC from ``n_pos`` signal and ``n_neg`` background test events
    (Hanley & McNeil 1982, exponential approximation of the score distributions)."""
    if n_pos < 1 or n_neg < 1:
        raise ValueError(f"needs events of both classes, got {n_pos} and {n_neg}")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


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


def multilabel_quality(scores, truth, train_truth, names) -> dict:
    """A multilabel model's binary flags against trivial predictors, with per-label ROC AUCs.

    ``scores`` and ``truth`` [n, L] are test-set probabilities and 0/1 flags of the binary labels, ``train_truth``
    the training set's flags. Label accuracy (threshold 0.5, averaged over events and labels) is given for the
    model, for predicting every flag absent, and for predicting each flag's majority value in the training set
    (the prior). A label whose test events are all one class has AUC None.
    """
    s = _to_numpy(scores, "scores", np.float64)
    t = _to_numpy(truth, "truth", np.float64) >= 0.5
    prior = (_to_numpy(train_truth, "train_truth", np.float64) >= 0.5).mean(axis=0)
    if s.shape != t.shape or s.ndim != 2 or prior.shape != (s.shape[1],) or len(names) != s.shape[1]:
        raise ValueError(f"shapes differ: scores {s.shape}, truth {t.shape}, train prior {prior.shape}, "
                         f"{len(names)} names")
    per_label = []
    for k, name in enumerate(names):
        both = 0 < t[:, k].sum() < len(t)
        per_label.append({"label": name, "test_rate": float(t[:, k].mean()), "train_prior": float(prior[k]),
                          "accuracy": float(((s[:, k] >= 0.5) == t[:, k]).mean()),
                          "auc": roc_auc(t[:, k], s[:, k]) if both else None})
    return {"label_accuracy": float(((s >= 0.5) == t).mean()), "all_absent_accuracy": float((~t).mean()),
            "prior_accuracy": float(((prior >= 0.5)[None, :] == t).mean()), "n_test": len(t), "labels": per_label}


#: Default (signal, background) flavour pairs and signal efficiencies of the jet-tagging figures.
TAGGING_PAIRS = (("b", "light"), ("b", "c"), ("c", "light"), ("gluon", "light"), ("b", "gluon"))
TAGGING_EFFICIENCIES = (0.5, 0.7)


def tagging_rejections(scores, y, names, pairs=TAGGING_PAIRS, efficiencies=TAGGING_EFFICIENCIES) -> list[dict]:
    """Background rejection of one flavour against another at fixed signal efficiencies.

    ``scores`` [N, C] are class probabilities, ``y`` [N] true class indices into ``names``. For a pair
    (s, b) the jets of those two flavours are ranked by D = p_s / (p_s + p_b), as taggers are; the error
    of a rejection R = 1/eps_b is binomial in the background jets that pass, R sqrt((1 - eps_b) / k)
    (the signal efficiency is taken as exact). Pairs whose flavours are absent are skipped.
    """
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(y)
    out = []
    for sig, bkg in pairs:
        if sig not in names or bkg not in names:
            continue
        i, j = names.index(sig), names.index(bkg)
        sel = (y == i) | (y == j)
        if (y == i).sum() == 0 or (y == j).sum() == 0:
            continue
        d = scores[sel, i] / np.maximum(scores[sel, i] + scores[sel, j], 1e-12)
        fpr, tpr, _ = roc_curve(y[sel] == i, d)
        n_b = int((y == j).sum())
        for eff in efficiencies:
            rej = background_rejection_at(fpr, tpr, eff)
            passed = n_b / rej if np.isfinite(rej) else 0.0
            err = rej * np.sqrt(max(1 - 1 / rej, 0.0) / passed) if passed > 0 else float("inf")
            out.append({"signal": sig, "background": bkg, "signal_efficiency": eff, "rejection": float(rej),
                        "rejection_error": float(err), "n_signal": int((y == i).sum()), "n_background": n_b,
                        "auc": roc_auc(y[sel] == i, d)})
    return out
