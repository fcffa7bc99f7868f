"""Stage 1 of the foundation-v2 screen (results/foundation-v2/PROTOCOL.md): pretraining objectives, resumable.

    python scripts/foundation_screen.py pretrain --out SCREEN [--events 100000] [--candidates O1 O4]
    python scripts/foundation_screen.py study --out SCREEN [--candidates ...]
    python scripts/foundation_screen.py summarise --out SCREEN --dest results/foundation-v2/stage1
    python scripts/foundation_screen.py save --out SCREEN [--record DIR]     # small files + chosen weights
    python scripts/foundation_screen.py restore --out SCREEN [--record DIR]  # on a fresh machine, before resuming

``pretrain`` generates the screen's pretraining store (the ``pretrain-wide`` processes, equal events each, seed
3001) and pretrains every candidate at each rate of :data:`PRETRAIN_RATES`, keeping the rate whose run has the
lowest validation loss of its own objective. ``study`` fine-tunes each chosen backbone on the screen's four
tasks with the study machinery (``configs/study-foundation.yaml``'s tuned protocol, 2 seeds), next to the tuned
scratch baseline and the shipped multiclass model, which are trained once (``study/baseline``) and linked into
every candidate's study. ``summarise`` applies the protocol's decision rule to the
validation accuracies and writes the screen table (every candidate, losers included; test gains beside, never
used to choose). Finished runs and cells are skipped, so every step resumes.

``save`` copies what a resumed screen needs into a committed record (default ``results/foundation-v2/stage1/
record``): every run's ``config.json``, ``history.csv`` and CPU time, the studies' ``result.json`` and
``tuning.json`` files and test scores, ``chosen.json``, and the weights of each candidate's chosen pretraining run (the
backbones the studies and the next stage fine-tune); the event stores are not saved, they are regenerated from
their seeds. ``restore`` copies the record back into a screen folder, without overwriting.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCREEN_TASKS = ["hplus_vs_ttbar", "stop_vs_tth", "fcnc_vs_tth", "zprime_vs_ttbar"]
PRETRAIN_RATES = (3e-4, 1e-3)
STORE_SEED = 3001
N_PROCESSES = 22  # the pretrain-wide group
#: The protocol's stage-1 candidates: heads and loss weights. Every candidate is pretrained as a multi-task (one
#: head for O1, O2 and O8), so that the study fine-tunes each through the same strategies.
CANDIDATES: dict[str, dict[str, float]] = {
    "O1": {"multiclass": 1.0},
    "O2": {"multilabel": 1.0},
    "O3": {"origin": 1.0, "heavy": 0.5},
    "O4": {"multiclass": 1.0, "origin": 1.0},
    "O5": {"multiclass": 1.0, "origin": 1.0, "heavy": 0.5},
    "O6": {"multiclass": 1.0, "multilabel": 1.0, "origin": 1.0, "heavy": 0.5},
    "O7": {"multiclass": 1.0, "multilabel": 1.0, "origin": 1.0, "heavy": 0.5, "masked": 1.0},
    "O8": {"masked": 1.0},
}
CPU_FILE = "cpu.json"  # beside a pretraining run: the CPU seconds of the command that made it
TIE_MARGIN = 0.5  # points of the screen metric
CARRY_MARGIN = 1.0


def _hepfm(*args) -> float:
    """Run one hepfm command; returns the CPU seconds it used (all its threads and processes), a cost that does
    not depend on what else the machine runs, as its wall time does."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "hepfm", *map(str, args)], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _finished(run: Path) -> bool:
    return (run / "config.json").exists() and not (run / "checkpoint.pt").exists()


def best_val_loss(run: Path) -> float:
    """The lowest validation loss of a finished run (its own objective's)."""
    with open(run / "history.csv") as f:
        return min(float(r["val_loss"]) for r in csv.DictReader(f))


