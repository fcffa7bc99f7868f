"""Patience check: each cell of a check study (longer early-stopping patience) next to the same cell of the study.

    python results/foundation/patience-check/summarise.py STUDY:CHECK [STUDY:CHECK ...]

Every cell of CHECK (same task, size, strategy, seed, events, test set and learning rates as in STUDY) is
printed with its accuracy, AUC, epochs run and best epoch beside STUDY's, and for each (task, size, seed) with
both a scratch and a fine-tuned cell, the gain under both patiences with its paired-bootstrap test-sample error
(one seed: no seed spread).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from hepfm.study.stats import gain_test_error


def _cells(root: Path) -> dict:
    cells = {}
    for path in (root / "cells").rglob("result.json"):
        r = json.loads(path.read_text())
        r["scores"] = np.load(path.parent / "scores.npy")  # [labels; scores] on the task's test set
        cells[(r["task"], r["size"], r["strategy"], r["seed"])] = r
    return cells


def _fmt(r: dict) -> str:
    return f"{100 * r['accuracy']:.2f} / {100 * r['auc']:.2f} / {r['epochs_run']} ({r['best_epoch']})"


def _gain(cells: dict, key: tuple, base: tuple) -> str:
    a, b = cells[key], cells[base]
    y = b["scores"][0]
    if not np.array_equal(a["scores"][0], y):
        raise SystemExit(f"{key} and {base} were not scored on the same test events")
    out = []
    for metric in ("accuracy", "auc"):
        err = gain_test_error(y, [b["scores"][1]], [a["scores"][1]], metric)
        out.append(f"{100 * (a[metric] - b[metric]):+.2f} ± {100 * err:.2f}")
    return " / ".join(out)


def main() -> None:
    pairs = [arg.split(":", 1) for arg in sys.argv[1:]]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise SystemExit(__doc__)
    study, check = {}, {}
    for s, c in pairs:
        study.update(_cells(Path(s)))
        check.update(_cells(Path(c)))
    print("| task | size/class | strategy | seed | study: accuracy / AUC (%) / epochs (best) | "
          "longer patience | Δ accuracy (pts) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for key in sorted(check):
        if key in study:
            d = 100 * (check[key]["accuracy"] - study[key]["accuracy"])
            print(f"| {key[0]} | {key[1]:,} | {key[2]} | {key[3]} | {_fmt(study[key])} | {_fmt(check[key])} "
                  f"| {d:+.2f} |")
    print("\n| task | size/class | seed | gain, study's patience (acc / AUC, pts) | gain, longer patience |")
    print("| --- | --- | --- | --- | --- |")
    for key in sorted(check):
        task, size, strategy, seed = key
        base = (task, size, "scratch", seed)
        if strategy != "scratch" and base in check and key in study and base in study:
            print(f"| {task} | {size:,} | {seed} | {_gain(study, key, base)} | {_gain(check, key, base)} |")


if __name__ == "__main__":
    main()
