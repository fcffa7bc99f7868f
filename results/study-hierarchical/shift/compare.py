"""The two jet backbones side by side: tt + QCD (this folder) against the 12-process Standard-Model mix (../).

Both studies train the same event model on the same events with the same seeds and test set; only the jet
backbone's pretraining jets differ. Prints each strategy's accuracy per seed and the paired difference
(mean ± its standard error over the seeds).

    python results/study-hierarchical/shift/compare.py
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _cells(path: Path) -> dict:
    with path.open() as f:
        return {(r["task"], int(r["size"]), r["strategy"], int(r["seed"])): float(r["accuracy"])
                for r in csv.DictReader(f)}


def main() -> None:
    shift, mix = _cells(HERE / "cells.csv"), _cells(HERE.parent / "cells.csv")
    print("| size/class | strategy | tt+QCD backbone (%) | SM-mix backbone (%) | difference (pts) |")
    print("| --- | --- | --- | --- | --- |")
    for key in sorted({k[:3] for k in shift if k[2] != "scratch"}):
        seeds = sorted(k[3] for k in shift if k[:3] == key and (*key, k[3]) in mix)
        a = [100 * shift[(*key, s)] for s in seeds]
        b = [100 * mix[(*key, s)] for s in seeds]
        diff = [x - y for x, y in zip(a, b, strict=True)]
        err = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else float("nan")
        print(f"| {key[1]:,} | {key[2]} | {' / '.join(f'{x:.2f}' for x in a)} | {' / '.join(f'{x:.2f}' for x in b)} "
              f"| {statistics.mean(diff):+.2f} ± {err:.2f} ({len(diff)} seeds) |")


if __name__ == "__main__":
    main()
