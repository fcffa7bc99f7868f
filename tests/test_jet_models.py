"""Jet backbones and jet tagging: invariances of the constituent models, the pair features, bucketed
batches, and `pretrain --task jet-tagging` end to end on a small generated store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hepfm
from hepfm.data.jets import JetData, padding_fraction
from hepfm.errors import ConfigurationError, HepfmError
from hepfm.eval.metrics import tagging_rejections
from hepfm.models import create_model, list_models
from hepfm.models.jets import pair_features
from hepfm.models.saving import save_model
from hepfm.physics import kinematics as kin

JET_MODELS = list_models("constituents")
K = 16


def toy_jets(n=5, seed=0, k=K):
    """Random jets: [n, k, 6] constituents (pT, deta, dphi, E, charge, class) and a mask of the first n_i."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, k + 1, n)
    counts[0] = k
    pt = rng.exponential(10.0, (n, k)) + 0.5
    deta, dphi = rng.normal(0, 0.15, (n, k)), rng.normal(0, 0.15, (n, k))
    x = np.stack([pt, deta, dphi, pt * np.cosh(deta) * 1.01, rng.integers(-1, 2, (n, k)),
                  rng.integers(1, 5, (n, k))], axis=-1)
    mask = np.arange(k)[None, :] < counts[:, None]
    x[~mask] = 0.0
    return torch.from_numpy(x), torch.from_numpy(mask)


def _model(name, seed=0):
    torch.manual_seed(seed)
    return create_model(name, n_outputs=3).double().eval()


def test_the_jet_models_are_registered_apart_from_the_event_models():
    assert set(JET_MODELS) == {"jet_transformer", "deepsets"}
    assert not set(JET_MODELS) & set(list_models("objects"))


