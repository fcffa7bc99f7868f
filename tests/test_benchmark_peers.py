"""The peer implementations (hepfm.testing.peers, timed by benchmarks/throughput.py) are the same model as GraphNet:
same weights, same outputs."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hepfm.data.datasets import EventData
from hepfm.data.features import fit_scaling, mask_from_counts
from hepfm.models import GraphNet, count_parameters
from hepfm.models.graphnet import PAPER_OPTIONS

pytest.importorskip("torch_geometric")

from torch_geometric.data import Batch

from hepfm.testing import synthetic_events
from hepfm.testing.peers import DenseGraphNet, PygGraphNet, event_graphs, peers_from, vectorised_graph

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


@pytest.fixture(scope="module")
def bench():
    before = os.environ.get("OMP_WAIT_POLICY")
    spec = importlib.util.spec_from_file_location("throughput_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if before is None:  # the script sets it for its own runs; keep it out of later tests' subprocesses
        os.environ.pop("OMP_WAIT_POLICY", None)
    return module


@pytest.fixture(scope="module")
def events():
    objects, counts = synthetic_events(48, np.random.default_rng(3))
    labels = torch.zeros(len(counts), dtype=torch.long)
    return EventData(torch.from_numpy(objects), torch.from_numpy(counts), labels)


def test_peers_have_graphnets_parameter_count():
    n = count_parameters(GraphNet(n_outputs=12))
    assert n == 372_556
    assert count_parameters(PygGraphNet(12)) == n
    assert count_parameters(DenseGraphNet(12)) == n


def test_peers_give_graphnets_outputs(events):
    torch.manual_seed(0)
    graphnet = GraphNet(n_outputs=5, **PAPER_OPTIONS)
    scaling = fit_scaling(events.x.numpy(), events.n_objects.numpy())
    graphnet.scaling.set(*scaling)
    pyg, dense = peers_from(graphnet)
    index = torch.arange(len(events))
    x, mask, _ = events.batch(index)
    with torch.no_grad():
        ref = graphnet(x, mask)
        rows, edge_index, batch, n_objects, _ = vectorised_graph(events, index)
        out_vec = pyg(rows, edge_index, batch, n_objects)
        graphs = event_graphs(events.x, events.n_objects, events.y)
        out_list = pyg.forward_batch(Batch.from_data_list(graphs))
        out_dense = dense(events.x, mask_from_counts(events.n_objects, events.x.shape[1]))
    assert ref.abs().max() > 0.1
    for out in (out_vec, out_list, out_dense):
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_flop_count_of_split_layers(bench):
    # Split first layers, in 64x64 row products per block: edge MLP E + 2N + B instead of 4E, node MLP 2N + B
    # instead of 3N; so 3E - N - 2B fewer. One event, 10 objects, 90 edges, 4 blocks, 2 FLOPs per multiply-add.
    split = bench.forward_flops(1, 10, 90, 12, split=True)
    unsplit = bench.forward_flops(1, 10, 90, 12, split=False)
    assert unsplit - split == 2 * 4 * (3 * 90 - 10 - 2) * 64 * 64


@pytest.mark.slow
def test_quick_run(bench, tmp_path):
    out = tmp_path / "throughput.json"
    bench.main(["--quick", "--threads", "1", "--json", str(out)])  # 1: no OpenMP spinning under load
    result = json.loads(out.read_text())
    assert [m["model"] for m in result["models"]] == ["graphnet", "graphnet-bf16", "pyg-list", "pyg-vec", "dense"]
    assert all(m["events_per_s"] > 0 for m in result["models"])
    assert result["equivalence"]["pyg"] < 1e-4 and result["equivalence"]["dense"] < 1e-4
    assert result["flops_per_event"]["graphnet"] < result["flops_per_event"]["unsplit"]
