"""Collapse detection: is a classifier's score a function of the object multiplicity alone?

A GraphNet trained at too high a learning rate can collapse onto the number of objects per event: its
scores take one value per multiplicity (4,000 test events, 32 distinct scores), and its accuracy is what a
cut on ``n_objects`` gives. Two numbers describe it:

* ``distinct_fraction``: distinct score values / events (a healthy model is close to 1);
* ``within_multiplicity_fraction``: the variance of the scores *within* groups of equal multiplicity,
  as a fraction of their total variance (0 when the score depends on the multiplicity only).

A model is collapsed when its scores are constant or ``within_multiplicity_fraction`` is below
``threshold``. The distinct-value count alone is not used: a confident, healthy model may saturate its
float32 sigmoid at exactly 0 or 1 for many events.
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.02


def collapse_check(scores, n_objects, threshold: float = THRESHOLD) -> dict:
    """Diagnose ``scores`` [n] against ``n_objects`` [n]; returns the numbers above and ``collapsed``."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    n = np.asarray(n_objects).ravel()
    if len(s) != len(n) or len(s) == 0:
        raise ValueError(f"scores ({len(s)}) and n_objects ({len(n)}) must be non-empty and of equal length")
    distinct = len(np.unique(s.astype(np.float32)))
    total = float(s.var())
    groups, inverse = np.unique(n, return_inverse=True)
    means = np.bincount(inverse, weights=s) / np.bincount(inverse)
    within = float(np.mean((s - means[inverse]) ** 2))
    fraction = within / total if total > 1e-12 else 0.0
    return {"distinct_values": distinct, "distinct_fraction": distinct / len(s), "multiplicities": len(groups),
            "within_multiplicity_fraction": fraction, "constant": total <= 1e-12,
            "collapsed": bool(total <= 1e-12 or fraction < threshold)}
