"""``hepfm demo``: the whole workflow in minutes on a laptop — a miniature study.

It generates small samples of the 12 pretraining processes and of H+ -> tb and tt, pretrains a
multiclass GraphNet, then trains H+-vs-tt classifiers on 1000 events per class from scratch and by
fine-tuning the pretrained model, evaluates both on the same 2000 test events per class, and writes a ROC curve and a
short report. Everything lives in the output folder; a rerun reuses what is finished.
"""

from __future__ import annotations

from hepfm.study.config import StudyConfig, parse_config

DEMO_CONFIG = {
    "tasks": ["hplus_vs_ttbar"],
    "sizes": [1000],
    "strategies": ["scratch", "finetune_multiclass"],
    "seeds": 1,
    "test_size": 2000,
    "generation": {"seed": 7, "pretrain_events": 1000, "downstream_events": 3300, "workers": 2},
    "pretrain": {"epochs": 25, "batch_size": 256, "lr": 1.0e-4, "patience": 3},
    "finetune": {"epochs": 40, "batch_size": 128, "lr": 1.0e-3, "backbone_lr": 1.0e-4, "patience": 6},
    "cka": {"events": 1000},
}


def demo_config() -> StudyConfig:
    """The demo's study configuration (validated)."""
    return parse_config(DEMO_CONFIG, "hepfm demo")
