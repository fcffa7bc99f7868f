"""The driver of stages 2-5 of the foundation-v2 protocol (scripts/foundation_stages.py): each stage configured
from the previous stage's decision as the protocol's text says, its candidates pretrained and studied with the
commands the protocol fixes, and its decision rule (stage 1's; stage 2's kept recipe axes; stage 5's size)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def driver(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location("foundation_stages", ROOT / "scripts" / "foundation_stages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "CONFIGS", tmp_path / "configs")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    yield module
    sys.modules.pop("foundation_screen", None)


def _run(folder: Path, train_time_s: float = 600.0, val_losses=(0.5,)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"training": {"train_time_s": train_time_s}}))
    (folder / "history.csv").write_text("epoch,val_loss\n" + "".join(f"{k},{v}\n" for k, v in enumerate(val_losses)))


def _decide(driver, stage: int, winner: str, run: str, study: str, spec: dict, **extra) -> None:
    path = driver.decision_path(stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"final": True, "winner": winner, "runs": {winner: run}, "studies": {winner: study},
                                "cpu_hours": {winner: 0.2}, "specs": {winner: spec}, **extra}))


def test_each_stage_is_configured_from_the_previous_decision_as_the_protocol_says(driver, tmp_path):
    out = tmp_path / "screen"
    record = driver.record_path(1)
    (record / "pretrain/O5/lr0.0003").mkdir(parents=True)
    (record / "chosen.json").write_text(json.dumps({"O5": {"run": "pretrain/O5/lr0.0003", "lr": 3e-4}}))
    driver.decision_path(1).write_text(json.dumps({"final": False, "winner": "O5", "cpu_hours": {"O5": 0.2}}))
    with pytest.raises(SystemExit, match="no final winner"):
        driver.write_stage_config(2, out)
    driver.decision_path(1).write_text(json.dumps({"final": True, "winner": "O5", "cpu_hours": {"O5": 0.2}}))
    stage2 = driver.load_stage(driver.write_stage_config(2, out))
    with pytest.raises(SystemExit, match="fixed before it runs"):
        driver.write_stage_config(2, out)
    (o5,) = stage2["candidates"].values()
    assert o5["spec"]["heads"] == {"multiclass": 1.0, "origin": 1.0, "heavy": 0.5} and o5["cpu_hours"] == 0.2
    assert (ROOT / o5["backbone"]).resolve() == (record / "pretrain/O5/lr0.0003").resolve()
    assert stage2["shared"] is None  # stage 2 tunes the baseline and the shipped model with the recipe itself
    assert stage2["study"]["finetune"]["optimizer"] == "adamw" and "multi" not in stage2["study"]["pretrain"]
    assert stage2["study"]["strategies"] == ["scratch", "finetune_multiclass", "finetune_multi"]

    _run(out / "pretrain/O5/lr0.0003", train_time_s=612.0)
    _decide(driver, 2, "O5", "pretrain/O5/lr0.0003", "stage2/study/O5", o5["spec"], kept_axes=["weight_decay"])
    stage3 = driver.load_stage(driver.write_stage_config(3, out))
    assert stage3["study"] == stage2["study"]  # every recipe axis: the shared cells were tuned on these points
    assert stage3["shared"] == "stage2/study/O5" and list(stage3["candidates"]) == ["O5", "O5-pretrain"]
    assert stage3["candidates"]["O5"]["study"] == "stage2/study/O5"
    twelve = stage3["candidates"]["O5-pretrain"]["pretrain"]
    assert twelve == {**o5["spec"], "group": "pretrain"}  # only the process mix changes

    _run(out / "stage3/pretrain/O5-pretrain/lr0.001", train_time_s=480.0)
    _decide(driver, 3, "O5-pretrain", "stage3/pretrain/O5-pretrain/lr0.001", "stage3/study/O5-pretrain", twelve)
    stage4 = driver.load_stage(driver.write_stage_config(4, out))
    assert stage4["shared"] == "stage3/study/O5-pretrain"
    wide, transformer = (stage4["candidates"][f"O5-pretrain-{k}"]["pretrain"] for k in ("w128", "transformer"))
    assert wide["model_options"] == {"width": 128} and wide["max_train_time_s"] == 480.0
    assert transformer["model"] == "transformer" and transformer["max_train_time_s"] == 480.0
    assert wide["group"] == transformer["group"] == "pretrain" and wide["events"] == 100_000

    _run(out / "stage4/pretrain/O5-pretrain-w128/lr0.001")
    _decide(driver, 4, "O5-pretrain-w128", "stage4/pretrain/O5-pretrain-w128/lr0.001",
            "stage4/study/O5-pretrain-w128", wide)
    stage5 = driver.load_stage(driver.write_stage_config(5, out))
    small, _, large = stage5["candidates"].values()
    assert small["pretrain"]["events"] == 10_000 and large["pretrain"]["events"] == 1_000_000
    assert small["pretrain"]["max_train_time_s"] is None and large["pretrain"]["model_options"] == {"width": 128}
    # stage 4's winner was trained to the time budget: its 1e5 point is retrained to its own early stop
    assert stage5["candidates"]["O5-pretrain-w128-1e5"]["pretrain"] == {**large["pretrain"], "events": 100_000}


def test_a_bad_stage_configuration_is_a_clear_error(driver, tmp_path):
    path = tmp_path / "stage.yaml"
    path.write_text(yaml.safe_dump({"study": {}, "candidates": {"A": {"pretrain": {}, "study": "x"}}}))
    with pytest.raises(SystemExit, match="'A' needs exactly one of pretrain, backbone, study"):
        driver.load_stage(path)
    path.write_text(yaml.safe_dump({"study": {}, "candidates": {"A": {"pretrain": {"epochs": 3}}}}))
    with pytest.raises(SystemExit, match=r"unknown pretrain key\(s\) \['epochs'\]"):
        driver.load_stage(path)
    path.write_text("candidates: [")
    with pytest.raises(SystemExit, match="cannot read the stage configuration"):
        driver.load_stage(path)


def _stage(driver, stage: int, candidates: dict, shared=None) -> None:
    study = yaml.safe_load((ROOT / "configs" / "study-foundation.yaml").read_text())
    study = {**driver.screen.stage2_config(study, "unused"), "pretrain": {"multiclass": "graphnet-pythia12-multiclass"}}
    driver.config_path(stage).parent.mkdir(parents=True, exist_ok=True)
    driver.config_path(stage).write_text(yaml.safe_dump({"stage": stage, "question": "q", "shared": shared,
                                                         "study": study, "candidates": candidates}))


def test_a_stage_pretrains_each_candidate_at_every_rate_and_studies_the_better_one(driver, tmp_path, monkeypatch):
    out = tmp_path / "screen"
    (out / "study/baseline/stores").mkdir(parents=True)
    shared = out / "stage2/study/O5"
    for strategy in ("scratch", "finetune_multiclass"):
        (shared / "cells/hplus_vs_ttbar/1000" / strategy).mkdir(parents=True)
        (shared / "tuning/hplus_vs_ttbar/1000" / strategy).mkdir(parents=True)
    spec = {"group": "pretrain", "events": 100_000, "seed": 3001, "heads": {"multiclass": 1.0, "origin": 1.0},
            "model": "graphnet", "model_options": {"width": 128}, "rates": [3e-4, 1e-3], "max_train_time_s": 480.0}
    _stage(driver, 4, {"O5": {"study": "stage2/study/O5", "run": "r", "cpu_hours": 0.2, "spec": spec},
                       "O5-w128": {"pretrain": spec}}, shared="stage2/study/O5")
    commands = []

    def fake_run(args, check):
        commands.append(args[3:])

    def fake_parallel(batch, cpu_files):
        for k, (args, cpu_file) in enumerate(zip(batch, cpu_files, strict=True)):
            lr = float(args[args.index("--lr") + 1])
            _run(Path(args[args.index("-o") + 1]), val_losses=(0.9, 0.4 if lr == 1e-3 else 0.6))
            cpu_file.write_text(json.dumps({"cpu_s": 100.0 * (k + 1)}))
        commands.extend(batch)

    monkeypatch.setattr(driver.subprocess, "run", fake_run)
    monkeypatch.setattr(driver, "_hepfm_parallel", fake_parallel)
    driver.run_stage(4, out)
    generate, rate1, rate2, study = commands
    assert generate[:4] == ["generate", "pretrain", "--events", "8334"]  # 100,000 over the 12 processes
    assert generate[generate.index("--seed") + 1] == "3001"
    assert generate[-1] == str(out / "stores/pretrain-100000-s3001")  # one store per spec, for every stage
    for args, lr in ((rate1, "0.0003"), (rate2, "0.001")):
        assert args[args.index("--heads") + 1] == "multiclass=1,origin=1" and args[args.index("--lr") + 1] == lr
        assert args[args.index("--model-option") + 1] == "width=128"
        assert args[args.index("--max-train-time-s") + 1] == "480"
        assert args[args.index("--batch-size") + 1] == 512 and args[args.index("--epochs") + 1] == 30
    chosen = json.loads((out / "stage4/chosen.json").read_text())["O5-w128"]
    assert chosen["run"] == "pretrain/O5-w128/lr0.001"  # the lower validation loss of its own objective
    assert json.loads((out / "stage4/pretrain/O5-w128/lr0.001/cpu.json").read_text()) == {"cpu_s": 200.0}
    assert study[0] == "study" and study[study.index("--out") + 1] == str(out / "stage4/study/O5-w128")
    written = yaml.safe_load((out / "stage4/study/O5-w128.yaml").read_text())
    assert written["pretrain"]["multi"] == str((out / "stage4/pretrain/O5-w128/lr0.001").resolve())
    folder = out / "stage4/study/O5-w128"
    assert (folder / "stores").resolve() == (out / "study/baseline/stores").resolve()
    assert (folder / "cells/hplus_vs_ttbar/1000/scratch").resolve() == (
        shared / "cells/hplus_vs_ttbar/1000/scratch").resolve()  # the shared baseline is linked, not retrained
    commands.clear()
    driver.run_stage(4, out)  # resumed: nothing pretrained again, no store generated
    assert [c[0] for c in commands] == ["study"]


def test_a_stage_refuses_to_run_without_the_study_it_links(driver, tmp_path):
    """Without the shared cells (an earlier stage not restored) the study would retrain the baseline elsewhere."""
    out = tmp_path / "screen"
    _stage(driver, 3, {"O5": {"study": "stage2/study/O5", "run": "r", "cpu_hours": 0.2, "spec": {}}},
           shared="stage2/study/O5")
    with pytest.raises(SystemExit, match="stage2/study/O5: the study stage 3 links is missing"):
        driver.run_stage(3, out)


def test_a_finished_run_keeps_its_cpu_time_when_the_other_rate_fails(driver, tmp_path):
    ok, bad = tmp_path / "ok.json", tmp_path / "bad.json"
    with pytest.raises(SystemExit, match="pretraining failed"):
        driver._hepfm_parallel([["--help"], ["no-such-command"]], [ok, bad])
    assert set(json.loads(ok.read_text())) == {"cpu_s"} and not bad.exists()


def _cells(folder: Path, strategy: str, val: float, test: float, tasks) -> None:
    for task in tasks:
        for seed in (0, 1):
            cell = folder / "cells" / task / "1000" / strategy / f"seed{seed}"
            cell.mkdir(parents=True)
            (cell / "result.json").write_text(json.dumps({"task": task, "seed": seed, "strategy": strategy,
                                                          "val_accuracy": val, "accuracy": test,
                                                          "collapsed": False}))


def test_stage2_reports_the_recipe_each_cell_kept_and_stage5_decides_the_final_size(driver, tmp_path):
    out = tmp_path / "screen"
    (out / "study/baseline/stores").mkdir(parents=True)
    tasks = driver.screen.SCREEN_TASKS
    study = out / "stage2/study/O5"
    _cells(study, "scratch", 0.80, 0.80, tasks)
    _cells(study, "finetune_multi", 0.83, 0.82, tasks)
    for task in tasks:
        for strategy, recipe in (("scratch", {"weight_decay": 0.0}),
                                 ("finetune_multi", {"weight_decay": 0.0, "ema_decay": 0.999})):
            tuning = study / "tuning" / task / "1000" / strategy
            tuning.mkdir(parents=True)
            # the head-rate multiplier: 10x (ratio 0.1) everywhere but one cell, which kept 50x
            bb = None if strategy == "scratch" else 2e-5 if task == tasks[0] else 1e-4
            (tuning / "tuning.json").write_text(json.dumps({"chosen": "p", "grid": [
                {"point": "q", "lr": 1e-4, "backbone_lr": None}, {"point": "p", "lr": 1e-3, "backbone_lr": bb,
                                                                  "recipe": recipe}]}))
    _stage(driver, 2, {"O5": {"backbone": "x", "run": "pretrain/O5/lr0.0003", "cpu_hours": 0.2, "spec": {}}})
    decision = driver.summarise_stage(2, out)
    assert decision["final"] and decision["winner"] == "O5"
    assert decision["rows"]["O5"]["val_gain"] == pytest.approx(3.0)
    # weight decay chosen nowhere: dropped from the final recipe; 50x chosen once: kept
    assert decision["kept_axes"] == ["backbone_ratios", "ema_decay"]
    assert decision["kept"]["O5"]["stop_vs_tth/finetune_multi"]["ratio"] == pytest.approx(0.1)
    assert decision["studies"] == {"O5": "stage2/study/O5"} and decision["runs"]["O5"] == "pretrain/O5/lr0.0003"
    summary = (driver.RESULTS / "stage2/summary.md").read_text()
    assert "| O5 (winner) | +3.00 ± 0.00 | 8 (0) | +2.00 ± 0.00 | 0.20 |" in summary and "ema_decay" in summary

    shared = "stage2/study/O5"
    for name, gain in (("W-1e4", 0.81), ("W-1e6", 0.86)):
        _cells(out / "stage5/study" / name, "finetune_multi", gain, gain, tasks)
        _run(out / f"stage5/pretrain/{name}/lr0.001")
        (out / f"stage5/pretrain/{name}/lr0.001/cpu.json").write_text(json.dumps({"cpu_s": 3600}))
    (out / "stage5").mkdir(exist_ok=True)
    (out / "stage5/chosen.json").write_text(json.dumps({n: {"run": f"pretrain/{n}/lr0.001"} for n in ("W-1e4",
                                                                                                  "W-1e6")}))
    _stage(driver, 5, {"W-1e4": {"pretrain": {}}, "W-1e5": {"study": shared, "run": "r", "cpu_hours": 0.2,
                                                           "spec": {}}, "W-1e6": {"pretrain": {}}}, shared=shared)
    decision = driver.summarise_stage(5, out)
    assert decision["still_rising"] and decision["final_events"] == 2_000_000  # +3 points from 1e5 to 1e6
    assert decision["cpu_hours"] == {"W-1e4": 1.0, "W-1e5": 0.2, "W-1e6": 1.0}
    # The scratch cells of every candidate are stage 2's, linked.
    assert (out / "stage5/study/W-1e4/cells/fcnc_vs_tth/1000/scratch").is_symlink()


def test_the_final_stage_is_configured_from_the_recipe_and_scaling_decisions(driver, tmp_path):
    from hepfm.study.config import parse_config

    spec = {"group": "pretrain-wide", "events": 1_000_000, "seed": 3001, "heads": {"multiclass": 1.0},
            "model": "graphnet", "model_options": {}, "rates": [3e-4, 1e-3], "max_train_time_s": None}
    stage2_study = {**driver.screen.stage2_config(yaml.safe_load((ROOT / "configs/study-foundation.yaml").read_text()),
                                                  "unused"), "pretrain": {"multiclass": "graphnet-pythia12-multiclass"}}
    _stage(driver, 5, {"W-1e4": {"pretrain": {**spec, "events": 10_000}}, "W-1e5": {"study": "s", "run": "r",
                       "cpu_hours": 0.2, "spec": spec}, "W-1e6": {"pretrain": spec}}, shared="s")
    _decide(driver, 2, "O5", "r", "s", spec, kept_axes=["ema_decay", "linear_probe"])
    path = driver.decision_path(5)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"final": True, "winner": "W-1e6", "specs": {"W-1e6": spec},
                                "final_events": 2_000_000}))
    driver.record_path(5).mkdir(parents=True)
    (driver.record_path(5) / "chosen.json").write_text(json.dumps({"W-1e6": {"run": "x", "lr": 3e-4}}))
    cfg = driver.load_stage(driver.write_stage_config(driver.FINAL, tmp_path))
    assert driver.config_path(driver.FINAL).name == "final.yaml"
    assert driver.config_path(driver.FINAL).read_text().startswith("# The final stage")
    (pretrain,) = (c["pretrain"] for c in cfg["candidates"].values())
    assert list(cfg["candidates"]) == ["W-final"] and pretrain["events"] == 2_000_000
    assert pretrain["rates"] == [3e-4] and pretrain["max_train_time_s"] == 7 * 3600  # within the 8 CPU-hours
    ship = cfg["study"]
    assert ship["tasks"] == driver.FINAL_TASKS and ship["sizes"] == [1000, 10000] and ship["seeds"] == 3
    assert ship["test_size"] == 2000 and ship["generation"]["downstream_events"] == 2000 + 3 * 37_500
    # The final recipe: stage 2's axes that some cell kept, in their order; the rest dropped.
    assert list(ship["finetune"]["recipe"]) == ["ema_decay", "linear_probe"]
    assert ship["finetune"]["backbone_ratios"] == [0.1]  # no stage-2 cell kept 50x
    assert ship["finetune"]["recipe"]["ema_decay"] == stage2_study["finetune"]["recipe"]["ema_decay"]
    curve3, curve30 = (cfg["extra_studies"][k] for k in ("scratch-3e3", "scratch-3e4"))
    assert curve3["stores"] == "final/study/W-final/stores" and curve3["study"]["strategies"] == ["scratch"]
    assert curve30["study"]["tasks"] == ["hplus_vs_ttbar", "stop_vs_tth"]
    # one store for the ship study and the whole scratch curve: the same test events at every size
    assert curve30["stores"] == curve3["stores"] and curve30["study"]["generation"] == ship["generation"]
    for study in (curve3["study"], curve30["study"], {**ship, "strategies": ["scratch", "finetune_multiclass"]}):
        parse_config(yaml.safe_load(yaml.safe_dump(study)))  # each is a valid study configuration


def test_the_ship_rule_and_the_events_for_equal_accuracy():
    spec = importlib.util.spec_from_file_location("stages", ROOT / "scripts" / "foundation_stages.py")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        driver = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(driver)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    tasks = {f"t{k}": (1.5, 0.3) for k in range(5)}
    assert driver.ship_rule(tasks)["ships"]
    assert not driver.ship_rule({**tasks, "t0": (-0.5, 0.3)})["ships"]  # one task worse than its error
    assert driver.ship_rule({**tasks, "t0": (-0.5, 0.6)})["tasks_worse"] == []
    assert not driver.ship_rule({t: (0.9, 0.1) for t in tasks})["ships"]  # below the +1.0 margin
    assert not driver.ship_rule({t: (1.2, 1.5) for t in tasks})["ships"]  # not twice its error (0.67)
    curve = [(80.0, 0.2), (82.0, 0.2), (84.0, 0.2), (85.0, 0.2)]
    sizes = [1000, 3000, 10000, 30000]
    eff = driver.events_for_equal_accuracy(sizes, curve, (84.0, 0.2), 1000)
    assert eff["kind"] == "=" and eff["factor"] == pytest.approx(10.0)
    assert eff["low"][1] < 10.0 < eff["high"][1]  # the range: both curves' errors
    beyond = driver.events_for_equal_accuracy(sizes, curve, (86.0, 0.2), 1000)
    assert beyond["kind"] == ">" and beyond["factor"] == 30.0  # more than the curve's largest size


def test_the_final_summary_reads_every_study_and_states_the_decisions(driver, tmp_path):
    import numpy as np

    out = tmp_path / "screen"
    y = np.repeat([0.0, 1.0], 200)

    def cells(study: Path, task: str, size: int, strategy: str, accuracy: float) -> None:
        for seed in range(3):
            cell = study / "cells" / task / str(size) / strategy / f"seed{seed}"
            cell.mkdir(parents=True)
            acc = accuracy + 0.002 * (seed - 1)
            wrong = round((1 - acc) * len(y))
            scores = np.where(y == 1, 0.9, 0.1)
            scores[:wrong] = 0.9  # the first `wrong` background events called signal
            np.save(cell / "scores.npy", np.stack([y, scores]).astype(np.float32))
            (cell / "result.json").write_text(json.dumps({"task": task, "seed": seed, "strategy": strategy,
                                                          "accuracy": float(np.mean((scores >= 0.5) == y))}))

    spec = {"group": "pretrain-wide", "events": 2_000_000, "seed": 3001, "heads": {"multiclass": 1.0},
            "rates": [3e-4]}
    _stage(driver, driver.FINAL, {"W-final": {"pretrain": spec}})
    cfg = yaml.safe_load(driver.config_path(driver.FINAL).read_text())
    cfg["study"] |= {"tasks": driver.FINAL_TASKS, "sizes": [1000, 10000], "seeds": 3,
                     "strategies": ["scratch", "finetune_multiclass", "finetune_multi"]}
    cfg["extra_studies"] = {"scratch-3e3": {"stores": None, "study": {"tasks": driver.FINAL_TASKS, "sizes": [3000]}}}
    driver.config_path(driver.FINAL).write_text(yaml.safe_dump(cfg))
    ship = out / "final/study/W-final"
    for task in driver.FINAL_TASKS:
        cells(ship, task, 1000, "scratch", 0.80)
        cells(ship, task, 10000, "scratch", 0.84)
        cells(out / "final/study/scratch-3e3", task, 3000, "scratch", 0.82)
        cells(ship, task, 1000, "finetune_multiclass", 0.81)
        cells(ship, task, 10000, "finetune_multiclass", 0.845)
        cells(ship, task, 1000, "finetune_multi", 0.83)
        cells(ship, task, 10000, "finetune_multi", 0.85)
    result = driver.summarise_final(out)
    assert result["final"]
    row = result["table"]["hplus_vs_ttbar/1000"]
    assert row["finetune_multi"][0] == pytest.approx(3.0, abs=0.01) and row["excess"][0] == pytest.approx(2.0, abs=0.01)
    assert 0 < row["excess"][1] < 2.0  # seeds and the paired test-sample error
    assert result["ship_rule"]["ships"] and result["ship_rule"]["mean_excess"] == pytest.approx(2.0, abs=0.01)
    eff = result["efficiency"]["wh_vs_zh"][1000]  # 83% is halfway (in log size) from 3e3 (82%) to 1e4 (84%)
    assert eff["kind"] == "=" and eff["factor"] == pytest.approx((3000 * 10000) ** 0.5 / 1000, rel=0.02)
    assert result["efficiency"]["wh_vs_zh"][10000]["kind"] == ">"  # beyond the curve's 1e4
    assert not result["goal"]["reached"] and result["goal"]["tasks_tenfold"] == []  # +3 points, ~5.5x
    summary = (driver.RESULTS / "final/summary.md").read_text()
    assert "it ships" in summary and "not reached" in summary and "| wh_vs_zh | 1,000 | 80.00 ±" in summary


def test_stage2s_study_with_stage1s_winner_parses_and_tunes_the_recipe_axes(driver, tmp_path, monkeypatch):
    from hepfm.study.config import parse_config
    from hepfm.testing import multi_task_store
    from hepfm.train.trainer import TrainConfig
    from hepfm.train.workflows import pretrain

    record = driver.record_path(1)
    store = multi_task_store(tmp_path / "store", n_per_class=60)
    pretrain(store, record / "pretrain/O5/lr0.0003", "multi", heads={"multiclass": 1.0, "origin": 1.0},
             cfg=TrainConfig(epochs=1, batch_size=64, progress=False, tensorboard=False))
    (record / "chosen.json").write_text(json.dumps({"O5": {"run": "pretrain/O5/lr0.0003", "lr": 3e-4}}))
    driver.decision_path(1).write_text(json.dumps({"final": True, "winner": "O5", "cpu_hours": {"O5": 0.2}}))
    text = driver.write_stage_config(2, tmp_path / "screen").read_text()
    assert text.startswith("# Stage 2 of results/foundation-v2/PROTOCOL.md: fine-tuning recipe")
    stage = yaml.safe_load(text)
    monkeypatch.chdir(ROOT)  # the backbone is named relative to the repository
    backbone = stage["candidates"]["O5"]["backbone"]
    study = {**stage["study"], "pretrain": {**stage["study"]["pretrain"], "multi": backbone}}
    cfg = parse_config(study)  # the study run_stage runs: the multi-task backbone is accepted
    assert cfg.strategies == ["scratch", "finetune_multiclass", "finetune_multi"]
    assert cfg.finetune.optimizer == "adamw" and cfg.finetune.backbone_ratios == (0.1, 0.02)
    assert list(cfg.finetune.recipe) == ["weight_decay", "ema_decay", "layer_decay", "linear_probe"]
    assert cfg.finetune.recipe_axes("train") == [("weight_decay", (0.0, 0.01)), ("ema_decay", (0.0, 0.999))]
