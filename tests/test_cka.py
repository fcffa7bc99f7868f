import itertools

import numpy as np
import pytest
from scipy.stats import ortho_group

from hepfm.eval import cka

KERNELS = {"linear": cka.linear_cka, "rbf": cka.rbf_cka}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    # Correlated, anisotropic features so that the invariance checks are not trivially satisfied.
    X = rng.standard_normal((300, 16)) @ rng.standard_normal((16, 16))
    Y = np.tanh(X[:, :8]) + 0.3 * rng.standard_normal((300, 8))
    return X, Y


@pytest.mark.parametrize("kernel", KERNELS)
def test_self_similarity_is_one_and_symmetric(data, kernel):
    X, Y = data
    f = KERNELS[kernel]
    assert f(X, X) == pytest.approx(1.0, abs=1e-12)
    assert f(X, Y) == pytest.approx(f(Y, X), abs=1e-12)
    assert 0.0 <= f(X, Y) <= 1.0


@pytest.mark.parametrize("kernel", KERNELS)
def test_invariant_to_orthogonal_maps_scaling_and_translation(data, kernel):
    X, Y = data
    f = KERNELS[kernel]
    Q = ortho_group.rvs(X.shape[1], random_state=2)
    ref = f(X, Y)
    assert f(X @ Q, Y) == pytest.approx(ref, abs=1e-10)
    assert f(3.7 * X, 0.01 * Y) == pytest.approx(ref, abs=1e-10)
    assert f(X + 5.0, Y - 2.0) == pytest.approx(ref, abs=1e-10)
    assert f(X, X[:, np.random.default_rng(0).permutation(X.shape[1])]) == pytest.approx(1.0, abs=1e-12)


def test_linear_not_invariant_to_general_invertible_maps(data):
    X, _ = data
    rng = np.random.default_rng(3)
    M = rng.standard_normal((X.shape[1], X.shape[1]))
    assert abs(np.linalg.det(M)) > 1e-3
    assert cka.linear_cka(X, X @ M) < 0.95
    assert cka.linear_cka(X, X * np.r_[10.0, np.ones(X.shape[1] - 1)]) < 0.99  # anisotropic scaling


@pytest.mark.parametrize("kernel", KERNELS)
def test_noise_lowers_cka_monotonically(kernel):
    rng = np.random.default_rng(4)
    A = rng.standard_normal((400, 32))
    N = rng.standard_normal(A.shape)
    values = [KERNELS[kernel](A, A + s * N) for s in (0.0, 0.1, 0.5, 1.0, 2.0, 5.0)]
    assert values[0] == pytest.approx(1.0)
    assert all(b < a for a, b in itertools.pairwise(values))
    assert values[-1] < 0.5


def test_linear_cka_matches_gram_form(data):
    X, Y = data
    H = np.eye(len(X)) - 1.0 / len(X)
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    expected = np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L))
    assert cka.linear_cka(X, Y) == pytest.approx(expected, rel=1e-10)


def test_rbf_bandwidth_is_fraction_of_median_distance(data):
    X, Y = data

    def gram(Z, frac):
        d2 = np.sum((Z[:, None, :] - Z[None, :, :]) ** 2, axis=-1)
        s2 = frac**2 * np.median(d2[np.triu_indices(len(Z), 1)])
        H = np.eye(len(Z)) - 1.0 / len(Z)
        return H @ np.exp(-d2 / (2 * s2)) @ H

    for frac in (0.5, 1.0):
        K, L = gram(X, frac), gram(Y, frac)
        expected = np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L))
        assert cka.rbf_cka(X, Y, sigma_frac=frac) == pytest.approx(expected, rel=1e-9)


def test_median_offdiag_even_and_odd_counts():
    rng = np.random.default_rng(5)
    for n in (2, 3, 4, 5, 8):
        Z = rng.random((n, 2))
        D = np.sum((Z[:, None] - Z[None]) ** 2, axis=-1)
        assert cka._median_offdiag(D) == pytest.approx(np.median(D[np.triu_indices(n, 1)]))


def test_rbf_subsamples_same_rows():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((500, 8))
    assert cka.rbf_cka(X, X.copy(), max_samples=100) == pytest.approx(1.0)
    sub = cka.rbf_cka(X, np.tanh(X), max_samples=100, seed=1)
    assert sub == pytest.approx(cka.rbf_cka(X, np.tanh(X), max_samples=100, seed=1))
    assert sub != cka.rbf_cka(X, np.tanh(X), max_samples=None)


