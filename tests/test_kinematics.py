import numpy as np
import pytest

from hepfm.physics import kinematics as kin


def test_wrap_phi_range_and_values():
    x = np.linspace(-20, 20, 1001)
    w = kin.wrap_phi(x)
    assert np.all(w >= -np.pi) and np.all(w < np.pi)
    np.testing.assert_allclose(np.cos(w), np.cos(x), atol=1e-12)
    np.testing.assert_allclose(np.sin(w), np.sin(x), atol=1e-12)


def test_delta_r_across_phi_boundary():
    assert kin.delta_r(0.0, np.pi - 0.1, 0.0, -np.pi + 0.1) == pytest.approx(0.2)
    assert kin.delta_r(1.0, 0.0, -2.0, 0.0) == pytest.approx(3.0)


def test_eta_phi_roundtrip_and_massless_energy():
    rng = np.random.default_rng(0)
    pt, eta, phi = rng.uniform(1, 500, 100), rng.uniform(-4, 4, 100), rng.uniform(-np.pi, np.pi, 100)
    px, py, pz, e = kin.to_cartesian(pt, eta, phi)
    np.testing.assert_allclose(kin.pt(px, py), pt, rtol=1e-12)
    np.testing.assert_allclose(kin.eta(px, py, pz), eta, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(kin.phi(px, py), phi, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kin.invariant_mass(px, py, pz, e), 0.0, atol=1e-4 * e.max())


def test_pair_mass_matches_four_vector_sum():
    rng = np.random.default_rng(1)
    a = [rng.uniform(5, 300, 50), rng.uniform(-3, 3, 50), rng.uniform(-np.pi, np.pi, 50)]
    b = [rng.uniform(5, 300, 50), rng.uniform(-3, 3, 50), rng.uniform(-np.pi, np.pi, 50)]
    va, vb = kin.to_cartesian(*a), kin.to_cartesian(*b)
    expected = kin.invariant_mass(*(x + y for x, y in zip(va, vb, strict=True)))
    np.testing.assert_allclose(kin.pair_mass(*a, *b), expected, rtol=1e-7)
    # Z at rest decaying back to back: m = 2 * 45.6 GeV
    assert kin.pair_mass(45.6, 0.0, 0.0, 45.6, 0.0, np.pi) == pytest.approx(91.2)