@pytest.mark.parametrize("name", JET_MODELS)
def test_jet_models_run_forward_and_backward(name):
    model = create_model(name, n_outputs=4)
    x, mask = toy_jets()
    out = model(x.float(), mask)
    assert out.shape == (5, 4) and torch.isfinite(out).all()
    assert model.encode(x.float(), mask).shape == (5, 64)
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", JET_MODELS)
def test_jet_models_ignore_constituent_order_and_padding(name):
    model = _model(name)
    x, mask = toy_jets()
    ref = model(x, mask)
    gen = torch.Generator().manual_seed(1)
    perm = torch.stack([torch.randperm(K, generator=gen) for _ in range(len(x))])
    torch.testing.assert_close(model(torch.gather(x, 1, perm[:, :, None].expand(-1, -1, 6)),
                                     torch.gather(mask, 1, perm)), ref, rtol=1e-9, atol=1e-9)
    xpad = torch.cat([x, torch.zeros(len(x), 5, 6, dtype=x.dtype)], dim=1)
    mpad = torch.cat([mask, torch.zeros(len(x), 5, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model(xpad, mpad), ref, rtol=1e-9, atol=1e-9)
    garbage = x.clone()
    garbage[~mask] = torch.rand(int((~mask).sum()), 6, dtype=x.dtype) * 50
    torch.testing.assert_close(model(garbage, mask), ref, rtol=1e-9, atol=1e-9)
    # and each jet's output depends on that jet alone
    torch.testing.assert_close(model(x[1:2], mask[1:2]), ref[1:2], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", JET_MODELS)
def test_padded_constituents_receive_no_gradient(name):
    model = _model(name)
    x, mask = toy_jets()
    x = x.requires_grad_(True)
    model(x, mask).sum().backward()
    assert torch.all(x.grad[~mask] == 0) and x.grad[mask].abs().sum() > 0


@pytest.mark.parametrize("name", JET_MODELS)
def test_jet_models_save_and_load(tmp_path, name):
    model = _model(name).float()
    model.scaling.set(torch.arange(7.0), torch.arange(1.0, 8.0))
    x, mask = toy_jets()
    save_model(model, tmp_path / "m", {"task": "jet-tagging", "names": ["light", "gluon", "b"]})
    loaded = hepfm.load(tmp_path / "m")
    torch.testing.assert_close(loaded(x.float(), mask), model(x.float(), mask))
    torch.testing.assert_close(loaded.scaling.std, model.scaling.std)


def test_pair_features_are_the_particle_transformer_ones():
    # two constituents: pT 10 and 30, 0.3 apart in eta and 0.4 in phi
    x = torch.zeros(1, 2, 6, dtype=torch.float64)
    x[0, :, 0] = torch.tensor([10.0, 30.0])
    x[0, :, 1] = torch.tensor([0.1, -0.2])
    x[0, :, 2] = torch.tensor([-0.2, 0.2])
    f = pair_features(x)[0, 0, 1]
    dr = 0.5
    m2 = float(kin.pair_mass(torch.tensor(10.0), torch.tensor(0.1), torch.tensor(-0.2), torch.tensor(30.0),
                             torch.tensor(-0.2), torch.tensor(0.2))) ** 2
    np.testing.assert_allclose(f.numpy(), np.log([10.0 * dr, 10.0 / 40.0, dr, m2]), rtol=1e-6)
    torch.testing.assert_close(pair_features(x)[0, 1, 0], f)  # symmetric


def test_bucketed_batches_cover_every_jet_once_and_carry_little_padding():
    rng = np.random.default_rng(0)
    n = torch.from_numpy(rng.integers(1, 40, 3000))
    data = JetData(torch.zeros(3000, 40, 6), n, torch.zeros(3000, dtype=torch.long)).sorted_by_count()
    batches = data.batch_indices(epoch=2, seed=5, batch_size=64)
    assert len(batches) == int(np.ceil(3000 / 64))
    assert sorted(torch.cat(batches).tolist()) == list(range(3000))
    again = data.batch_indices(epoch=2, seed=5, batch_size=64)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    assert not torch.equal(torch.cat(batches), torch.cat(data.batch_indices(epoch=3, seed=5, batch_size=64)))
    bucketed, unsorted = padding_fraction(data, 64)
    assert bucketed < 0.1 < unsorted


def test_rejection_figures_of_a_perfect_and_a_blind_tagger():
    y = np.repeat([0, 1, 2], 1000)
    perfect = np.eye(3)[y] * 0.98 + 0.01
    (row,) = tagging_rejections(perfect, y, ["light", "gluon", "b"], pairs=[("b", "light")], efficiencies=[0.7])
    assert row["rejection"] == np.inf and row["auc"] == 1.0
    blind = np.random.default_rng(0).dirichlet([1, 1, 1], len(y))
    (row,) = tagging_rejections(blind, y, ["light", "gluon", "b"], pairs=[("b", "light")], efficiencies=[0.7])
    assert abs(row["rejection"] - 1 / 0.7) < 4 * row["rejection_error"]


@pytest.mark.pythia
def test_pretrain_jet_tagging_end_to_end(tmp_path):
    pytest.importorskip("pythia8mc")
    from hepfm.io.generate import catalog_source, generate
    from hepfm.train.trainer import TrainConfig
    from hepfm.train.workflows import pretrain, pretrain_jets

    generate([catalog_source("ttbar")], tmp_path / "jets", events=120, seed=3, progress=False, constituents=24)
    generate([catalog_source("ttbar")], tmp_path / "plain", events=20, seed=3, progress=False)
    cfg = TrainConfig(epochs=1, batch_size=64, progress=False, tensorboard=False)
    for name in JET_MODELS:
        summary = pretrain_jets(tmp_path / "jets", tmp_path / name, model=name, cfg=cfg, lr=1e-3,
                                classes=["light", "b"])
        assert summary["test_outputs"]["names"] == ["light", "b"]
        assert sum(summary["jets"].values()) > 200
        model = hepfm.load(tmp_path / name)
        assert model.metadata["task"] == "jet-tagging" and model.metadata["names"] == ["light", "b"]
        assert summary["test_outputs"]["scores"].shape == (summary["jets"]["test"], 2)
    with pytest.raises(HepfmError, match=r"jet tagging needs jet constituents, and .* has none"):
        pretrain_jets(tmp_path / "plain", tmp_path / "x", cfg=cfg)
    with pytest.raises(ConfigurationError, match="deepsets"):
        pretrain_jets(tmp_path / "jets", tmp_path / "y", model="graphnet", cfg=cfg)
    with pytest.raises(ConfigurationError, match="graphnet"):
        pretrain(tmp_path / "jets", tmp_path / "z", task="multiclass", model="deepsets", cfg=cfg)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()