def pretrain_command(store: Path, run: Path, candidate: str, lr: float) -> list:
    """The ``hepfm pretrain`` arguments of one candidate at one rate (protocol: batch 512, <= 30 epochs, patience 5)."""
    heads = ",".join(f"{h}={w:g}" for h, w in CANDIDATES[candidate].items())
    return ["pretrain", "--data", store, "--task", "multi", "--heads", heads, "--lr", f"{lr:g}", "--epochs", 30,
            "--patience", 5, "--batch-size", 512, "--no-progress", "-o", run]


PRETRAIN_EXIT = "pretrain.exit"  # written when the pretrain step ends, however it ends


def pretrain(out: Path, events: int, candidates: list[str]) -> None:
    """Generate the screen's store and pretrain each candidate at every rate, recording the choice."""
    out.mkdir(parents=True, exist_ok=True)
    (out / PRETRAIN_EXIT).unlink(missing_ok=True)
    ok = False
    try:
        _pretrain(out, events, candidates)
        ok = True
    finally:
        (out / PRETRAIN_EXIT).write_text(json.dumps({"ok": ok}))


def _pretrain(out: Path, events: int, candidates: list[str]) -> None:
    store = out / "pretrain-store"
    _hepfm("generate", "pretrain-wide", "--events", math.ceil(events / N_PROCESSES), "--seed", STORE_SEED,
           "--workers", 2, "--no-progress", "-o", store)
    chosen_file = out / "chosen.json"
    for c in candidates:
        runs = {lr: out / "pretrain" / c / f"lr{lr:g}" for lr in PRETRAIN_RATES}
        for lr, run in runs.items():
            if not _finished(run):
                seconds = _hepfm(*pretrain_command(store, run, c, lr))
                (run / CPU_FILE).write_text(json.dumps({"cpu_s": seconds}))
        losses = {lr: best_val_loss(run) for lr, run in runs.items()}
        best = min(losses, key=losses.get)
        # Written after every candidate, so that its study can start while the next one pretrains.
        chosen = json.loads(chosen_file.read_text()) if chosen_file.exists() else {}
        chosen[c] = {"run": str(runs[best].relative_to(out)), "lr": best, "val_loss": losses}
        chosen_file.write_text(json.dumps(chosen, indent=1))


#: Strategies that do not depend on the candidate: trained once in ``study/baseline`` and linked into every
#: candidate's study, which then skips them (the same stores, seeds and grid give the same runs).
SHARED_STRATEGIES = ["scratch", "finetune_multiclass"]
CANDIDATE_STRATEGIES = ["finetune_multi", "frozen_multi"]


def study_config(base: dict, backbone: str | None) -> dict:
    """The stage-1 study of one candidate (``backbone``; None: the shared baseline study alone): ``base``
    (study-foundation) on the four screen tasks, 2 seeds, the scratch baseline, the shipped multiclass model and
    the candidate fine-tuned and frozen."""
    cfg = dict(base, tasks=list(SCREEN_TASKS), seeds=2,
               strategies=SHARED_STRATEGIES + (CANDIDATE_STRATEGIES if backbone else []))
    cfg["pretrain"] = {k: v for k, v in base["pretrain"].items() if k != "multilabel"}
    if backbone:
        cfg["pretrain"]["multi"] = backbone
    return cfg


def _link_references(folder: Path, baseline: Path, sizes: list) -> None:
    """Link the baseline study's stores and shared reference cells into a candidate's study folder."""
    from hepfm.study.layout import StudyLayout

    stores = folder / "stores"
    if not stores.exists() and not stores.is_symlink():
        stores.symlink_to((baseline / "stores").resolve(), target_is_directory=True)
    StudyLayout(folder).link_from(StudyLayout(baseline), SCREEN_TASKS, sizes, SHARED_STRATEGIES)


