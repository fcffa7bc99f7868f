"""The hierarchical event model: jet embeddings from a jet backbone inside an event backbone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import hepfm
from hepfm.data.datasets import with_constituents
from hepfm.errors import HepfmError
from hepfm.io.schema import FEATURE_INDEX, TYPE_CODES
from hepfm.models import create_model
from hepfm.models.saving import save_model
from hepfm.testing import toy_events

K = 8


def _events(n=4, seed=0):
    """Toy events whose jet slots carry toy constituents: x [n, 20, 7 + 6K], mask [n, 20]."""
    objects, counts = toy_events(n, seed, 20)
    rng = np.random.default_rng(seed)
    is_jet = objects[..., FEATURE_INDEX["type"]] == TYPE_CODES["jet"]
    con = np.zeros((n, 20, K, 6), dtype=np.float32)
    n_con = rng.integers(1, K + 1, (n, 20))
    for e, s in zip(*np.nonzero(is_jet), strict=True):
        m = n_con[e, s]
        pt = rng.exponential(8.0, m) + 0.5
        deta, dphi = rng.normal(0, 0.1, m), rng.normal(0, 0.1, m)
        con[e, s, :m] = np.stack([pt, deta, dphi, pt * np.cosh(deta), rng.integers(-1, 2, m),
                                  rng.integers(1, 4, m)], axis=1)
    x = torch.from_numpy(with_constituents(objects, con)).double()
    mask = torch.arange(20)[None, :] < torch.from_numpy(counts)[:, None]
    return x, mask, torch.from_numpy(is_jet)


@pytest.mark.parametrize("event_model", ["transformer", "graphnet"])
def test_jets_enter_through_their_constituents_and_nothing_else(event_model):
    torch.manual_seed(0)
    model = create_model("hierarchical", 1, event_model=event_model, jet_model="deepsets", max_constituents=K)
    model = model.double().eval()
    x, mask, is_jet = _events()
    assert is_jet[mask].any() and (~is_jet & mask).any()
    ref = model(x, mask)
    assert ref.shape == (4, 1) and torch.isfinite(ref).all()
    # another jet's constituents change the event's output; numbers in non-jet or padding slots do not
    changed = x.clone()
    e, s = (int(v[0]) for v in torch.nonzero(is_jet & mask, as_tuple=True))
    changed[e, s, 7:13] *= 3.0
    assert not torch.allclose(model(changed, mask)[e], ref[e])
    garbage = x.clone()
    garbage[~is_jet | ~mask, 7:] = torch.rand(int((~is_jet | ~mask).sum()), 6 * K, dtype=x.dtype)
    garbage[~mask, :7] = 0.0
    torch.testing.assert_close(model(garbage, mask), ref)
    # object order does not matter
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(x[:, perm], mask[:, perm]), ref)
    with pytest.raises(HepfmError, match="a store that keeps its jets' constituents"):
        model(x[..., :7], mask)


def test_a_hierarchical_model_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = create_model("hierarchical", 1, event_model="transformer", jet_model="jet_transformer",
                         max_constituents=K).eval()
    x, mask, _ = _events()
    save_model(model, tmp_path / "m", {"task": "binary", "names": ["background", "signal"]})
    loaded = hepfm.load(tmp_path / "m")
    torch.testing.assert_close(loaded(x.float(), mask), model(x.float(), mask))


@pytest.mark.pythia
def test_finetune_from_a_jet_tagging_run_frozen_finetuned_and_scratch(tmp_path):
    pytest.importorskip("pythia8mc")
    from hepfm.io.generate import catalog_source, generate
    from hepfm.train.trainer import TrainConfig
    from hepfm.train.workflows import finetune, pretrain_jets

    generate([catalog_source("ttbar"), catalog_source("zjets")], tmp_path / "ev", events=80, seed=5,
             progress=False, constituents=K)
    cfg = TrainConfig(epochs=1, batch_size=32, progress=False, tensorboard=False)
    pretrain_jets(tmp_path / "ev", tmp_path / "jets", model="deepsets", cfg=cfg, lr=1e-3)
    jet_state = hepfm.load(tmp_path / "jets").state_dict()
    kept = {}
    for strategy in ("frozen", "finetune", "scratch"):
        summary = finetune(tmp_path / "ev" / "ttbar", tmp_path / "ev" / "zjets", tmp_path / strategy,
                           strategy=strategy, init_from=tmp_path / "jets", model="transformer", cfg=cfg, lr=1e-3,
                           backbone_lr=1e-3)
        assert 0.0 <= summary["test"]["accuracy"] <= 1.0
        model = hepfm.load(tmp_path / strategy)
        assert model.metadata["strategy"] == strategy and model.config["jet_model"] == "deepsets"
        kept[strategy] = all(torch.equal(v, jet_state[k]) for k, v in model.jet.state_dict().items())
    assert kept == {"frozen": True, "finetune": False, "scratch": False}
    # LP-FT: the probe trains the event part on the frozen jet backbone, then everything is fine-tuned.
    from safetensors.torch import load_file

    finetune(tmp_path / "ev" / "ttbar", tmp_path / "ev" / "zjets", tmp_path / "lpft", strategy="finetune",
             init_from=tmp_path / "jets", model="transformer", cfg=dataclasses.replace(cfg, linear_probe=True),
             lr=1e-3, backbone_lr=1e-3)
    probed = load_file(str(tmp_path / "lpft" / "probe" / "probed.safetensors"))
    assert probed and not any(k.startswith("jet.") for k in probed) and any(k.startswith("head.") for k in probed)
    with pytest.raises(HepfmError, match="no layers to decay the rate across"):
        finetune(tmp_path / "ev" / "ttbar", tmp_path / "ev" / "zjets", tmp_path / "ld", strategy="finetune",
                 init_from=tmp_path / "jets", model="transformer", cfg=dataclasses.replace(cfg, layer_decay=0.5))
    assert not (tmp_path / "ld").exists()
    with pytest.raises(HepfmError, match="needs jet constituents, and this store keeps none"):
        generate([catalog_source("zjets")], tmp_path / "plain", events=10, seed=5, progress=False)
        finetune(tmp_path / "plain" / "zjets", tmp_path / "ev" / "ttbar", tmp_path / "x", strategy="frozen",
                 init_from=tmp_path / "jets", cfg=cfg)
    assert not (tmp_path / "x").exists()


def test_a_batch_without_jets_is_scored_by_both_jet_paths():
    torch.manual_seed(0)
    model = create_model("hierarchical", 1, event_model="transformer", jet_model="jet_transformer",
                         max_constituents=K).double().eval()
    x, mask, is_jet = _events()
    x[..., FEATURE_INDEX["type"]][is_jet] = TYPE_CODES["photon"]  # the constituents stay, but belong to no jet
    with torch.no_grad():
        trimmed = model(x, mask)
        model.fixed_width = True
        fixed = model(x, mask)
    assert torch.isfinite(trimmed).all()
    torch.testing.assert_close(fixed, trimmed)


@pytest.mark.parametrize("jet_model", ["jet_transformer", "deepsets"])
def test_jets_grouped_by_constituent_count_give_the_same_embeddings(jet_model, monkeypatch):
    import hepfm.models.hierarchical as hier

    monkeypatch.setattr(hier, "MIN_BUCKET", 4)  # a toy batch has few jets
    torch.manual_seed(0)
    model = create_model("hierarchical", 1, event_model="graphnet", jet_model=jet_model, max_constituents=K)
    model = model.double().eval()
    x, mask, is_jet = _events(n=16, seed=3)
    n_jets = int((is_jet & mask).sum())
    assert n_jets >= 12
    model.jet_buckets = 1
    _, single = model.jet_embeddings(x, mask)
    ref = model(x, mask)
    model.jet_buckets = 3
    _, grouped = model.jet_embeddings(x, mask)
    torch.testing.assert_close(grouped, single)  # every jet keeps its own embedding, in its own slot
    torch.testing.assert_close(model(x, mask), ref)


@pytest.mark.parametrize("event_model", ["graphnet", "transformer"])
def test_a_frozen_jet_backbone_trains_alike_on_embeddings_computed_once(tmp_path, event_model):
    """cache_frozen: the jet backbone runs once per event, and the run equals the one that runs it every step."""
    from hepfm.data.datasets import EventData
    from hepfm.train.tasks import Task
    from hepfm.train.trainer import TrainConfig, fit

    x, mask, is_jet = _events(n=96, seed=3)
    n_objects = mask.sum(dim=1)
    y = (x[..., 0] * is_jet).sum(dim=1).gt(x[..., 0].mul(is_jet).sum(dim=1).median()).float()
    # float64: Adam turns float32 rounding of parameters with near-zero gradients into visible steps
    train, val = EventData(x[:64], n_objects[:64], y[:64].double()), EventData(x[64:], n_objects[64:], y[64:].double())

    def run(folder, cache_frozen):
        torch.manual_seed(0)
        model = create_model("hierarchical", 1, event_model=event_model, event_config={"share_blocks": True}
                             if event_model == "graphnet" else {"layers": 1}, jet_model="jet_transformer",
                             jet_config={"dropout": 0.3}, max_constituents=K).double()
        for p in model.jet.parameters():
            p.requires_grad_(False)
        rest = [p for p in model.parameters() if p.requires_grad]
        calls = []
        model.jet.decoder.register_forward_hook(lambda m, i, o: calls.append(1))
        cfg = TrainConfig(epochs=3, batch_size=16, patience=10, seed=2, cache_frozen=cache_frozen, progress=False,
                          tensorboard=False)
        result = fit(model, Task("binary", ["b", "s"]), train, val, [{"params": rest, "lr": 1e-3}], cfg, folder)
        assert not model.embedded_inputs  # restored: the trained model reads constituents again
        return model, result, len(calls)

    cached, cached_fit, cached_calls = run(tmp_path / "cached", True)
    plain, plain_fit, plain_calls = run(tmp_path / "plain", False)
    assert cached_calls <= 2 * hepfm.models.hierarchical.JET_BUCKETS  # the training events once, validation once
    assert plain_calls > 3 * 4  # every step
    for a, b in zip(cached_fit.history, plain_fit.history, strict=True):
        for key in ("train_loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(cached.state_dict()[k], v, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(cached.eval()(x[64:], mask[64:]), plain.eval()(x[64:], mask[64:]))
