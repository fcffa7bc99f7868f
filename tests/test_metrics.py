import numpy as np
import pytest

from hepfm.eval import metrics as m

scipy_stats = pytest.importorskip("scipy.stats")


def _mwu_auc(y, s):
    res = scipy_stats.mannwhitneyu(s[y == 1], s[y == 0], alternative="two-sided", method="asymptotic")
    return res.statistic / ((y == 1).sum() * (y == 0).sum())


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_mann_whitney_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    y = (rng.random(n) < 0.3).astype(int)
    # Few distinct scores so most events are tied; signal shifted up a little.
    s = np.round(rng.normal(0.3 * y, 1.0), 1)
    assert len(np.unique(s)) < 100
    assert m.roc_auc(y, s) == pytest.approx(_mwu_auc(y, s), abs=1e-12)


def test_auc_brute_force_pairs_small():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 60)
    s = rng.integers(0, 5, 60).astype(float)
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert m.roc_auc(y, s) == pytest.approx(brute, abs=1e-12)


def test_perfect_inverted_constant_scores():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    assert m.roc_auc(y, s) == 1.0
    assert m.roc_auc(y, -s) == 0.0
    assert m.roc_auc(y, np.full(6, 0.4)) == 0.5
    fpr, tpr, thr = m.roc_curve(y, np.full(6, 0.4))
    np.testing.assert_array_equal(fpr, [0, 1])
    np.testing.assert_array_equal(tpr, [0, 1])
    assert thr[0] == np.inf and thr[1] == 0.4
    fpr, tpr, _ = m.roc_curve(y, s)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_roc_curve_one_point_per_distinct_score():
    y = np.array([1, 0, 1, 0, 1])
    s = np.array([0.9, 0.9, 0.5, 0.5, 0.1])
    fpr, tpr, thr = m.roc_curve(y, s)
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.5, 0.1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(fpr, [0, 0.5, 1, 1])


def test_integer_weights_equal_repetition():
    rng = np.random.default_rng(3)
    n = 500
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n), 2)
    w = rng.integers(0, 4, n)
    y_rep, s_rep = np.repeat(y, w), np.repeat(s, w)
    assert m.roc_auc(y, s, sample_weight=w) == pytest.approx(m.roc_auc(y_rep, s_rep), abs=1e-12)
    fpr_w, tpr_w, thr_w = m.roc_curve(y, s, sample_weight=w)
    fpr_r, tpr_r, thr_r = m.roc_curve(y_rep, s_rep)
    # Scores whose events all have weight 0 add a point that does not move the curve.
    keep = np.r_[True, (np.diff(fpr_w) > 0) | (np.diff(tpr_w) > 0)]
    np.testing.assert_allclose(fpr_w[keep], fpr_r)
    np.testing.assert_allclose(tpr_w[keep], tpr_r)
    np.testing.assert_array_equal(thr_w[keep], thr_r)


def test_torch_inputs_accepted():
    torch = pytest.importorskip("torch")
    y = torch.tensor([0, 1, 1, 0])
    s = torch.tensor([0.2, 0.7, 0.4, 0.6], dtype=torch.bfloat16)
    assert m.roc_auc(y, s) == 0.75  # 3 of the 4 (signal, background) pairs are ordered right
    assert m.accuracy(y, s) == 0.5


def test_errors():
    with pytest.raises(ValueError, match="both classes"):
        m.roc_auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="both classes"):
        m.roc_curve([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="length"):
        m.roc_auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        m.roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="NaN"):
        m.accuracy([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="0 or 1"):
        m.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="sample_weight"):
        m.roc_auc([0, 1], [0.1, 0.2], sample_weight=[1, -1])
    with pytest.raises(ValueError, match="non-zero weight"):
        m.roc_auc([0, 1], [0.1, 0.2], sample_weight=[1, 0])
    with pytest.raises(ValueError, match="length"):
        m.accuracy([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="labels"):
        m.multiclass_accuracy([0, 3], np.zeros((2, 3)))


def test_accuracy_binary_and_multiclass():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.2, 0.5, 0.9, 0.6, 0.49])
    assert m.accuracy(y, p) == pytest.approx(3 / 5)  # 0.5 counts as positive
    assert m.accuracy(y, p, threshold=0.45) == pytest.approx(4 / 5)
    assert m.accuracy(y.astype(bool), p) == pytest.approx(3 / 5)
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    assert m.multiclass_accuracy([0, 1, 2, 1], logits) == pytest.approx(0.75)
    assert m.multiclass_accuracy(np.array([0.0, 1.0, 2.0, 0.0]), logits) == 1.0


