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
                          schedule="exponential" if max_events else args.full_schedule,
                          progress=not args.no_progress, seed=0)
        pretrain(data, run, task=task, lr=lr, max_events=max_events, cfg=cfg, device="cpu")
    training = read_config(run)["training"]
    return {"run": str(run), "task": task, "lr": lr, "max_events_per_process": max_events,
            "val_loss": best_val_loss(run), "test": training["test"], "n_train": training["n_train"],
            "epochs_run": training["epochs_run"], "best_epoch": training["best_epoch"],
            "stopped_early": training["stopped_early"], "train_time_s": training["train_time_s"],
            "bf16": bool(args.bf16), "batch_size": args.batch_size, "schedule": training["config"]["schedule"],
            "cpu_hours": training["train_time_s"] * args.threads / 3600}


def notes(record: dict, task: str) -> str:
    """Markdown for the model card: the learning-rate grid per size and the full run, from the record."""
    runs = record[task]
    sizes = sorted({p["max_events_per_process"] for p in runs["grid"]})
    grid = sorted({p["lr"] for p in runs["grid"]})
    lines = ["Learning rate chosen by the lowest validation loss, per pretraining size "
             "(`scripts/pretrain_foundation.py`; Adam, batch 512, rate x 0.99 per epoch, early stopping on "
             "validation loss):", "",
             "| events per process | " + " | ".join(f"val. loss at {lr:g}" for lr in grid)
             + " | chosen | held-out accuracy | epochs | precision |", "|---" * (len(grid) + 5) + "|"]
    for size in sizes:
        points = {p["lr"]: p for p in runs["grid"] if p["max_events_per_process"] == size}
        best = runs["chosen"][str(size)]
        lines.append(f"| {size:,} | " + " | ".join(f"{points[lr]['val_loss']:.4f}" if lr in points else "-"
                                                    for lr in grid)
                     + f" | {best['lr']:g} | {100 * best['test']['accuracy']:.1f}% | {best['epochs_run']} | "
                     + ("bf16" if best.get("bf16") else "fp32") + " |")
    full = runs.get("full")
    if full:
        lines += ["", f"This model: every event of the set at the rate chosen on the largest subset ({full['lr']:g}), "
                  f"{'bf16 autocast' if full.get('bf16') else 'fp32'}, {full.get('schedule', 'exponential')} schedule, "
                  f"{full['epochs_run']} epochs (best {full['best_epoch']}; "
                  f"{'stopped early' if full['stopped_early'] else 'the epoch budget ended it'}), "
                  f"{full['train_time_s'] / 3600:.2f} h, {full['cpu_hours']:.2f} CPU-hours."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--task", default="multiclass", choices=("multiclass", "multilabel", "masked"))
    parser.add_argument("--sizes", type=int, nargs="*", default=[834, 8334], help="events per process")
    parser.add_argument("--grid", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    parser.add_argument("--full", action="store_true", help="then train on every event at the chosen rate")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--full-epochs", type=int, default=30)
    parser.add_argument("--full-patience", type=int, default=2)
    parser.add_argument("--full-schedule", default="exponential", choices=("exponential", "cosine"),
                        help="cosine anneals the rate to zero over --full-epochs: a fixed budget, trained out")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU or GPU)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON record to update")
    parser.add_argument("--print-notes", action="store_true", help="print the model card's table and exit")
    args = parser.parse_args()
    if args.print_notes:
        print(notes(json.loads(args.results.read_text()), args.task))
        return
    args.threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))

    record = json.loads(args.results.read_text()) if args.results.exists() else {}
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
        atomic_write_text(args.results, json.dumps(record, indent=1, sort_keys=True))
    if args.full:
        lr = chosen["lr"] if chosen else runs["chosen"][max(runs["chosen"], key=int)]["lr"]
        runs["full"] = train(args.data, args.out / f"{args.task}-full-lr{lr:g}", args.task, lr, None, args)
        print(f"{args.task} full set, lr {lr:g}: held-out {runs['full']['test']}", flush=True)
        atomic_write_text(args.results, json.dumps(record, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