def _run_study(out: Path, name: str, backbone: str | None, jobs: int) -> None:
    base = yaml.safe_load((ROOT / "configs" / "study-foundation.yaml").read_text())
    folder, baseline = out / "study" / name, out / "study" / "baseline"
    folder.mkdir(parents=True, exist_ok=True)
    config = out / "study" / f"{name}.yaml"
    config.write_text(yaml.safe_dump(study_config(base, backbone), sort_keys=False))
    if folder != baseline:
        _link_references(folder, baseline, base["sizes"])
    _hepfm("study", config, "--out", folder, "--jobs", jobs, "--no-progress")


def _chosen(out: Path) -> dict:
    chosen_file = out / "chosen.json"
    return json.loads(chosen_file.read_text()) if chosen_file.exists() else {}


def study(out: Path, candidates: list[str], baseline_only: bool = False, jobs: int = 2, wait: bool = False,
          record: Path | None = None, poll_s: float = 60.0) -> None:
    """The shared baseline study, then each pretrained candidate's. Without ``wait`` a candidate not pretrained yet
    is skipped; with it, each is waited for while a pretrain step runs beside this one (until it writes
    PRETRAIN_EXIT). With ``record``, the record is saved after every study."""
    import time

    _run_study(out, "baseline", None, jobs)
    if record is not None:
        save(out, record)
    if baseline_only:
        return
    for c in candidates:
        while wait and c not in _chosen(out) and not (out / PRETRAIN_EXIT).exists():
            time.sleep(poll_s)
        chosen = _chosen(out)
        if c not in chosen:
            print(f"{c}: not pretrained, skipped", file=sys.stderr)
            continue
        _run_study(out, c, str((out / chosen[c]["run"]).resolve()), jobs)
        if record is not None:
            save(out, record)


def screen_row(cells: list[dict], strategy: str = "finetune_multi") -> dict:
    """The screen metric of one candidate from its cells: the mean over tasks and seeds of the validation accuracy
    gain of ``strategy`` over scratch (points), its spread, the test gain beside it, and the cells excluded as
    collapsed."""
    by = {(r["task"], r["seed"], r["strategy"]): r for r in cells}
    val, test, excluded = [], [], 0
    for task in SCREEN_TASKS:
        for seed in (0, 1):
            base, cand = by.get((task, seed, "scratch")), by.get((task, seed, strategy))
            if base is None or cand is None:
                continue
            if base["collapsed"] or cand["collapsed"]:
                excluded += 1
                continue
            val.append(100 * (cand["val_accuracy"] - base["val_accuracy"]))
            test.append(100 * (cand["accuracy"] - base["accuracy"]))
    (val_gain, val_err), (test_gain, test_err) = _mean_and_error(val), _mean_and_error(test)
    return {"val_gain": val_gain, "val_gain_err": val_err, "cells": len(val), "excluded": excluded,
            "test_gain": test_gain, "test_gain_err": test_err}


def _mean_and_error(values: list[float]) -> tuple[float, float]:
    """The mean of the cells' gains and its standard error (NaN where there are too few cells)."""
    n = len(values)
    mean = sum(values) / n if n else math.nan
    spread = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else math.nan
    return mean, spread / math.sqrt(n) if n > 1 else math.nan


def decide(rows: dict[str, dict], cpu_hours: dict[str, float]) -> dict:
    """The protocol's rule: the highest screen metric wins; within TIE_MARGIN the cheaper candidate (pretraining
    CPU-hours); more than one excluded cell disqualifies; up to three within CARRY_MARGIN of the winner are carried
    (else the best two)."""
    eligible = {c: r for c, r in rows.items() if r["excluded"] <= 1 and not math.isnan(r["val_gain"])}
    ranked = sorted(eligible, key=lambda c: -eligible[c]["val_gain"])
    if not ranked:
        return {"winner": None, "carried": [], "ranked": []}
    top = eligible[ranked[0]]["val_gain"]
    tied = [c for c in ranked if top - eligible[c]["val_gain"] <= TIE_MARGIN]
    winner = min(tied, key=lambda c: (cpu_hours.get(c, math.inf), ranked.index(c)))
    close = [c for c in ranked if top - eligible[c]["val_gain"] <= CARRY_MARGIN]
    carried = close[:3] if len(close) > 1 else ranked[:2]
    if winner not in carried:
        carried = [winner, *carried][:3]
    return {"winner": winner, "carried": carried, "ranked": ranked}


