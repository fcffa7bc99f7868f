"""Model invariants: registry forward/backward, permutation and padding invariance, no gradient into
padding, GraphNet against a naive per-event implementation on the same weights, saving and loading."""

from __future__ import annotations

import json

import pytest
import torch

import hepfm
from hepfm.errors import HepfmError
from hepfm.models import GraphNet, count_parameters, create_model, list_models
from hepfm.models.graphnet import PAPER_OPTIONS
from hepfm.models.saving import save_model
from hepfm.physics import kinematics as kin
from hepfm.testing import toy_events


def _batch(n=6, seed=0, max_objects=20):
    objects, counts = toy_events(n, seed, max_objects)
    x = torch.from_numpy(objects)
    mask = torch.arange(max_objects)[None, :] < torch.from_numpy(counts)[:, None]
    return x, mask


def _model(name, n_outputs=3, seed=0):
    torch.manual_seed(seed)
    m = create_model(name, n_outputs).double()
    m.scaling.set(torch.tensor([3.5, 0.0, 0.0, 4.0]), torch.tensor([0.8, 1.2, 1.8, 1.0]))
    return m.eval()


@pytest.mark.parametrize("name", list_models("objects"))
def test_every_registered_model_runs_forward_and_backward(name):
    model = create_model(name, n_outputs=4)
    x, mask = _batch()
    out = model(x, mask)
    assert out.shape == (6, 4) and torch.isfinite(out).all()
    assert model.encode(x, mask).shape == (6, 64)
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_graphnet_parameter_counts_match_the_design():
    assert count_parameters(GraphNet(n_outputs=12, **PAPER_OPTIONS)) == 372_556
    assert count_parameters(GraphNet(n_outputs=12, share_blocks=True, **PAPER_OPTIONS)) == 135_628
    # Mean aggregation and residual connections add no parameters.
    assert count_parameters(GraphNet(n_outputs=12)) == 372_556


