"""Jet-tagging runs side by side on the same held-out jets: accuracy, rejections, speed and memory.

    python benchmarks/jet_tagging.py RUN [RUN ...] [--efficiency 0.5 0.7]

Each RUN is a folder written by ``hepfm pretrain --task jet-tagging``; the test jets are rebuilt from the
store, split seed and classes the run recorded, so runs made on the same store are compared on the
very same jets (checked). Printed per run: test accuracy with its binomial error, the background
rejection of each flavour pair at the given signal efficiencies (binomial errors), inference speed
(jets/s, one thread, batches of 1024 bucketed by constituent count), the training speed its history
recorded, and the memory a jet takes in a batch (its padded constituent tensor).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

import hepfm
from hepfm.data.jets import jet_tagging_data
from hepfm.eval.metrics import accuracy_error, tagging_rejections
from hepfm.models.batched import predict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--efficiency", type=float, nargs="+", default=[0.5, 0.7])
    args = ap.parse_args()
    torch.set_num_threads(1)
    reference = None
    for run in args.runs:
        model = hepfm.load(run)
        meta = model.metadata
        if meta.get("task") != "jet-tagging":
            raise SystemExit(f"{run}: not a jet-tagging run")
        splits, names = jet_tagging_data(meta["data"], meta["split_seed"], meta.get("max_events"), meta["names"])
        test = splits["test"]
        if reference is None:
            reference = test
        elif not (torch.equal(reference.x, test.x) and torch.equal(reference.y, test.y)):
            print(f"WARNING: {run} was tested on other jets than {args.runs[0]}")
        start = time.perf_counter()
        with torch.no_grad():
            outputs = predict(model, test, batch_size=1024)
        rate = len(test) / (time.perf_counter() - start)
        scores = outputs.softmax(dim=1).numpy()
        y = test.y.numpy()
        acc = float((scores.argmax(axis=1) == y).mean())
        history = list(csv.DictReader(open(run / "history.csv")))
        train_rate = statistics.median(float(r["events_per_s"]) for r in history)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"\n{run} ({meta['architecture']['model']}, {n_params:,} parameters; classes {', '.join(names)}; "
              f"{meta['training']['n_train']} train, {len(test)} test jets)")
        print(f"  test accuracy {acc:.4f} ± {accuracy_error(acc, len(test)):.4f}")
        for row in tagging_rejections(scores, y, names, efficiencies=args.efficiency):
            print(f"  {row['signal']:>5} vs {row['background']:<5} at {row['signal_efficiency']:.0%}: rejection "
                  f"{row['rejection']:7.2f} ± {row['rejection_error']:5.2f}   AUC {row['auc']:.4f}   "
                  f"({row['n_signal']} vs {row['n_background']} jets)")
        k = test.x.shape[1]
        print(f"  inference {rate:,.0f} jets/s (one thread); training {train_rate:,.0f} jets/s (median epoch of its "
              f"history); a jet takes {k * test.x.shape[2] * 4 + 16} bytes in memory (K = {k}); mean constituents "
              f"{float(test.n_constituents.float().mean()):.1f}")


if __name__ == "__main__":
    main()