def pretraining_cpu_hours(run: Path) -> float:
    """CPU-hours of one pretraining run: its command's CPU time (a resumed run: the last command's only), or
    without that record, its training wall time times the machine's cores."""
    if (run / CPU_FILE).exists():
        return json.loads((run / CPU_FILE).read_text())["cpu_s"] / 3600
    return json.loads((run / "config.json").read_text())["training"]["train_time_s"] * (os.cpu_count() or 1) / 3600


def task_gains(cells: list[dict], strategy: str) -> dict[str, tuple[float, float]]:
    """Per screen task, the mean over seeds of ``strategy``'s (validation, test) accuracy gain over scratch, in
    points (collapsed cells left out; NaN where none is left)."""
    by = {(r["task"], r["seed"], r["strategy"]): r for r in cells}
    out = {}
    for task in SCREEN_TASKS:
        pairs = [(by[(task, k, strategy)], by[(task, k, "scratch")]) for k in (0, 1)
                 if (task, k, strategy) in by and (task, k, "scratch") in by]
        pairs = [(c, b) for c, b in pairs if not (c["collapsed"] or b["collapsed"])]
        out[task] = tuple(sum(100 * (c[key] - b[key]) for c, b in pairs) / len(pairs) if pairs else math.nan
                          for key in ("val_accuracy", "accuracy"))
    return out


REFERENCE = "finetune_multiclass"  # the shipped graphnet-pythia12-multiclass, fine-tuned in the same folders


