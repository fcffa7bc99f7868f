"""The result drivers in scripts/ still reproduce the configurations recorded beside their results."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from hepfm.errors import HepfmError

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


def test_the_screen_driver_writes_the_protocols_studies_and_applies_its_decision_rule():
    driver = _script("foundation_screen")
    base = yaml.safe_load((ROOT / "configs" / "study-foundation.yaml").read_text())
    cfg = driver.study_config(base, "graphnet-pythia12-multilabel")
    assert cfg["tasks"] == ["hplus_vs_ttbar", "stop_vs_tth", "fcnc_vs_tth", "zprime_vs_ttbar"]
    assert cfg["seeds"] == 2 and cfg["test_size"] == base["test_size"] and cfg["finetune"] == base["finetune"]
    assert cfg["pretrain"]["multi"] == "graphnet-pythia12-multilabel"
    assert cfg["pretrain"]["multiclass"] == base["pretrain"]["multiclass"]
    assert cfg["strategies"] == driver.SHARED_STRATEGIES + driver.CANDIDATE_STRATEGIES
    shared = driver.study_config(base, None)  # the baseline study every candidate links
    assert shared["strategies"] == ["scratch", "finetune_multiclass"] and "multi" not in shared["pretrain"]
    assert {k: v for k, v in shared.items() if k != "strategies"} == {
        k: v for k, v in cfg.items() if k not in ("strategies", "pretrain")} | {"pretrain": shared["pretrain"]}
    from hepfm.study.config import parse_config

    with pytest.raises(HepfmError, match="pretrained for 'multilabel', not 'multi'"):
        parse_config(cfg)  # a valid study but for the backbone, which must be a multi-task one
    args = driver.pretrain_command(Path("s"), Path("r"), "O5", 3e-4)
    assert args[args.index("--heads") + 1] == "multiclass=1,origin=1,heavy=0.5" and "--lr" in args

    def cells(gain_val, gain_test, collapsed=()):
        out = []
        for task in driver.SCREEN_TASKS:
            for seed in (0, 1):
                out.append({"task": task, "seed": seed, "strategy": "scratch", "val_accuracy": 0.80,
                            "accuracy": 0.80, "collapsed": (task, seed) in collapsed})
                out.append({"task": task, "seed": seed, "strategy": "finetune_multi", "collapsed": False,
                            "val_accuracy": 0.80 + gain_val / 100, "accuracy": 0.80 + gain_test / 100})
        return out

    rows = {"A": driver.screen_row(cells(2.0, -5.0)), "B": driver.screen_row(cells(1.7, 9.0)),
            "C": driver.screen_row(cells(0.5, 9.0)),
            "D": driver.screen_row(cells(5.0, 9.0, collapsed={("stop_vs_tth", 0), ("fcnc_vs_tth", 1)}))}
    assert rows["A"]["val_gain"] == pytest.approx(2.0) and rows["A"]["test_gain"] == pytest.approx(-5.0)
    assert rows["D"]["excluded"] == 2 and rows["D"]["cells"] == 6
    # the standard error over the cells: zero for equal gains, the spread over sqrt(n) otherwise
    assert rows["A"]["val_gain_err"] == pytest.approx(0.0, abs=1e-9) and rows["A"]["test_gain_err"] == pytest.approx(
        0.0, abs=1e-9)
    spread = driver.screen_row(cells(2.0, -5.0)[:-2] + cells(4.0, 1.0)[-2:])
    # seven cells at -5, one at +1: mean -4.25, sample sd sqrt(31.5 / 7), over sqrt(8): 0.75
    assert spread["test_gain"] == pytest.approx(-4.25) and spread["test_gain_err"] == pytest.approx(0.75)
    decision = driver.decide(rows, {"A": 0.5, "B": 0.2, "C": 0.1, "D": 0.1})
    # D is disqualified (two excluded cells); A and B tie within 0.5 points and B is cheaper; test gains are
    # never read; C is more than 1 point behind, so two are carried.
    assert decision["winner"] == "B" and decision["carried"] == ["A", "B"] and "D" not in decision["ranked"]


def test_the_screen_record_keeps_finished_work_and_leaves_unfinished_work_to_redo(tmp_path):
    driver = _script("foundation_screen")
    screen, record, again = tmp_path / "screen", tmp_path / "record", tmp_path / "again"

    def write(rel: str, text: str = "{}") -> None:
        (screen / rel).parent.mkdir(parents=True, exist_ok=True)
        (screen / rel).write_text(text)

    for run in ("pretrain/O1/lr0.0003", "pretrain/O1/lr0.001"):
        write(f"{run}/config.json"), write(f"{run}/history.csv", "epoch,val_loss\n0,1\n"), write(f"{run}/cpu.json")
        write(f"{run}/model.safetensors", "weights")
    write("pretrain/O2/lr0.0003/config.json"), write("pretrain/O2/lr0.0003/checkpoint.pt", "training")
    write("chosen.json", json.dumps({"O1": {"run": str(screen / "pretrain/O1/lr0.0003"), "lr": 3e-4}}))
    write("study/baseline.yaml", "seeds: 2\n")
    for group, seeds in (("hplus_vs_ttbar/1000/scratch", (0, 1)), ("stop_vs_tth/1000/scratch", (0,))):
        write(f"study/baseline/tuning/{group}/tuning.json"), write(f"study/baseline/tuning/{group}/lr0.001/config.json")
        write(f"study/baseline/tuning/{group}/lr0.001/model.safetensors", "weights")
        for k in seeds:
            for name in ("result.json", "scores.npy", "latent.npy"):
                write(f"study/baseline/cells/{group}/seed{k}/{name}")
    write("study/baseline/stores/downstream/events.parquet", "events")
    linked = screen / "study/O1/tuning/hplus_vs_ttbar/1000"
    linked.mkdir(parents=True)
    (linked / "scratch").symlink_to(screen / "study/baseline/tuning/hplus_vs_ttbar/1000/scratch")

    driver.save(screen, record)
    saved = {str(p.relative_to(record)) for p in record.rglob("*") if p.is_file()}
    assert "pretrain/O1/lr0.0003/model.safetensors" in saved  # the chosen backbone's weights
    assert "pretrain/O1/lr0.001/model.safetensors" not in saved and "pretrain/O1/lr0.001/history.csv" in saved
    assert not any(s.startswith("pretrain/O2") for s in saved)  # still training: redone, not taken as finished
    assert "study/baseline/cells/hplus_vs_ttbar/1000/scratch/seed1/result.json" in saved
    assert "study/baseline/cells/hplus_vs_ttbar/1000/scratch/seed1/scores.npy" in saved  # the report's errors
    assert not any(s.endswith("latent.npy") for s in saved)  # CKA's latents: too large to commit
    assert "study/baseline/tuning/hplus_vs_ttbar/1000/scratch/lr0.001/config.json" in saved
    assert not any("stop_vs_tth" in s for s in saved)  # seed 1 unfinished: the group still needs its weights
    assert not any("stores" in s or s.startswith("study/O1/") for s in saved)  # regenerated; linked
    assert json.loads((record / "chosen.json").read_text())["O1"]["run"] == "pretrain/O1/lr0.0003"

    (again / "chosen.json").parent.mkdir(parents=True)
    (again / "chosen.json").write_text("kept")
    driver.restore(again, record)
    assert (again / "chosen.json").read_text() == "kept"  # restore never overwrites
    assert (again / "pretrain/O1/lr0.0003/model.safetensors").read_text() == "weights"
    assert driver._finished(again / "pretrain/O1/lr0.001")


def test_the_screen_studies_wait_for_each_candidate_until_pretraining_ends(tmp_path, monkeypatch):
    driver = _script("foundation_screen")
    studied, polls = [], []
    monkeypatch.setattr(driver, "_run_study", lambda out, name, backbone, jobs: studied.append((name, backbone)))
    monkeypatch.setattr(driver, "save", lambda out, record: None)

    def sleep(_):  # pretraining finishes O2 while the study waits, then ends without O3
        polls.append(len(studied))
        chosen = {"O1": {"run": "pretrain/O1/lr0.001"}, "O2": {"run": "pretrain/O2/lr0.0003"}}
        (tmp_path / "chosen.json").write_text(json.dumps(chosen))
        (tmp_path / driver.PRETRAIN_EXIT).write_text("{}")

    import time

    monkeypatch.setattr(time, "sleep", sleep)
    (tmp_path / "chosen.json").write_text(json.dumps({"O1": {"run": "pretrain/O1/lr0.001"}}))
    driver.study(tmp_path, ["O1", "O2", "O3"], jobs=1, wait=True, record=tmp_path / "record")
    assert [n for n, _ in studied] == ["baseline", "O1", "O2"] and polls == [2]
    assert studied[0][1] is None and studied[2][1] == str((tmp_path / "pretrain/O2/lr0.0003").resolve())


def test_the_screen_summary_reports_every_strategy_and_is_provisional_until_every_candidate_is_done(tmp_path):
    driver = _script("foundation_screen")

    def cell(study: str, task: str, strategy: str, seed: int, val: float, test: float) -> None:
        folder = tmp_path / "study" / study / "cells" / task / "1000" / strategy / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({"task": task, "seed": seed, "strategy": strategy,
                                                        "val_accuracy": val, "accuracy": test, "collapsed": False}))

    for task in driver.SCREEN_TASKS:
        for seed in (0, 1):
            cell("baseline", task, "scratch", seed, 0.80, 0.81)
            cell("baseline", task, "finetune_multiclass", seed, 0.81, 0.82)
            cell("O1", task, "finetune_multi", seed, 0.83, 0.80)
            cell("O1", task, "frozen_multi", seed, 0.78, 0.79)
    for task in driver.SCREEN_TASKS:  # linked from the baseline study, as the driver does
        link = tmp_path / "study/O1/cells" / task / "1000/scratch"
        link.symlink_to(tmp_path / f"study/baseline/cells/{task}/1000/scratch")
    run = tmp_path / "pretrain/O1/lr0.001"
    run.mkdir(parents=True)
    (run / "cpu.json").write_text(json.dumps({"cpu_s": 1800}))
    (tmp_path / "chosen.json").write_text(json.dumps({"O1": {"run": "pretrain/O1/lr0.001", "lr": 1e-3}}))

    driver.summarise(tmp_path, tmp_path / "dest")
    summary = json.loads((tmp_path / "dest/screen.json").read_text())
    assert summary["final"] is False and summary["winner"] == "O1"  # the best finished one, not yet final
    assert summary["rows"]["O1"]["val_gain"] == pytest.approx(3.0)
    assert summary["rows"]["O1"]["test_gain"] == pytest.approx(-1.0)
    assert summary["rows"]["O1"]["frozen"]["val_gain"] == pytest.approx(-2.0)
    assert summary["reference"]["val_gain"] == pytest.approx(1.0) and summary["cpu_hours"]["O1"] == 0.5
    table = (tmp_path / "dest/screen.md").read_text()
    assert "PROVISIONAL" in table and "| O1 (winner) | multiclass×1 | 0.001 | +3.00 ± 0.00 | 8 (0) |" in table
    assert "| shipped multiclass | +1.00 / +1.00 |" in table
