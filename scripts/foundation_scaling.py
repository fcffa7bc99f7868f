"""Downstream gain vs pretraining size (results/foundation/scaling): the study-cpu configuration's 1e3 cells, fine-tuned
from the backbones pretrained on 834 / 8,334 / every event per process of the million-event set — the runs that
scripts/pretrain_foundation.py chose by validation loss, as recorded in results/foundation/pretraining.json
(supervised multiclass and multilabel, and the self-supervised masked task) — against the same tuned scratch
cells (copied from the study-cpu run, so every size shares one baseline).

    python scripts/foundation_scaling.py --study-cpu STUDY_CPU_RUN --out SCALING_DIR \\
        [--task hplus_vs_ttbar] [--strategy finetune_masked]

then ``hepfm study SCALING_DIR/<size>/config.yaml --out SCALING_DIR/<size> --report-only`` for each size's
tables, and ``--summarise DEST`` for the scaling table and plots across sizes (scaling.md/.csv, one plot per
metric and task), with :func:`hepfm.study.scaling.scaling_rows` and :func:`~hepfm.study.scaling.write_scaling`.

Unlike ``hepfm scaling`` (which pretrains its own backbone per size), this driver fine-tunes the backbones
already chosen by validation loss, and copies the study-cpu run's scratch cells instead of training them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import yaml

from hepfm.study.layout import StudyLayout

ROOT = Path(__file__).resolve().parents[1]
TAGS = {"1e4": "834", "1e5": "8334", "1e6": "full"}  # pretraining events (12 processes) -> events per process
EVENTS = {"1e4": 10_008, "1e5": 100_008, "1e6": 1_000_008}  # pretraining events of each size
STRATEGY = {"multiclass": "finetune_multiclass", "multilabel": "finetune_multilabel", "masked": "finetune_masked"}


def chosen_runs(record: dict) -> dict[str, dict[str, str]]:
    """Size tag -> pretraining task -> the chosen run folder of that size."""
    runs: dict[str, dict[str, str]] = {}
    for task in STRATEGY:
        if task not in record:
            continue
        for tag, size in TAGS.items():
            entry = record[task]["full"] if size == "full" else record[task]["chosen"].get(size)
            if entry:
                runs.setdefault(tag, {})[task] = entry["run"]
    return runs


def study_config(base: dict, models: dict[str, str]) -> dict:
    """The study configuration of one pretraining size: ``base`` (study-cpu) at 1,000 events per class, its
    scratch baseline and one fine-tuning strategy per pretrained model (task -> run folder)."""
    cfg = dict(base, sizes=[1000], strategies=["scratch"] + [STRATEGY[t] for t in models])
    cfg["pretrain"] = dict(base["pretrain"], **models)
    cfg["finetune"] = {k: v for k, v in base["finetune"].items() if k != "by_size"}
    return cfg


def summarise(out: Path, dest: Path) -> None:
    """The gains of every size's finished cells against its pretraining events: scaling.md/.csv and plots."""
    from hepfm.study.config import load_config
    from hepfm.study.scaling import SCALING_MD, scaling_rows, write_scaling

    rows = []
    for tag, events in EVENTS.items():
        if (out / tag / "config.yaml").exists():
            cfg = load_config(out / tag / "config.yaml")
            rows += scaling_rows(cfg, out / tag, events, [s for s in cfg.strategies if s != "scratch"])
    dest.mkdir(parents=True, exist_ok=True)
    write_scaling(rows, dest)
    print((dest / SCALING_MD).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-cpu", type=Path, required=True, help="the configs/study-cpu.yaml run (stores, "
                                                                      "scratch cells)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--task", action="append", help="only this task (repeatable)")
    parser.add_argument("--strategy", action="append", help="only this strategy's cells (repeatable)")
    parser.add_argument("--tag", action="append", choices=list(TAGS), help="only this pretraining size (repeatable)")
    parser.add_argument("--summarise", type=Path, metavar="DEST", help="write the scaling table and plots of the "
                        "finished cells into DEST instead of training")
    args = parser.parse_args()
    if args.summarise:
        summarise(args.out, args.summarise)
        return
    base = yaml.safe_load((ROOT / "configs" / "study-cpu.yaml").read_text())
    record = json.loads((ROOT / "results" / "foundation" / "pretraining.json").read_text())
    for tag, models in chosen_runs(record).items():
        if args.tag and tag not in args.tag:
            continue
        out = args.out / tag
        out.mkdir(parents=True, exist_ok=True)
        here, study_cpu = StudyLayout(out), StudyLayout(args.study_cpu)
        if not (out / here.STORES).exists():
            (out / here.STORES).symlink_to(args.study_cpu.resolve() / study_cpu.STORES)
        for task in base["tasks"]:
            dst = here.cells(task, 1000, "scratch")
            if not dst.exists():
                shutil.copytree(study_cpu.cells(task, 1000, "scratch"), dst)
        cfg = study_config(base, models)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg))
        command = ["hepfm", "study", str(out / "config.yaml"), "--out", str(out), "--size", "1000", "--no-progress"]
        for task in args.task or []:
            command += ["--task", task]
        for strategy in args.strategy or []:
            if strategy in cfg["strategies"]:
                command += ["--strategy", strategy]
        r = subprocess.run(command)
        print(tag, "exit", r.returncode, flush=True)


if __name__ == "__main__":
    main()