def summarise(out: Path, dest: Path) -> None:
    """Apply the decision rule to the finished candidates and write ``screen.md`` and ``screen.json``; the decision
    is final only when every candidate's eight cells are done (else it is marked provisional)."""
    from hepfm.study.layout import StudyLayout

    chosen = _chosen(out)
    rows, hours, per_task = {}, {}, {}
    for c in chosen:
        folder = out / "study" / c
        if not folder.exists():
            continue
        cells = [json.loads(p.read_text()) for p in StudyLayout(folder).results()]
        rows[c] = {**screen_row(cells), "frozen": screen_row(cells, "frozen_multi"), "lr": chosen[c]["lr"]}
        rows[c]["complete"] = rows[c]["cells"] + rows[c]["excluded"] == 2 * len(SCREEN_TASKS)
        hours[c] = pretraining_cpu_hours(out / chosen[c]["run"])
        per_task[c] = {"finetune": task_gains(cells, "finetune_multi"), "frozen": task_gains(cells, "frozen_multi")}
    base_cells = [json.loads(p.read_text()) for p in StudyLayout(out / "study" / "baseline").results()]
    reference = screen_row(base_cells, REFERENCE)
    final = all(c in rows and rows[c]["complete"] for c in CANDIDATES)
    decision = decide({c: r for c, r in rows.items() if r["complete"]}, hours)
    dest.mkdir(parents=True, exist_ok=True)

    def gain(r: dict, key: str = "val_gain") -> str:
        return f"{r[key]:+.2f} ± {r.get(key + '_err', math.nan):.2f}"

    state = "final" if final else "PROVISIONAL: not every candidate is done"
    lines = [f"# Stage 1 screen: pretraining objective ({state})",
             "", "Gains in accuracy points over the tuned scratch baseline, mean over the four screen tasks and two "
             "seeds at 1,000 events per class (± the standard error over those 8 cells). Only the validation gain "
             "of the fine-tuned model decides (results/foundation-v2/PROTOCOL.md); test gains and the frozen "
             "backbone are reported, never used to choose.", "",
             "| candidate | objective | pretraining rate | fine-tuned: validation gain | cells (excluded) | "
             "fine-tuned: test gain | frozen: validation gain | frozen: test gain | pretraining CPU-h |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c, r in sorted(rows.items()):
        what = " + ".join(f"{h}×{w:g}" for h, w in CANDIDATES[c].items())
        mark = " (winner)" if c == decision["winner"] else "" if r["complete"] else " (incomplete)"
        lines.append(f"| {c}{mark} | {what} | {r['lr']:g} | {gain(r)} | {r['cells']} ({r['excluded']}) | "
                     f"{gain(r, 'test_gain')} | {gain(r['frozen'])} | {gain(r['frozen'], 'test_gain')} | "
                     f"{hours[c]:.2f} |")
    lines.append(f"| shipped multiclass (reference) | 1M events, 12 processes | — | {gain(reference)} | "
                 f"{reference['cells']} ({reference['excluded']}) | {gain(reference, 'test_gain')} | — | — | — |")
    lines += ["", f"Winner: {decision['winner'] or 'none yet'}; carried to the next stage: "
              f"{', '.join(decision['carried']) or 'none'}.", "", "Per task (fine-tuned, validation / test gain, "
              "mean of two seeds):", "", "| candidate | " + " | ".join(SCREEN_TASKS) + " |",
              "|---|" + "---|" * len(SCREEN_TASKS)]
    reference_tasks = task_gains(base_cells, REFERENCE)
    for c, g in sorted(per_task.items()) + [("shipped multiclass", {"finetune": reference_tasks})]:
        shown = ("—" if math.isnan(v) else f"{v:+.2f} / {t:+.2f}" for v, t in g["finetune"].values())
        lines.append(f"| {c} | " + " | ".join(shown) + " |")
    (dest / "screen.md").write_text("\n".join(lines) + "\n")
    (dest / "screen.json").write_text(json.dumps({"final": final, "rows": rows, "per_task": per_task,
                                                  "reference": reference, "cpu_hours": hours, **decision}, indent=1))


#: The files of a screen folder that a resumed screen needs (weights only for the chosen pretraining runs).
RECORD_FILES = ("config.json", "history.csv", CPU_FILE, "result.json", "tuning.json",
                "scores.npy")  # the test scores: the report's paired-bootstrap errors need them (latents: not kept)
WEIGHTS = "model.safetensors"


def _complete_groups(study: Path) -> list[Path]:
    """The (task, size, strategy) folders of one study, under ``tuning`` and ``cells``, whose tuning and every
    seed's cell are finished: only these are saved, because an unfinished one still needs its runs' weights."""
    config = study.parent / f"{study.name}.yaml"
    if not config.exists():
        return []
    seeds = yaml.safe_load(config.read_text())["seeds"]
    groups = []
    for tuning in sorted(p.parent for p in (study / "tuning").glob("*/*/*/tuning.json")):
        cells = study / "cells" / tuning.relative_to(study / "tuning")
        if tuning.parent.is_symlink() or tuning.is_symlink():
            continue  # linked from the baseline study: saved there
        if all((cells / f"seed{k}" / "result.json").exists() for k in range(seeds)):
            groups += [tuning, cells]
    return groups


def _record_files(out: Path) -> list[Path]:
    """The record's files of ``out``, relative to it: the pretraining runs' records, the chosen runs' weights and
    the studies' finished groups (the links that share the baseline study's groups are not followed)."""
    files = []
    chosen_file = out / "chosen.json"
    if chosen_file.exists():
        files.append(chosen_file)
        files += [out / c["run"] / WEIGHTS for c in json.loads(chosen_file.read_text()).values()]
    runs = [r for r in sorted((out / "pretrain").glob("*/*/")) if _finished(r)]  # not one still training
    folders = runs + [g for study in sorted((out / "study").glob("*/")) for g in _complete_groups(study)]
    for folder in folders:
        for root, _, names in os.walk(folder):
            files += [Path(root) / n for n in names if n in RECORD_FILES]
    files += sorted((out / "study").glob("*.yaml"))
    return sorted({f.relative_to(out) for f in files if f.exists()})


def save(out: Path, record: Path) -> None:
    """Copy ``out``'s record into ``record`` (replacing what was saved before)."""
    import shutil

    for rel in _record_files(out):
        (record / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.name == "chosen.json":  # runs named relative to the screen folder, wherever it is
            chosen = json.loads((out / rel).read_text())
            for c in chosen.values():
                c["run"] = str((out / c["run"]).relative_to(out))
            (record / rel).write_text(json.dumps(chosen, indent=1))
        else:
            shutil.copyfile(out / rel, record / rel)


def restore(out: Path, record: Path) -> None:
    """Copy a saved record into ``out``, keeping any file ``out`` already has."""
    import shutil

    for src in sorted(p for p in record.rglob("*") if p.is_file()):
        dst = out / src.relative_to(record)
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    # a restored candidate study pairs with the shared reference cells, as after its own study step
    baseline = out / "study" / "baseline"
    if baseline.is_dir():
        sizes = yaml.safe_load((ROOT / "configs" / "study-foundation.yaml").read_text())["sizes"]
        for folder in sorted(p for p in (out / "study").iterdir() if p.is_dir() and p != baseline):
            _link_references(folder, baseline, sizes)


#: Stage 2 of the protocol: AdamW for every strategy, then the recipe axes in the protocol's order, each tuned
#: on validation like the rate (head-rate multiplier 10x then 50x first).
STAGE2_FINETUNE = {"optimizer": "adamw", "backbone_ratios": [0.1, 0.02],
                   "recipe": {"weight_decay": [0.0, 0.01], "ema_decay": [0.0, 0.999], "layer_decay": [1.0, 0.75],
                              "linear_probe": [False, True]}}


def stage2_config(base: dict, backbone: str) -> dict:
    """Stage 2's study (scripts/foundation_stages.py configures it from stage 1's decision): stage 1's tasks,
    seeds and stores with the winner's backbone fine-tuned next to the scratch baseline and the shipped
    multiclass model, all three with the recipe tuned (frozen left out: stage 1 reported it)."""
    cfg = study_config(base, backbone)
    cfg["strategies"] = SHARED_STRATEGIES + ["finetune_multi"]
    cfg["finetune"] = {**base["finetune"], **STAGE2_FINETUNE}
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("pretrain", "study", "summarise", "save", "restore"))
    parser.add_argument("--out", type=Path, required=True, help="the screen folder")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    parser.add_argument("--baseline-only", action="store_true", help="study: only the shared baseline study")
    parser.add_argument("--jobs", type=int, default=2, help="study: training processes (hepfm study --jobs)")
    parser.add_argument("--wait", action="store_true",
                        help="study: wait for each candidate's pretraining (a pretrain step running beside it)")
    parser.add_argument("--save", action="store_true", help="study: save the record after every study")
    parser.add_argument("--dest", type=Path, default=ROOT / "results" / "foundation-v2" / "stage1")
    parser.add_argument("--record", type=Path, default=ROOT / "results" / "foundation-v2" / "stage1" / "record")
    args = parser.parse_args()
    unknown = sorted(set(args.candidates) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown candidate(s) {unknown}; choose from {', '.join(CANDIDATES)}")
    if args.step == "pretrain":
        pretrain(args.out, args.events, args.candidates)
    elif args.step == "study":
        study(args.out, args.candidates, args.baseline_only, args.jobs, args.wait, args.record if args.save else None)
    elif args.step == "summarise":
        summarise(args.out, args.dest)
    elif args.step == "save":
        save(args.out, args.record)
    else:
        restore(args.out, args.record)


if __name__ == "__main__":
    main()
