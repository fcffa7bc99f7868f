"""The hierarchical strategies in the study: a jet backbone pretrained on jet tagging, frozen or fine-tuned
inside the event model, or trained from scratch with it, next to the object-level scratch baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import hepfm
from hepfm.errors import HepfmError
from hepfm.study.config import parse_config
from hepfm.study.layout import StudyLayout
from hepfm.study.report import write_report
from hepfm.study.run import run_study

K = 8
STRATEGIES = ["scratch", "hierarchical_finetune", "hierarchical_frozen", "hierarchical_scratch"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    pytest.importorskip("pythia8mc")
    from hepfm.io.generate import catalog_source, generate

    root = tmp_path_factory.mktemp("hier")
    generate([catalog_source("ttbar"), catalog_source("qcd")], root / "pre", events=60, seed=3, progress=False,
             constituents=K)
    generate([catalog_source("ttbar"), catalog_source("zjets")], root / "down", events=100, seed=4,
             progress=False, constituents=K)
    generate([catalog_source("zjets")], root / "plain", events=10, seed=5, progress=False)
    return root


def _config(root, **over):
    raw = {"tasks": {"tt_vs_z": {"signal": str(root / "down" / "ttbar"), "background": str(root / "down" / "zjets")}},
           "sizes": [30], "seeds": 2, "test_size": 20, "strategies": STRATEGIES, "jet_model": "deepsets",
           "pretrain": {"data": str(root / "pre"), "epochs": 1, "batch_size": 64, "lr": 1e-3},
           "finetune": {"epochs": 1, "batch_size": 32, "lr": 1e-3}, "cka": {"events": 20}}
    raw.update(over)
    return raw


@pytest.mark.pythia
def test_the_study_trains_hierarchical_strategies_on_the_same_test_events(stores, tmp_path):
    cfg = parse_config(_config(stores))
    state = run_study(cfg, tmp_path, progress=False)
    assert state.failures == []
    assert set(state.pretrained) == {"jet-tagging"}
    jet_state = hepfm.load(state.pretrained["jet-tagging"]).state_dict()
    labels = {}
    for strategy in STRATEGIES:
        for seed in range(2):
            folder = StudyLayout(tmp_path).cell("tt_vs_z", 30, strategy, seed)
            result = json.loads((folder / StudyLayout.RESULT).read_text())
            assert result["n_test"] == 40
            labels[strategy, seed] = np.load(folder / "scores.npy")[0]
            model = hepfm.load(tmp_path / result["run"])
            if strategy == "scratch":
                assert model.config.get("jet_model") is None  # the object-level baseline
                continue
            assert model.inputs == "objects+constituents" and model.config["jet_model"] == "deepsets"
            kept = all(torch.equal(v, jet_state[k]) for k, v in model.jet.state_dict().items())
            assert kept == (strategy == "hierarchical_frozen"), strategy
    # every strategy is scored on the same test events, in the same order (paired gains)
    first = labels["scratch", 0]
    assert all(np.array_equal(first, v) for v in labels.values())
    text = write_report(cfg, tmp_path).read_text()
    assert "gain hierarchical_finetune" in text and "gain hierarchical_scratch" in text


@pytest.mark.pythia
def test_hierarchical_strategies_need_stores_with_constituents(stores):
    bad = _config(stores, tasks={"z": {"signal": str(stores / "plain" / "zjets"),
                                       "background": str(stores / "down" / "ttbar")}})
    with pytest.raises(HepfmError, match="constituents"):
        parse_config(bad)
    with pytest.raises(HepfmError, match=r"generation\.constituents"):
        parse_config(_config(stores, tasks=["hplus_vs_ttbar"], pretrain={"lr": 1e-3}))
    with pytest.raises(HepfmError, match="jet_model"):
        parse_config(_config(stores, jet_model="graphnet"))
    # without hierarchical strategies nothing changes
    parse_config(_config(stores, tasks={"z": {"signal": str(stores / "plain" / "zjets"),
                                              "background": str(stores / "down" / "ttbar")}},
                         strategies=["scratch"], test_size=2, sizes=[2]))