def test_background_rejection():
    fpr = np.array([0.0, 0.0, 0.1, 0.5, 1.0])
    tpr = np.array([0.0, 0.2, 0.5, 0.9, 1.0])
    assert m.background_rejection_at(fpr, tpr, 0.5) == pytest.approx(10.0)
    assert m.background_rejection_at(fpr, tpr, 0.7) == pytest.approx(1 / 0.3)  # halfway between 0.1 and 0.5
    assert m.background_rejection_at(fpr, tpr, 0.1) == np.inf
    np.testing.assert_allclose(m.background_rejection_at(fpr, tpr, [0.5, 1.0]), [10.0, 1.0])
    with pytest.raises(ValueError, match="signal_eff"):
        m.background_rejection_at(fpr, tpr, 0.0)
    # On a real curve: a perfect classifier rejects everything at any efficiency.
    f, t, _ = m.roc_curve([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert m.background_rejection_at(f, t, 1.0) == np.inf


def test_large_input_is_fast():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1_000_000)
    s = rng.random(1_000_000)
    assert m.roc_auc(y, s) == pytest.approx(0.5, abs=0.005)


def test_roc_plot_written(tmp_path):
    pytest.importorskip("matplotlib")
    from hepfm.eval import plots

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    curves = {}
    for name, shift in (("baseline", 0.5), ("fine-tuned", 1.0)):
        s = rng.normal(shift * y, 1.0)
        fpr, tpr, _ = m.roc_curve(y, s)
        curves[name] = (fpr, tpr, m.roc_auc(y, s))
    path = plots.roc_plot(curves, tmp_path / "roc.png", "WH vs ZH")
    assert path.is_file() and path.stat().st_size > 1000


def test_sklearn_auc_matches_the_counting_definition_on_continuous_scores():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 400)
    s = rng.normal(y, 1.0)
    pos, neg = s[y == 1], s[y == 0]
    assert m.roc_auc(y, s) == pytest.approx((pos[:, None] > neg[None, :]).mean(), abs=1e-12)


def test_statistical_errors_match_simulation():
    # Binomial: the spread of accuracies of a 70% classifier over many 400-event test sets.
    rng = np.random.default_rng(5)
    accs = (rng.random((4000, 400)) < 0.7).mean(axis=1)
    assert m.accuracy_error(0.7, 400) == pytest.approx(accs.std(), rel=0.05)
    assert m.accuracy_error(0.5, 100) == pytest.approx(0.05)
    # Hanley-McNeil is exact for exponential score distributions; AUC = 1 / (1 + rate_sig / rate_bkg) = 0.8.
    n_pos, n_neg = 80, 120
    aucs = []
    for _ in range(1500):
        pos, neg = rng.exponential(4.0, n_pos), rng.exponential(1.0, n_neg)
        aucs.append((pos[:, None] > neg[None, :]).mean())
    assert np.mean(aucs) == pytest.approx(0.8, abs=0.005)
    assert m.auc_error(0.8, n_pos, n_neg) == pytest.approx(np.std(aucs), rel=0.08)
    with pytest.raises(ValueError):
        m.auc_error(0.8, 0, 10)


def test_multilabel_quality_against_trivial_predictors():
    truth = np.array([[1, 0], [0, 0], [1, 0], [0, 1]])
    scores = np.array([[0.9, 0.2], [0.1, 0.3], [0.4, 0.1], [0.3, 0.8]])
    train = np.array([[1, 0], [1, 0], [1, 1], [0, 0]])  # priors 0.75 and 0.25
    q = m.multilabel_quality(scores, truth, train, ["a", "b"])
    assert q["label_accuracy"] == pytest.approx(7 / 8)  # one miss: event 3, label a (0.4 < 0.5)
    assert q["all_absent_accuracy"] == pytest.approx(5 / 8)
    assert q["prior_accuracy"] == pytest.approx((2 + 3) / 8)  # predicts a present, b absent
    assert q["labels"][0]["auc"] == pytest.approx(1.0) and q["labels"][1]["auc"] == pytest.approx(1.0)
    q = m.multilabel_quality(scores, np.zeros((4, 2)), train, ["a", "b"])
    assert q["labels"][0]["auc"] is None
    with pytest.raises(ValueError, match="shapes"):
        m.multilabel_quality(scores, truth, train, ["a"])
