"""``hepfm demo``: the whole workflow in about two minutes on a laptop — a miniature study.

It starts from the package's own foundation model (``graphnet-pythia12-multiclass``, pretrained on a million
events: nothing is pretrained here), generates small samples of H+ -> tb and tt, and trains H+-vs-tt
classifiers on 1000 events per class from scratch and by fine-tuning the shipped model. Each strategy first
chooses its learning rate on validation data from three points (scratch: 1e-4, 3e-4, 1e-3; fine-tuning: head
1e-4, 3e-4, 1e-3 with the backbone 10x lower). Both are evaluated on the same test events; the demo writes
cells.csv, a ROC curve and a short report. Everything lives in the output folder; a rerun reuses what is
finished.
"""

from __future__ import annotations

from hepfm.study.config import StudyConfig, parse_config

SHIPPED_MULTICLASS = "graphnet-pythia12-multiclass"

DEMO_CONFIG = {
    "tasks": ["hplus_vs_ttbar"],
    "sizes": [1000],
    "strategies": ["scratch", "finetune_multiclass"],
    "seeds": 1,
    "test_size": 2000,
    "generation": {"seed": 7, "downstream_events": 3300, "workers": 2},
    "pretrain": {"multiclass": SHIPPED_MULTICLASS, "lr": 1.0e-4},  # lr unused: the shipped model is given
    "finetune": {"epochs": 100, "batch_size": 128, "patience": 5, "lr_grid": [1.0e-4, 3.0e-4, 1.0e-3],
                 "backbone_ratios": [0.1]},
    "cka": {"events": 1000},
}


def demo_config() -> StudyConfig:
    """The demo's study configuration (validated)."""
    return parse_config(DEMO_CONFIG, "hepfm demo")
