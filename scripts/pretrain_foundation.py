"""The recipe of the shipped foundation models (graphnet-pythia12-multiclass / -multilabel), resumable.

For each pretraining task and each pretraining size (events per process), every learning rate of the grid is
trained with early stopping on validation loss, and the rate with the lowest validation loss is chosen; the
chosen run of each size is that size's model (the scaling curve). The full set (every event of the store) is
trained once, at the rate chosen on the largest subset: a grid at a million events costs three times the CPU
hours this project has. Finished runs are skipped, a stopped run resumes from its checkpoint, and
``results/foundation/pretraining.json`` records every run (validation loss per rate, choices, held-out
metrics, time).

    python scripts/pretrain_foundation.py --data /work/data/pretrain-1m --out /work/data/foundation \\
        --task multiclass --sizes 834 8334 --full
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

from hepfm.io.atomic import atomic_write_text
from hepfm.models.saving import CONFIG, read_config
from hepfm.train.trainer import TrainConfig
from hepfm.train.workflows import pretrain

RESULTS = Path(__file__).resolve().parents[1] / "results" / "foundation" / "pretraining.json"


def best_val_loss(run: Path) -> float:
    """The lowest validation loss of a finished run (the early-stopping criterion)."""
    with open(run / "history.csv") as f:
        return min(float(r["val_loss"]) for r in csv.DictReader(f))


def train(data, run: Path, task: str, lr: float, max_events, args) -> dict:
    """One pretraining run (skipped when finished); its record."""
    if not (run / CONFIG).exists():
        cfg = TrainConfig(epochs=args.epochs if max_events else args.full_epochs, batch_size=args.batch_size,
                          patience=args.patience if max_events else args.full_patience, bf16=args.bf16,
                          progress=not args.no_progress, seed=0)
        pretrain(data, run, task=task, lr=lr, max_events=max_events, cfg=cfg, device="cpu")
    training = read_config(run)["training"]
    return {"run": str(run), "task": task, "lr": lr, "max_events_per_process": max_events,
            "val_loss": best_val_loss(run), "test": training["test"], "n_train": training["n_train"],
            "epochs_run": training["epochs_run"], "best_epoch": training["best_epoch"],
            "stopped_early": training["stopped_early"], "train_time_s": training["train_time_s"],
            "cpu_hours": training["train_time_s"] * args.threads / 3600}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--task", default="multiclass", choices=("multiclass", "multilabel"))
    parser.add_argument("--sizes", type=int, nargs="*", default=[834, 8334], help="events per process")
    parser.add_argument("--grid", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    parser.add_argument("--full", action="store_true", help="then train on every event at the chosen rate")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--full-epochs", type=int, default=30)
    parser.add_argument("--full-patience", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU or GPU)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    args.threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))

    record = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    runs = record.setdefault(args.task, {"grid": [], "chosen": {}, "full": None})
    chosen = None
    for size in args.sizes:
        points = []
        for lr in args.grid:
            t0 = time.time()
            points.append(train(args.data, args.out / f"{args.task}-{size}-lr{lr:g}", args.task, lr, size, args))
            print(f"{args.task} {size}/process lr {lr:g}: val loss {points[-1]['val_loss']:.4f}, held-out "
                  f"{points[-1]['test']} ({time.time() - t0:.0f} s)", flush=True)
        runs["grid"] = [p for p in runs["grid"] if p["max_events_per_process"] != size] + points
        chosen = min(points, key=lambda p: p["val_loss"])
        runs["chosen"][str(size)] = chosen
        print(f"{args.task} {size}/process: chosen lr {chosen['lr']:g}", flush=True)
        atomic_write_text(RESULTS, json.dumps(record, indent=1, sort_keys=True))
    if args.full:
        lr = chosen["lr"] if chosen else runs["chosen"][max(runs["chosen"], key=int)]["lr"]
        runs["full"] = train(args.data, args.out / f"{args.task}-full-lr{lr:g}", args.task, lr, None, args)
        print(f"{args.task} full set, lr {lr:g}: held-out {runs['full']['test']}", flush=True)
        atomic_write_text(RESULTS, json.dumps(record, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
