"""Collapse detection: scores that depend on the object multiplicity alone are flagged, healthy ones are not."""

import numpy as np
import pytest

from hepfm.eval.collapse import collapse_check
from hepfm.testing import toy_events


@pytest.fixture(scope="module")
def events():
    objects, n = toy_events(2000, seed=3)
    return objects, n


def test_scores_that_are_a_function_of_multiplicity_are_collapsed(events):
    _, n = events
    levels = np.random.default_rng(0).random(n.max() + 1)
    scores = 1 / (1 + np.exp(-(levels[n] - 0.5)))  # the failure: one score per object count
    check = collapse_check(scores, n)
    assert check["collapsed"] and not check["constant"]
    assert check["within_multiplicity_fraction"] < 1e-12
    assert check["distinct_values"] == check["multiplicities"] == len(np.unique(n))
    assert collapse_check(np.full(len(n), 0.5), n)["collapsed"]  # constant output
    assert collapse_check(np.full(len(n), 0.5), n)["constant"]


def test_healthy_scores_are_not_collapsed_even_when_correlated_with_multiplicity(events):
    objects, n = events
    ht = objects[:, :, 0].sum(axis=1)  # grows with the multiplicity but varies within each count
    scores = 1 / (1 + np.exp(-(ht - np.median(ht)) / ht.std()))
    check = collapse_check(scores, n)
    assert not check["collapsed"] and check["distinct_fraction"] > 0.9
    assert np.corrcoef(scores, n)[0, 1] > 0.3
    # Saturated but healthy: many exact 0/1 scores do not make a collapse.
    saturated = np.clip(np.round(scores * 3 - 1, 0), 0, 1) * 0.98 + 0.01 * (ht / ht.max())
    assert not collapse_check(saturated, n)["collapsed"]


def test_bad_input():
    with pytest.raises(ValueError):
        collapse_check([0.1, 0.2], [1])
