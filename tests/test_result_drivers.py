"""The result drivers in scripts/ still reproduce the configurations recorded beside their results."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_foundation_scaling_writes_the_recorded_study_configurations():
    driver = _script("foundation_scaling")
    record = json.loads((ROOT / "results" / "foundation" / "pretraining.json").read_text())
    base = yaml.safe_load((ROOT / "configs" / "study-cpu.yaml").read_text())
    runs = driver.chosen_runs(record)
    assert set(runs) == set(driver.TAGS)
    for tag in driver.TAGS:
        recorded = yaml.safe_load((ROOT / "results" / "foundation" / "scaling" / tag / "config.yaml").read_text())
        # The recorded studies fine-tuned the tasks recorded then (multilabel was pretrained later).
        models = {task: runs[tag][task] for task in runs[tag] if recorded["pretrain"].get(task) == runs[tag][task]}
        assert set(models) == {"multiclass", "masked"} | ({"multilabel"} & set(recorded["pretrain"])), tag
        assert driver.study_config(base, models) == recorded, tag