@pytest.mark.parametrize("name", list_models("objects"))
def test_output_is_invariant_under_object_permutation(name):
    model = _model(name)
    x, mask = _batch()
    x, mask = x.double(), mask
    gen = torch.Generator().manual_seed(3)
    perm = torch.stack([torch.randperm(20, generator=gen) for _ in range(len(x))])
    xp = torch.gather(x, 1, perm[:, :, None].expand(-1, -1, 7))
    mp = torch.gather(mask, 1, perm)
    torch.testing.assert_close(model(xp, mp), model(x, mask), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", list_models("objects"))
def test_output_is_unchanged_by_extra_padding(name):
    model = _model(name)
    x, mask = _batch()
    x = x.double()
    xpad = torch.cat([x, torch.zeros(len(x), 7, 7, dtype=x.dtype)], dim=1)
    mpad = torch.cat([mask, torch.zeros(len(x), 7, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model(xpad, mpad), model(x, mask), rtol=1e-9, atol=1e-9)
    # Garbage in padding rows must not matter either.
    xgarbage = x.clone()
    xgarbage[~mask] = torch.rand(int((~mask).sum()), 7, dtype=x.dtype) * 100
    torch.testing.assert_close(model(xgarbage, mask), model(x, mask), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", list_models("objects"))
def test_padded_objects_receive_no_gradient(name):
    model = _model(name)
    x, mask = _batch()
    x = x.double().requires_grad_(True)
    model(x, mask).sum().backward()
    assert torch.all(x.grad[~mask] == 0)
    assert x.grad[mask].abs().sum() > 0


def _naive_graphnet(model: GraphNet, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The paper's formulas, event by event and pair by pair, on the model's own MLPs (unsplit layers);
    with ``aggregation=mean`` the sums are divided by the number of terms, with ``residual`` each block's
    outputs are added to its inputs."""
    mean, residual = model.config["aggregation"] == "mean", model.config["residual"]
    outs = []
    for xe, me in zip(x, mask, strict=True):
        rows = xe[me]
        n = len(rows)
        h = [model.node_encoder(model.scaling.node_features(r)) for r in rows]
        e = {}
        for i in range(n):
            for j in range(n):
                if i != j:
                    d_eta, d_phi, dr = kin.pair_separation(rows[i, 1], rows[i, 2], rows[j, 1], rows[j, 2])
                    e[i, j] = model.edge_encoder(torch.stack([d_eta, d_phi, dr]))
        g = model.global_encoder(torch.tensor([n / 10.0], dtype=x.dtype))
        for k in range(model.n_blocks):
            block = model.blocks[k % len(model.blocks)]
            e_new = {(i, j): block.edge(torch.cat([h[i], h[j], y, g])) for (i, j), y in e.items()}
            received = [sum((e_new[i, j] for j in range(n) if j != i), torch.zeros_like(g)) / (max(n - 1, 1) if mean
                                                                                                else 1)
                        for i in range(n)]
            h_new = [block.node(torch.cat([h[i], received[i], g])) for i in range(n)]
            node_sum = sum(h_new, torch.zeros_like(g)) / (n if mean else 1)
            edge_sum = sum(e_new.values(), torch.zeros_like(g)) / (max(n * (n - 1), 1) if mean else 1)
            g_new = block.glob(torch.cat([node_sum, edge_sum, g]))
            if residual:
                e = {key: e[key] + y for key, y in e_new.items()}
                h = [a + b for a, b in zip(h, h_new, strict=True)]
                g = g + g_new
            else:
                e, h, g = e_new, h_new, g_new
        outs.append(model.head(model.decoder(g)))
    return torch.stack(outs)


@pytest.mark.parametrize("options", [PAPER_OPTIONS, {}, {"aggregation": "mean", "residual": False},
                                     {"aggregation": "sum", "residual": True}])
@pytest.mark.parametrize("share", [False, True])
def test_graphnet_equals_naive_per_event_loop(share, options):
    torch.manual_seed(1)
    model = GraphNet(n_outputs=3, share_blocks=share, **options).double().eval()
    model.scaling.set(torch.tensor([3.5, 0.1, 0.0, 4.0]), torch.tensor([0.8, 1.2, 1.8, 1.0]))
    x, mask = _batch(n=4, seed=5)
    x = x.double()
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask), _naive_graphnet(model, x, mask), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("options", [PAPER_OPTIONS, {}])
def test_single_object_events_have_no_edges_but_work(options):
    torch.manual_seed(0)
    model = GraphNet(n_outputs=3, **options).double().eval()
    x = torch.zeros(2, 4, 7, dtype=torch.float64)
    x[:, 0] = torch.tensor([50.0, 0.0, 1.0, 50.0, 0.0, 0.0, 6.0])
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[:, 0] = True
    out = model(x, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], out[1])


@pytest.mark.parametrize("name", list_models("objects"))
def test_save_and_load_round_trip(tmp_path, name):
    model = _model(name).float()
    x, mask = _batch()
    save_model(model, tmp_path / "m", {"task": "multiclass", "names": ["a", "b", "c"]})
    loaded = hepfm.load(tmp_path / "m")
    torch.testing.assert_close(loaded(x, mask), model(x, mask))
    torch.testing.assert_close(loaded.scaling.std, model.scaling.std)
    assert loaded.metadata["names"] == ["a", "b", "c"]


def test_a_model_saved_before_the_graphnet_options_loads_as_the_papers_architecture(tmp_path):
    # config.json files written before `aggregation` and `residual` existed have neither key; their weights
    # fit every variant (same parameters), so the absent keys must mean the paper's architecture they were
    # trained as, not today's default.
    x, mask = _batch()
    torch.manual_seed(0)
    paper = GraphNet(n_outputs=3, **PAPER_OPTIONS)
    save_model(paper, tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in PAPER_OPTIONS:
        del cfg["architecture"]["config"][key]
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    loaded = hepfm.load(tmp_path / "old")
    assert {k: loaded.config[k] for k in PAPER_OPTIONS} == PAPER_OPTIONS
    torch.testing.assert_close(loaded(x, mask), paper(x, mask))
    # The same weights as today's default architecture give other outputs: loading as the default would be wrong.
    default = GraphNet(n_outputs=3)
    default.load_state_dict(paper.state_dict())
    assert not torch.allclose(default(x, mask), paper(x, mask), atol=1e-3)
    # New folders record the options explicitly, so a later change of default cannot change them either.
    save_model(GraphNet(n_outputs=3), tmp_path / "new")
    saved = json.loads((tmp_path / "new" / "config.json").read_text())["architecture"]["config"]
    assert saved["aggregation"] == "mean" and saved["residual"] is True
    assert hepfm.load(tmp_path / "new").config["residual"] is True


def test_a_wider_graphnet_keeps_the_64_d_latent_and_its_invariants(tmp_path):
    # Stage 4 of results/foundation-v2/PROTOCOL.md compares widths 64 and 128: only the hidden features widen,
    # the latent every head and fine-tuning reads stays 64-d, and the object embeddings have the hidden width.
    torch.manual_seed(0)
    wide = GraphNet(n_outputs=3, width=128).double().eval()
    x, mask = _batch()
    x = x.double()
    latent, objects = wide.encode_objects(x, mask)
    assert latent.shape == (6, 64) and objects.shape == (6, 20, 128) and wide.object_width == 128
    assert (objects[~mask] == 0).all()
    # Every hidden Linear is 128 wide: about 4x the parameters of width 64 (not exactly: input layers, decoder).
    assert 3.3 < count_parameters(wide) / count_parameters(GraphNet(n_outputs=3)) < 4.0
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(wide(x[:, perm], mask[:, perm]), wide(x, mask))
    save_model(wide.float(), tmp_path / "wide")
    loaded = hepfm.load(tmp_path / "wide")
    assert loaded.config["width"] == 128
    torch.testing.assert_close(loaded(x.float(), mask), wide(x.float(), mask))
    with pytest.raises(ValueError, match="width must be"):
        create_model("graphnet", width=0)


def test_bad_graphnet_options_are_clear_errors():
    with pytest.raises(ValueError, match="aggregation must be one of"):
        create_model("graphnet", aggregation="max")
    with pytest.raises(ValueError, match="residual must be true or false"):
        create_model("graphnet", residual="yes")


def test_loading_a_broken_model_folder_names_the_problem(tmp_path):
    with pytest.raises(HepfmError, match="no such model folder"):
        hepfm.load(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HepfmError, match="not a hepfm model folder"):
        hepfm.load(tmp_path / "empty")
    save_model(_model("graphnet").float(), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(HepfmError, match="unreadable weights"):
        hepfm.load(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["architecture"]["model"] = "nonsense"
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HepfmError, match="unknown model"):
        hepfm.load(tmp_path / "m")


def test_unknown_model_or_option_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet")
    with pytest.raises(ValueError, match="bad options"):
        create_model("graphnet", n_outputs=2, wings=3)
