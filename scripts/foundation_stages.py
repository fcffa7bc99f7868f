"""Stages 2-5 of the foundation-v2 screen (results/foundation-v2/PROTOCOL.md), resumable, after stage 1
(scripts/foundation_screen.py) in the same screen folder:

    python scripts/foundation_stages.py configure N --out SCREEN   # configs/foundation-v2/stageN.yaml, from N-1
    python scripts/foundation_stages.py run N --out SCREEN         # pretrain the stage's candidates, study them
    python scripts/foundation_stages.py summarise N --out SCREEN   # results/foundation-v2/stageN/: table, decision
    python scripts/foundation_stages.py save N --out SCREEN        # results/foundation-v2/stageN/record
    python scripts/foundation_stages.py restore N --out SCREEN     # on a fresh machine, before resuming

and the final model the same way with N = ``final``: pretrained on the final set (stage 5's size) for at most
FINAL_TRAIN_S seconds of training, then the ship-rule study (the five Table I tasks at 1e3 and 1e4 events per
class, 3 seeds, against the scratch baseline and the shipped model) and the scratch curve of the data-efficiency
table (3e3 on every task, 3e4 on H+ and stop); ``summarise final`` applies the ship rule and writes Table I,
the data-efficiency table and the issue's goal, reached or not.

A stage's configuration is written from the previous stage's committed decision (``decision.json``, stage 1's
``screen.json``) *before* the stage runs, and committed; ``run`` reads only that file. It lists the stage's
``candidates``, each either

* ``pretrain``: pretrained here (a store of ``group`` x ``events`` generated from ``seed``, the candidate's
  ``heads``, ``model`` and ``model_options``, every rate of ``rates``, optionally ``max_train_time_s``), the rate
  with the lowest validation loss of its own objective kept, then fine-tuned by the stage's ``study``;
* ``backbone``: a given pretrained model, fine-tuned by the stage's ``study`` (stage 2: stage 1's winner);
* ``study``: a study folder of an earlier stage (relative to SCREEN) that measured this candidate already with
  the same recipe (the incumbent), with its ``cpu_hours``, ``run`` and ``train_time_s``.

Every candidate's study reads stage 1's downstream stores (``study/baseline/stores``: the same seeds); when the
stage names ``shared`` (a study folder with the scratch baseline and the shipped model tuned with the same
recipe), those cells are linked instead of retrained. The decision rule is stage 1's (``foundation_screen.
decide``); stage 2 reports the recipe each cell kept (an axis no cell kept is dropped from the final
recipe), stage 5 decides the final pretraining set's size.
Each stage's folder SCREEN/stageN has stage 1's layout (``chosen.json``, ``pretrain/``, ``study/``), so the record
is saved and restored by the same code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import foundation_screen as screen  # a sibling script, not a package

ROOT = screen.ROOT
CONFIGS = ROOT / "configs" / "foundation-v2"
RESULTS = ROOT / "results" / "foundation-v2"
STAGES = (2, 3, 4, 5)
FINAL = "final"
FINAL_TASKS = ["wh_vs_zh", "stop_vs_tth", "fcnc_vs_tth", "hplus_vs_ttbar", "zprime_vs_ttbar"]
#: The final pretraining's training time (one thread: CPU seconds): 7 of the protocol's 8 CPU-hours, the eighth
#: left to validation epochs and to the epoch that crosses the budget.
FINAL_TRAIN_S = 7 * 3600
SHIP_MARGIN = 1.0  # points of mean accuracy gain at 1e3 over the shipped model (the protocol's ship rule)
GOAL_GAIN, GOAL_FACTOR, GOAL_TASKS = 2.5, 10.0, 3  # the goal
CANDIDATE_KINDS = ("pretrain", "backbone", "study")
PRETRAIN_KEYS = {"group", "events", "seed", "heads", "model", "model_options", "rates", "max_train_time_s"}
#: The recipe axes' first values: the value that changes nothing (an axis is "kept" where a cell chose another).
RECIPE_DEFAULTS = {"weight_decay": 0.0, "ema_decay": 0.0, "layer_decay": 1.0, "linear_probe": False}
STORE_SEED = screen.STORE_SEED


def _name(stage) -> str:
    return "final" if stage == FINAL else f"stage{stage}"


def stage_folder(out: Path, stage) -> Path:
    """The screen folder of one stage (stage 1's is the screen folder itself)."""
    return out if stage == 1 else out / _name(stage)


def config_path(stage) -> Path:
    return CONFIGS / f"{_name(stage)}.yaml"


def decision_path(stage) -> Path:
    return RESULTS / "stage1" / "screen.json" if stage == 1 else RESULTS / _name(stage) / "decision.json"


def record_path(stage) -> Path:
    return RESULTS / _name(stage) / "record"


# ----------------------------------------------------------------------------------------------- configuration
def load_stage(path: Path) -> dict:
    """A stage configuration, checked: every candidate of exactly one kind, known pretraining keys."""
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SystemExit(f"{path}: cannot read the stage configuration: {err}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("candidates"), dict) or not cfg["candidates"]:
        raise SystemExit(f"{path}: a stage configuration needs a mapping 'candidates'")
    for name, spec in cfg["candidates"].items():
        kinds = [k for k in CANDIDATE_KINDS if k in (spec or {})]
        if len(kinds) != 1:
            raise SystemExit(f"{path}: candidate {name!r} needs exactly one of {', '.join(CANDIDATE_KINDS)}")
        if kinds == ["pretrain"]:
            unknown = set(spec["pretrain"]) - PRETRAIN_KEYS
            if unknown:
                raise SystemExit(f"{path}: candidate {name!r}: unknown pretrain key(s) {sorted(unknown)}")
    if not isinstance(cfg.get("study"), dict):
        raise SystemExit(f"{path}: a stage configuration needs its 'study' (the study every candidate gets)")
    return cfg


def _decision(stage: int) -> dict:
    path = decision_path(stage)
    if not path.exists():
        raise SystemExit(f"{path}: stage {stage} has no decision yet")
    decision = json.loads(path.read_text())
    if not decision.get("final") or not decision.get("winner"):
        raise SystemExit(f"{path}: stage {stage} has no final winner yet")
    return decision


def _train_time_s(run: Path) -> float:
    return json.loads((run / "config.json").read_text())["training"]["train_time_s"]


def _incumbent(out: Path, decision: dict) -> dict:
    """The ``study`` candidate that carries the previous stage's winner into this one, measured there."""
    winner = decision["winner"]
    run = decision["runs"][winner]
    return {"study": decision["studies"][winner], "run": run, "cpu_hours": decision["cpu_hours"][winner],
            "train_time_s": _train_time_s(out / run), "spec": decision["specs"][winner]}


def _stage1_pretrain_spec(candidate: str) -> dict:
    return {"group": "pretrain-wide", "events": 100_000, "seed": STORE_SEED, "heads": screen.CANDIDATES[candidate],
            "model": "graphnet", "model_options": {}, "rates": list(screen.PRETRAIN_RATES)}


def final_config() -> dict:
    """The final stage: stage 4's winner (heads, processes, backbone) pretrained on stage 5's size at the rate
    stage 5 chose at 1e6, for at most FINAL_TRAIN_S of training; its ship-rule study and the scratch curve, with
    the final recipe (the stage-2 axes some cell kept)."""
    recipe, scaling = _decision(2), _decision(5)
    stage5 = load_stage(config_path(5))
    large = next(n for n in stage5["candidates"] if n.endswith("-1e6"))
    lr = screen._chosen(record_path(5))[large]["lr"]
    spec = {**scaling["specs"][large], "events": scaling["final_events"], "rates": [lr],
            "max_train_time_s": FINAL_TRAIN_S}
    base = yaml.safe_load((ROOT / "configs" / "study-foundation.yaml").read_text())
    finetune = json.loads(json.dumps(stage5["study"]["finetune"]))
    finetune["recipe"] = {k: v for k, v in finetune["recipe"].items() if k in recipe["kept_axes"]}
    if "backbone_ratios" not in recipe["kept_axes"]:  # no cell chose 50x: the first ratio only
        finetune["backbone_ratios"] = finetune["backbone_ratios"][:1]
    if not finetune["recipe"]:
        del finetune["recipe"]
    # 1e4 and 3e4 as configs/study-foundation-1e4.yaml trains 1e4 (batch 512, patience 10)
    large_batches = {"batch_size": 512, "patience": 10}
    ship = {"tasks": list(FINAL_TASKS), "sizes": [1000, 10000],
            "strategies": ["scratch", "finetune_multiclass", "finetune_multi", "frozen_multi"], "seeds": 3,
            "test_size": 2000, "model": "graphnet",
            # one store for the ship study and the scratch curve (3e4 included): the same test events everywhere
            "generation": {"seed": 7, "downstream_events": 2000 + 3 * 37_500, "workers": 2},
            "pretrain": {k: v for k, v in base["pretrain"].items() if k != "multilabel"},
            "finetune": {**finetune, "by_size": {10000: large_batches}}, "cka": {"events": 2000, "size": 1000}}
    name = large.removesuffix("-1e6") + "-final"
    curve = {k: v for k, v in ship.items() if k != "cka"} | {"strategies": ["scratch"]}
    return {"stage": FINAL, "question": f"the final model ({spec['events']:,} pretraining events), the ship rule and "
            "data efficiency", "shared": None, "stores": None, "study": ship,
            "candidates": {name: {"pretrain": spec}},
            "extra_studies": {
                "scratch-3e3": {"stores": f"final/study/{name}/stores", "study": {**curve, "sizes": [3000]}},
                "scratch-3e4": {"stores": f"final/study/{name}/stores", "study": {
                    **curve, "tasks": ["hplus_vs_ttbar", "stop_vs_tth"], "sizes": [30000],
                    "finetune": {**finetune, "by_size": {30000: large_batches}}}}}}


def stage_config(stage: int, out: Path) -> dict:
    """Stage ``stage``'s configuration from the previous stage's decision (the protocol's stage text)."""
    if stage == FINAL:
        return final_config()
    base = yaml.safe_load((ROOT / "configs" / "study-foundation.yaml").read_text())
    if stage == 2:
        decision = _decision(1)
        winner = decision["winner"]
        chosen = json.loads((record_path(1) / "chosen.json").read_text())[winner]
        backbone = os.path.relpath((record_path(1) / chosen["run"]).resolve(), ROOT)
        study = screen.stage2_config(base, backbone)
        study["pretrain"].pop("multi")
        return {"stage": 2, "question": "fine-tuning recipe", "shared": None, "study": study,
                "candidates": {winner: {"backbone": backbone, "run": chosen["run"],
                                        "cpu_hours": decision["cpu_hours"][winner],
                                        "spec": _stage1_pretrain_spec(winner)}}}
    decision = _decision(stage - 1)
    # Stage 2's recipe tuning, all axes: the shared cells and the incumbent's were tuned on exactly these points
    # (a study refuses cells tuned on others); axes no cell kept are dropped only from the final recipe.
    study = load_stage(config_path(stage - 1))["study"]
    shared = decision["studies"][decision["winner"]]
    incumbent = _incumbent(out, decision)
    spec, winner = incumbent["spec"], decision["winner"]
    if stage == 3:
        other = ("pretrain" if spec["group"] == "pretrain-wide" else "pretrain-wide")
        candidates = {f"{winner}": incumbent,
                      f"{winner}-{other}": {"pretrain": {**spec, "group": other}}}
        question = "process mix: the 22-process set against today's 12 (100,000 events each)"
    elif stage == 4:
        budget = incumbent["train_time_s"]
        candidates = {winner: incumbent,
                      f"{winner}-w128": {"pretrain": {**spec, "model_options": {"width": 128},
                                                      "max_train_time_s": budget}},
                      f"{winner}-transformer": {"pretrain": {**spec, "model": "transformer", "model_options": {},
                                                             "max_train_time_s": budget}}}
        question = f"capacity at the width-64 winner's pretraining time ({budget:.0f} s of training)"
    elif stage == 5:
        spec = {**spec, "max_train_time_s": None}  # each size trains to its own early stop (<= 30 epochs)
        # stage 4's winner may have been trained to a time budget: then 1e5 is retrained, like 1e4 and 1e6
        capped = bool(incumbent["spec"].get("max_train_time_s"))
        candidates = {f"{winner}-1e4": {"pretrain": {**spec, "events": 10_000}},
                      f"{winner}-1e5": {"pretrain": {**spec, "events": 100_000}} if capped else incumbent,
                      f"{winner}-1e6": {"pretrain": {**spec, "events": 1_000_000}}}
        question = "scaling: 1e4, 1e5, 1e6 pretraining events"
    else:
        raise SystemExit(f"the protocol has stages 2-5, not {stage}")
    return {"stage": stage, "question": question, "shared": shared, "study": study, "candidates": candidates}


def write_stage_config(stage: int, out: Path) -> Path:
    """Write stage ``stage``'s configuration (refusing to replace one: it is fixed before the stage runs)."""
    path = config_path(stage)
    if path.exists():
        raise SystemExit(f"{path} exists: a stage's configuration is fixed before it runs (delete it to redo)")
    cfg = stage_config(stage, out)
    source = "stages 2 and 5" if stage == FINAL else f"stage {stage - 1}"
    header = (f"# {'The final stage' if stage == FINAL else f'Stage {stage}'} of results/foundation-v2/PROTOCOL.md: "
              f"{cfg['question']}.\n# Written by scripts/foundation_stages.py configure {stage} from the {source} "
              f"decision, before it ran.\n#   python scripts/foundation_stages.py run {stage} --out ../screen\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(cfg, sort_keys=False))
    return path


# -------------------------------------------------------------------------------------------------- running
def store_folder(out: Path, spec: dict) -> Path:
    """The event store of a pretraining spec, shared by every candidate that asks for the same one (stage 1's
    100,000-event wide store is the screen's ``pretrain-store``)."""
    if (spec["group"], spec["events"], spec["seed"]) == ("pretrain-wide", 100_000, STORE_SEED):
        return out / "pretrain-store"
    return out / "stores" / f"{spec['group']}-{spec['events']}-s{spec['seed']}"


def n_processes(group: str) -> int:
    from hepfm.physics.processes import GROUPS

    return len(GROUPS[group])


def pretrain_args(store: Path, run: Path, spec: dict, lr: float) -> list:
    """``hepfm pretrain`` arguments of one candidate at one rate (stage 1's: batch 512, <= 30 epochs, patience 5)."""
    heads = ",".join(f"{h}={w:g}" for h, w in spec["heads"].items())
    args = ["pretrain", "--data", store, "--task", "multi", "--heads", heads, "--model", spec.get("model", "graphnet"),
            "--lr", f"{lr:g}", "--epochs", 30, "--patience", 5, "--batch-size", 512, "--no-progress", "-o", run]
    for key, value in (spec.get("model_options") or {}).items():
        args += ["--model-option", f"{key}={value}"]
    if spec.get("max_train_time_s"):
        args += ["--max-train-time-s", f"{spec['max_train_time_s']:g}"]
    return args


def _hepfm_parallel(commands: list[list], cpu_files: list[Path]) -> None:
    """Run hepfm commands side by side (one single-threaded process each), writing each one's CPU seconds to its
    ``cpu_files`` entry as soon as it ends well (so a run that finished keeps its cost when another fails)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {subprocess.Popen([sys.executable, "-m", "hepfm", *map(str, c)], env=env).pid: k
             for k, c in enumerate(commands)}
    failed = []
    while procs:
        pid, status, usage = os.wait4(-1, 0)
        if pid in procs:
            k = procs.pop(pid)
            if os.waitstatus_to_exitcode(status) != 0:
                failed.append(k)
            else:
                cpu_files[k].write_text(json.dumps({"cpu_s": usage.ru_utime + usage.ru_stime}))
    if failed:
        raise SystemExit(f"pretraining failed: {[commands[k] for k in failed]}")


def pretrain_candidate(folder: Path, out: Path, name: str, spec: dict) -> None:
    """Generate the candidate's store if needed, pretrain it at every rate (side by side) and record the choice in
    the stage's ``chosen.json``."""
    store = store_folder(out, spec)
    runs = {lr: folder / "pretrain" / name / f"lr{lr:g}" for lr in spec["rates"]}
    todo = [lr for lr, run in runs.items() if not screen._finished(run)]
    if todo:  # a finished candidate needs no store (on a fresh machine: an hour saved at 1e6)
        per_process = math.ceil(spec["events"] / n_processes(spec["group"]))
        subprocess.run([sys.executable, "-m", "hepfm", "generate", spec["group"], "--events", str(per_process),
                        "--seed", str(spec["seed"]), "--workers", "2", "--no-progress", "-o", str(store)],
                       check=True)
    _hepfm_parallel([pretrain_args(store, runs[lr], spec, lr) for lr in todo],
                    [runs[lr] / screen.CPU_FILE for lr in todo])
    losses = {lr: screen.best_val_loss(run) for lr, run in runs.items()}
    best = min(losses, key=losses.get)
    chosen = screen._chosen(folder)
    chosen[name] = {"run": str(runs[best].relative_to(folder)), "lr": best, "val_loss": losses}
    (folder / "chosen.json").write_text(json.dumps(chosen, indent=1))


STAGE1_STORES = "study/baseline/stores"  # stage 1's downstream stores (relative to the screen folder)


def _link(folder: Path, out: Path, shared: str | None, cfg: dict, stores: str | None = STAGE1_STORES) -> None:
    """Link the downstream ``stores`` (a folder relative to ``out``; None: the study generates its own) and,
    with ``shared``, that study's shared cells into ``folder``."""
    from hepfm.study.layout import StudyLayout

    link = folder / "stores"
    folder.mkdir(parents=True, exist_ok=True)
    if stores and not link.exists() and not link.is_symlink():
        (out / stores).mkdir(parents=True, exist_ok=True)  # the study that generates them may not have run
        link.symlink_to((out / stores).resolve(), target_is_directory=True)
    if shared:
        StudyLayout(folder).link_from(StudyLayout(out / shared), cfg["tasks"], cfg["sizes"],
                                      screen.SHARED_STRATEGIES)


def _study(config: Path, target: Path, study: dict, jobs: int) -> None:
    config.write_text(yaml.safe_dump(study, sort_keys=False))
    subprocess.run([sys.executable, "-m", "hepfm", "study", str(config), "--out", str(target), "--jobs",
                    str(jobs), "--no-progress"], check=True)


def candidate_study(stage: int, cfg: dict, name: str, out: Path) -> str:
    """The study folder of one candidate, relative to ``out``."""
    spec = cfg["candidates"][name]
    return spec["study"] if "study" in spec else str(stage_folder(out, stage).relative_to(out) / "study" / name)


def run_stage(stage: int, out: Path, jobs: int = 2) -> None:
    """Pretrain every candidate of the stage and run its study (finished runs and cells are skipped)."""
    cfg = load_stage(config_path(stage))
    folder = stage_folder(out, stage)
    for source in filter(None, [cfg.get("shared"), *(s["study"] for s in cfg["candidates"].values() if "study" in s)]):
        if not (out / source).is_dir():  # else the study would retrain the shared cells under other conditions
            raise SystemExit(f"{out / source}: the study stage {stage} links is missing; restore the earlier stages "
                             f"first (python scripts/foundation_stages.py restore {stage} --out {out})")
    for name, spec in cfg["candidates"].items():
        if "study" in spec:
            continue
        if "pretrain" in spec:
            pretrain_candidate(folder, out, name, spec["pretrain"])
            backbone = (folder / screen._chosen(folder)[name]["run"]).resolve()
        else:
            backbone = (ROOT / spec["backbone"]).resolve()
        study = dict(cfg["study"], pretrain={**cfg["study"]["pretrain"], "multi": str(backbone)})
        target = out / candidate_study(stage, cfg, name, out)
        _link(target, out, cfg["shared"], study, cfg.get("stores", STAGE1_STORES))
        _study(target.parent / f"{name}.yaml", target, study, jobs)
        save(stage, out)
    for name, extra in (cfg.get("extra_studies") or {}).items():  # the final stage's scratch curve
        target = folder / "study" / name
        _link(target, out, None, extra["study"], extra.get("stores"))
        _study(target.parent / f"{name}.yaml", target, extra["study"], jobs)
        save(stage, out)


# ------------------------------------------------------------------------------------------------ deciding
def kept_recipe(study: Path) -> dict[str, dict]:
    """Per (task, strategy) of a study, the recipe its tuning chose (the chosen point's settings) and its
    backbone-rate ratio."""
    from hepfm.study.layout import StudyLayout

    kept = {}
    for tuning in sorted((study / StudyLayout.TUNING_DIR).glob(f"*/*/*/{StudyLayout.TUNING}")):
        table = json.loads(tuning.read_text())
        point = next(p for p in table["grid"] if p["point"] == table["chosen"])
        task, strategy = tuning.parts[-4], tuning.parts[-2]
        ratio = point["backbone_lr"] / point["lr"] if point.get("backbone_lr") else None
        kept[f"{task}/{strategy}"] = {"lr": point["lr"], "ratio": ratio, **point.get("recipe", {})}
    return kept


def kept_axes(kept: dict[str, dict], axes) -> list[str]:
    """The recipe axes some cell chose a value other than the axis's neutral one for."""
    return [a for a in axes if any(a in k and k[a] != RECIPE_DEFAULTS.get(a) for k in kept.values())]


def summarise_stage(stage: int, out: Path) -> dict:
    """The stage's table (every candidate, losers included) and its decision, in results/foundation-v2/stageN."""
    from hepfm.study.layout import StudyLayout

    if stage == FINAL:
        return summarise_final(out)
    cfg = load_stage(config_path(stage))
    folder = stage_folder(out, stage)
    chosen = screen._chosen(folder)
    rows, hours, runs, studies, specs, per_task = {}, {}, {}, {}, {}, {}
    for name, spec in cfg["candidates"].items():
        studies[name] = candidate_study(stage, cfg, name, out)
        study = out / studies[name]
        if "study" not in spec:
            _link(study, out, cfg["shared"], cfg["study"])
        cells = [json.loads(p.read_text()) for p in StudyLayout(study).results()] if study.exists() else []
        rows[name] = screen.screen_row(cells)
        rows[name]["complete"] = rows[name]["cells"] + rows[name]["excluded"] == 2 * len(screen.SCREEN_TASKS)
        per_task[name] = screen.task_gains(cells, "finetune_multi")
        if "pretrain" in spec:
            specs[name] = spec["pretrain"]
            if name in chosen:
                runs[name] = str((folder / chosen[name]["run"]).relative_to(out))
                hours[name] = screen.pretraining_cpu_hours(out / runs[name])
        else:
            specs[name], runs[name], hours[name] = spec["spec"], spec["run"], spec["cpu_hours"]
    final = all(r["complete"] for r in rows.values())
    decision = screen.decide({c: r for c, r in rows.items() if r["complete"]}, hours)
    extra, lines = {}, []
    if stage == 2:
        kept = {n: kept_recipe(out / s) for n, s in studies.items()}
        axes = list(cfg["study"]["finetune"]["recipe"])
        merged = {f"{n}:{k}": v for n, per in kept.items() for k, v in per.items()}
        ratios = cfg["study"]["finetune"].get("backbone_ratios", [])
        # the head-rate multiplier is an axis too: kept where some cell chose another ratio than the first
        multiplier = ["backbone_ratios"] if any(k["ratio"] is not None and not math.isclose(k["ratio"], ratios[0])
                                                for k in merged.values()) else []
        extra = {"kept": kept, "kept_axes": multiplier + kept_axes(merged, axes)}
        lines += ["", "Recipe chosen on validation per task and strategy (seed 0's events):", "",
                  "| task / strategy | rate | backbone ratio | " + " | ".join(axes) + " |",
                  "|---|---|---|" + "---|" * len(axes)]
        for per in kept.values():
            for key, k in per.items():
                ratio = "—" if k["ratio"] is None else f"{k['ratio']:g}"
                lines.append(f"| {key} | {k['lr']:g} | {ratio} | " + " | ".join(
                    str(k.get(a, RECIPE_DEFAULTS.get(a))) for a in axes) + " |")
        lines += ["", f"Axes kept by at least one cell (the final recipe): {', '.join(extra['kept_axes']) or 'none'}"
                  "; the others are dropped from the final recipe (the protocol's stage 2)."]
    if stage == 5 and final:
        _, g5, g6 = (rows[n] for n in cfg["candidates"])  # 1e4, 1e5, 1e6
        combined = math.hypot(g5["val_gain_err"], g6["val_gain_err"])
        rising = g6["val_gain"] - g5["val_gain"] > combined
        extra = {"still_rising": rising, "final_events": 2_000_000 if rising else 1_000_000}
        lines += ["", f"Gain at 1e6 minus gain at 1e5: {g6['val_gain'] - g5['val_gain']:+.2f} (combined error "
                  f"{combined:.2f}): the final pretraining set has {extra['final_events']:,} events."]
    state = "final" if final else "PROVISIONAL: not every candidate is done"
    head = [f"# Stage {stage}: {cfg['question']} ({state})", "",
            "Gains in accuracy points over the tuned scratch baseline (the same recipe tuning), mean over the four "
            "screen tasks and two seeds at 1,000 events per class, ± the standard error over those 8 cells. Only "
            "the validation gain decides (results/foundation-v2/PROTOCOL.md); test gains are reported beside it.",
            "", "| candidate | validation gain | cells (excluded) | test gain | pretraining CPU-h | study |",
            "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        mark = " (winner)" if name == decision["winner"] else "" if r["complete"] else " (incomplete)"
        val = "—" if math.isnan(r["val_gain"]) else f"{r['val_gain']:+.2f} ± {r['val_gain_err']:.2f}"
        test = "—" if math.isnan(r["test_gain"]) else f"{r['test_gain']:+.2f} ± {r['test_gain_err']:.2f}"
        h = f"{hours[name]:.2f}" if name in hours else "—"
        head.append(f"| {name}{mark} | {val} | {r['cells']} ({r['excluded']}) | {test} | {h} | `{studies[name]}` |")
    head += ["", f"Winner: {decision['winner'] or 'none yet'}; carried: {', '.join(decision['carried']) or 'none'}.",
             "", "Per task (validation / test gain, mean of two seeds):", "",
             "| candidate | " + " | ".join(screen.SCREEN_TASKS) + " |", "|---|" + "---|" * len(screen.SCREEN_TASKS)]
    for name, g in per_task.items():
        head.append(f"| {name} | " + " | ".join("—" if math.isnan(v) else f"{v:+.2f} / {t:+.2f}"
                                                for v, t in g.values()) + " |")
    dest = RESULTS / f"stage{stage}"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "summary.md").write_text("\n".join(head + lines) + "\n")
    result = {"final": final, "rows": rows, "per_task": per_task, "cpu_hours": hours, "runs": runs,
              "studies": studies, "specs": specs, **decision, **extra}
    decision_path(stage).write_text(json.dumps(result, indent=1))
    return result


# ---------------------------------------------------------------------------------------------- final stage
def group_cells(study: Path, task: str, size: int, strategy: str) -> list[dict]:
    """The finished cells of one (task, size, strategy) of a study, one per seed, with their test labels ``y``
    and scores."""
    import numpy as np

    cells = []
    for result in sorted((study / "cells" / task / str(size) / strategy).glob("seed*/result.json")):
        labels, scores = np.load(result.parent / "scores.npy")
        cells.append({**json.loads(result.read_text()), "y": labels, "scores": scores})
    return cells


def _mean_sd(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n if n else math.nan
    return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else math.nan


def accuracy_with_error(cells: list[dict]) -> tuple[float, float]:
    """Mean test accuracy over seeds and its error (standard error over seeds with the binomial test-sample
    error, in quadrature), in points."""
    from hepfm.eval.metrics import accuracy_error

    if not cells:
        return math.nan, math.nan
    mean, sd = _mean_sd([c["accuracy"] for c in cells])
    seeds = 0.0 if math.isnan(sd) else sd / math.sqrt(len(cells))
    return 100 * mean, 100 * math.hypot(seeds, accuracy_error(mean, len(cells[0]["y"])))


def gain_with_error(other: list[dict], base: list[dict]) -> tuple[float, float]:
    """mean(other) - mean(base) test accuracy in points, with Table I's error: the two seed spreads in quadrature
    (as arXiv:2412.10665) and the paired-bootstrap test-sample error over the shared test events."""
    from hepfm.study.stats import gain_test_error

    if not other or not base:
        return math.nan, math.nan
    (a, sa), (b, sb) = _mean_sd([c["accuracy"] for c in other]), _mean_sd([c["accuracy"] for c in base])
    seeds = math.hypot(*(x for x in (sa, sb) if not math.isnan(x))) if len(other) > 1 or len(base) > 1 else 0.0
    test = gain_test_error(base[0]["y"], [c["scores"] for c in base], [c["scores"] for c in other], "accuracy")
    return 100 * (a - b), 100 * math.hypot(seeds, 0.0 if math.isnan(test) else test)


def ship_rule(excess: dict[str, tuple[float, float]]) -> dict:
    """The protocol's ship rule on the per-task (excess, error) of the new model over the shipped one at 1e3:
    mean excess >= SHIP_MARGIN, larger than twice its combined error, and no task worse by more than its error."""
    values = list(excess.values())
    mean = sum(v for v, _ in values) / len(values)
    err = math.sqrt(sum(e * e for _, e in values)) / len(values)
    worse = [t for t, (v, e) in excess.items() if v < -e]
    ships = mean >= SHIP_MARGIN and mean > 2 * err and not worse
    return {"mean_excess": mean, "mean_excess_err": err, "tasks_worse": worse, "ships": ships}


def events_for_equal_accuracy(sizes: list[int], curve: list[tuple[float, float]], target: tuple[float, float],
                              n: int) -> dict:
    """How many fewer events the scratch baseline trained on ``sizes`` (``curve``: accuracy and error at each)
    needs than ``n`` to match ``target`` (accuracy, error): the factor read off the curve (interpolated in
    log(size)) and its range from the errors of both."""
    from hepfm.study.efficiency import baseline_events_for

    means = [a for a, _ in curve]
    kind, events = baseline_events_for(sizes, means, target[0])
    low = baseline_events_for(sizes, [a + e for a, e in curve], target[0] - target[1])
    high = baseline_events_for(sizes, [a - e for a, e in curve], target[0] + target[1])
    return {"kind": kind, "factor": events / n, "low": (low[0], low[1] / n), "high": (high[0], high[1] / n)}


def _bound(kind: str, value: float) -> str:
    return {"=": "", "<=": "≤ ", ">": "> "}[kind] + f"{value:.2g}×"


def summarise_final(out: Path) -> dict:
    """Table I of the final model (1e3, 1e4), the ship rule, the data-efficiency table and the goal."""
    cfg = load_stage(config_path(FINAL))
    (name,) = cfg["candidates"]
    ship = out / candidate_study(FINAL, cfg, name, out)
    folder = stage_folder(out, FINAL)
    tasks, sizes, seeds = cfg["study"]["tasks"], cfg["study"]["sizes"], cfg["study"]["seeds"]
    strategies = [s for s in cfg["study"]["strategies"] if s != "scratch"]
    table, complete = {}, True
    for task in tasks:
        for size in sizes:
            base = group_cells(ship, task, size, "scratch")
            row = {"scratch": accuracy_with_error(base)}
            complete &= len(base) == seeds
            for strategy in strategies:
                cells = group_cells(ship, task, size, strategy)
                complete &= len(cells) == seeds
                row[strategy] = gain_with_error(cells, base)
            new, shipped = (group_cells(ship, task, size, s) for s in ("finetune_multi", "finetune_multiclass"))
            row["excess"] = gain_with_error(new, shipped)
            table[f"{task}/{size}"] = row
    small = min(sizes)
    rule = ship_rule({t: table[f"{t}/{small}"]["excess"] for t in tasks}) if complete else None
    efficiency = {}
    for task in tasks:
        points = {size: group_cells(ship, task, size, "scratch") for size in sizes}
        for extra, spec in (cfg.get("extra_studies") or {}).items():
            if task in spec["study"]["tasks"]:
                for size in spec["study"]["sizes"]:
                    points[size] = group_cells(folder / "study" / extra, task, size, "scratch")
                    complete &= len(points[size]) == spec["study"].get("seeds", seeds)
        curve_sizes = sorted(s for s, cells in points.items() if cells)
        curve = [accuracy_with_error(points[s]) for s in curve_sizes]
        efficiency[task] = {"scratch": dict(zip(curve_sizes, curve, strict=True))}
        for size in sizes:
            target = accuracy_with_error(group_cells(ship, task, size, "finetune_multi"))
            if curve_sizes and not math.isnan(target[0]):
                efficiency[task][size] = events_for_equal_accuracy(curve_sizes, curve, target, size)
    gains = [table[f"{t}/{small}"]["finetune_multi"][0] for t in tasks]
    mean_gain = sum(gains) / len(gains)
    tenfold = [t for t in tasks if small in efficiency[t] and efficiency[t][small]["kind"] in ("=", ">")
               and efficiency[t][small]["factor"] >= GOAL_FACTOR]
    goal = {"mean_gain": mean_gain, "tasks_tenfold": tenfold,
            "reached": mean_gain >= GOAL_GAIN and len(tenfold) >= GOAL_TASKS}
    lines = [f"# The final model: {cfg['question']} ({'final' if complete else 'PROVISIONAL: cells missing'})", "",
             f"Test accuracy, mean of {seeds} seeds, {cfg['study']['test_size']:,} test events per class (scratch: ± "
             "the standard error over seeds and the binomial test-sample error); gains in points over the tuned "
             "scratch baseline with Table I's error (seed spreads and the paired-bootstrap test-sample error).", "",
             "| task | events per class | scratch | " + " | ".join(strategies) + " | new − shipped |",
             "|---|---|---|" + "---|" * (len(strategies) + 1)]
    for key, row in table.items():
        task, size = key.split("/")
        cells = [row[s] for s in ("scratch", *strategies, "excess")]
        shown = ["—" if math.isnan(v) else (f"{v:.2f} ± {e:.2f}" if k == 0 else f"{v:+.2f} ± {e:.2f}")
                 for k, (v, e) in enumerate(cells)]
        lines.append(f"| {task} | {int(size):,} | " + " | ".join(shown) + " |")
    if rule:
        lines += ["", f"Ship rule (1e3): the new model exceeds the shipped one by {rule['mean_excess']:+.2f} ± "
                  f"{rule['mean_excess_err']:.2f} points on average (needed: ≥ +{SHIP_MARGIN:.1f} and more than "
                  f"twice its error, no task worse by more than its error; worse: "
                  f"{', '.join(rule['tasks_worse']) or 'none'}): it {'ships' if rule['ships'] else 'does not ship'}."]
    lines += ["", "Data efficiency: scratch events per class needed for the fine-tuned model's accuracy, as a factor "
              "of the events it was fine-tuned on (read off the scratch curve, interpolated in log(size); range "
              "from the errors of both curves).", "",
              "| task | scratch curve (events: accuracy) | " + " | ".join(f"× at {s:,}" for s in sizes) + " |",
              "|---|---|" + "---|" * len(sizes)]
    for task, eff in efficiency.items():
        curve = ", ".join(f"{s:,}: {a:.2f}" for s, (a, _) in eff["scratch"].items())
        shown = [f"{_bound(eff[s]['kind'], eff[s]['factor'])} ({_bound(*eff[s]['low'])}–{_bound(*eff[s]['high'])})"
                 if s in eff else "—" for s in sizes]
        lines.append(f"| {task} | {curve} | " + " | ".join(shown) + " |")
    lines += ["", f"Goal (mean gain ≥ +{GOAL_GAIN} points at 1e3 and ≥ {GOAL_FACTOR:g}× fewer events on at least "
              f"{GOAL_TASKS} tasks): mean gain {mean_gain:+.2f}, ≥ {GOAL_FACTOR:g}× on "
              f"{', '.join(tenfold) or 'no task'}: {'reached' if goal['reached'] else 'not reached'}."]
    dest = RESULTS / "final"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "summary.md").write_text("\n".join(lines) + "\n")
    result = {"final": complete, "table": table, "ship_rule": rule, "efficiency": efficiency, "goal": goal}
    decision_path(FINAL).write_text(json.dumps(result, indent=1, default=str))
    return result


def save(stage: int, out: Path) -> None:
    screen.save(stage_folder(out, stage), record_path(stage))


def restore(stage, out: Path) -> None:
    """Restore the committed records of stage 1 and of every stage up to ``stage`` into the screen folder (the
    incumbent's runs and the shared cells live in earlier stages' folders)."""
    upto = [*STAGES, FINAL][: [*STAGES, FINAL].index(stage) + 1]
    screen.restore(out, record_path(1))
    for earlier in upto:
        if record_path(earlier).is_dir():
            screen.restore(stage_folder(out, earlier), record_path(earlier))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("configure", "run", "summarise", "save", "restore"))
    parser.add_argument("stage", choices=[*map(str, STAGES), FINAL])
    parser.add_argument("--out", type=Path, required=True, help="the screen folder (stage 1's)")
    parser.add_argument("--jobs", type=int, default=2, help="run: training processes of each study")
    args = parser.parse_args()
    args.stage = FINAL if args.stage == FINAL else int(args.stage)
    if args.step == "configure":
        print(write_stage_config(args.stage, args.out))
    elif args.step == "run":
        run_stage(args.stage, args.out, args.jobs)
    elif args.step == "summarise":
        summarise_stage(args.stage, args.out)
    elif args.step == "save":
        save(args.stage, args.out)
    else:
        restore(args.stage, args.out)


if __name__ == "__main__":
    main()