def test_torch_and_errors():
    torch = pytest.importorskip("torch")
    X = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    assert cka.linear_cka(X, X.to(torch.bfloat16)) > 0.99
    with pytest.raises(ValueError, match="same examples"):
        cka.linear_cka(np.zeros((5, 2)) + np.arange(5)[:, None], np.ones((4, 2)))
    with pytest.raises(ValueError, match="constant"):
        cka.linear_cka(np.ones((5, 2)), np.random.default_rng(0).random((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        cka.rbf_cka(np.full((5, 2), np.nan), np.ones((5, 2)))
    with pytest.raises(ValueError, match="2-d"):
        cka.linear_cka(np.ones(5), np.ones(5))


def test_sanity_table_rows_and_markdown():
    rows = cka.sanity_table()
    assert [r["paper"] for r in rows] == [1.00, 1.00, 0.99, 0.80, 0.77, 0.69, 0.51, 0.39, 0.76]
    for r in rows:
        assert set(r) >= {"name", "linear", "rbf", "paper"}
    assert rows[0]["linear"] == pytest.approx(1.0) and rows[1]["rbf"] == pytest.approx(1.0)
    noise = rows[2:8]
    for kernel in ("linear", "rbf"):
        assert all(b[kernel] < a[kernel] for a, b in itertools.pairwise(noise))
    # Linear CKA of A vs A + sN for isotropic Gaussian A, N is close to 1/(1 + s^2).
    assert rows[3]["linear"] == pytest.approx(1 / 1.25, abs=0.03)
    # The paper's values are reproduced by the RBF kernel to within a few hundredths, except sigma = 0.5.
    for r in rows:
        if r["key"] != "noise_0.5":
            assert r["rbf"] == pytest.approx(r["paper"], abs=0.04), r["name"]
    md = cka.format_markdown(rows)
    assert md.count("\n") == len(rows) + 2 and "| A vs A | 1.000 | 1.000 | 1.00 |" in md


def test_cross_model_cka_shapes_and_diagonal():
    rng = np.random.default_rng(7)
    base = rng.standard_normal((200, 16))

    def member(mix):
        return (1 - mix) * base @ ortho_group.rvs(16, random_state=int(rng.integers(1 << 30))) \
            + mix * rng.standard_normal(base.shape)

    latents = {"baseline": [member(0.1) for _ in range(3)],
               "multiclass": [member(0.6) for _ in range(2)],
               "single": [member(0.1)]}
    for kernel in ("linear", "rbf"):
        mean, std, names = cka.cross_model_cka(latents, kernel=kernel)
        assert names == ["baseline", "multiclass", "single"]
        assert mean.shape == std.shape == (3, 3)
        np.testing.assert_allclose(mean, mean.T, equal_nan=True)
        assert np.isnan(mean[2, 2]) and np.isnan(std[2, 2])  # one member: no distinct pair
        assert mean[0, 0] > mean[0, 1] and mean[0, 0] > 0.9 and np.all(std[~np.isnan(std)] >= 0)
        # Entry [baseline, multiclass] is the mean over all 3 x 2 member pairs.
        f = cka.linear_cka if kernel == "linear" else cka.rbf_cka
        vals = [f(a, b) for a in latents["baseline"] for b in latents["multiclass"]]
        assert mean[0, 1] == pytest.approx(np.mean(vals)) and std[0, 1] == pytest.approx(np.std(vals))
        vals = [f(latents["baseline"][i], latents["baseline"][j]) for i, j in ((0, 1), (0, 2), (1, 2))]
        assert mean[0, 0] == pytest.approx(np.mean(vals))


def test_cross_model_cka_errors():
    with pytest.raises(ValueError, match="same events"):
        cka.cross_model_cka({"a": [np.eye(5), np.eye(6)[:, :5]]})
    with pytest.raises(ValueError, match="kernel"):
        cka.cross_model_cka({"a": [np.eye(5)]}, kernel="poly")


def test_cross_model_cka_without_gram_cache_gives_same_result(monkeypatch):
    rng = np.random.default_rng(8)
    latents = {"a": [rng.standard_normal((120, 8)) for _ in range(3)], "b": [rng.standard_normal((120, 8))]}
    cached = cka.cross_model_cka(latents, kernel="rbf")
    monkeypatch.setattr(cka, "_GRAM_CACHE_BYTES", 0)
    uncached = cka.cross_model_cka(latents, kernel="rbf")
    np.testing.assert_allclose(cached[0], uncached[0], equal_nan=True)
    np.testing.assert_allclose(cached[1], uncached[1], equal_nan=True)


def test_cka_heatmap_written(tmp_path):
    pytest.importorskip("matplotlib")
    from hepfm.eval import plots

    mean = np.array([[0.95, 0.6], [0.6, np.nan]])
    std = np.array([[0.02, 0.1], [0.1, np.nan]])
    path = plots.cka_heatmap(mean, std, ["baseline", "multiclass"], tmp_path / "sub" / "cka.png")
    assert path.is_file() and path.stat().st_size > 1000
    assert not list(path.parent.glob("*.tmp.png"))


def test_cka_command_prints_linear_and_rbf_side_by_side(tmp_path):
    import torch
    from cli_runner import hepfm

    from hepfm.models.registry import create_model
    from hepfm.models.saving import save_model
    from hepfm.testing import toy_store

    store = toy_store(tmp_path / "events", n_per_class=60, seed=1)
    runs = []
    for seed in range(2):
        torch.manual_seed(seed)
        runs.append(save_model(create_model("graphnet", 1, share_blocks=True), tmp_path / f"m{seed}",
                               {"task": "binary", "names": ["background", "signal"]}))
    r = hepfm("cka", f"same={runs[0]},{runs[0]}", f"other={runs[1]}", "--data", store, "--events", 100,
              "--plot", tmp_path / "cka.png", inherit_env=True)
    assert r.returncode == 0, r.stderr
    assert "linear | rbf CKA" in r.stdout
    assert "1.000 ± 0.000 | 1.000 ± 0.000" in r.stdout  # a model against itself, both kernels
    assert (tmp_path / "cka_linear.png").is_file() and (tmp_path / "cka_rbf.png").is_file()
