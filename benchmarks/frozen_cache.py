"""Training with a frozen part: its outputs computed once per event (``cache_frozen``, the default) against
the frozen part run at every step, side by side on the same events, model and batches.

``--mode head``: a new output head on the shipped ``graphnet-pythia12-multiclass`` backbone, frozen (the study's
``frozen_multiclass``). ``--mode jets``: a hierarchical model (GraphNet event backbone) whose jet backbone
(``--jet-model``, random weights: only the speed matters here) is frozen, on a store with constituents (the
study's ``hierarchical_frozen``). Each configuration runs ``--repeats`` times, alternating; printed: the median
wall time of a whole run (``--epochs`` epochs, validation included, the caching itself included), the ratio, and
the largest difference of the per-epoch validation losses between the two. The head trains on the very same
numbers (difference 0). The jet embeddings agree to float32 rounding (~1e-6), which training in float32 at
these rates amplifies, as it does between two plain runs with another jet grouping (``jet_buckets``); in
float64 the two runs agree exactly (tests/test_hierarchical.py).

    python benchmarks/frozen_cache.py --mode head --signal STORE/stop_t2t1h --background STORE/tth
    python benchmarks/frozen_cache.py --mode jets --signal STORE/hplus_tb --background STORE/ttbar
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import hepfm
from hepfm.data.datasets import BinarySplitPlan, binary_split, stored_constituents
from hepfm.data.features import fit_scaling
from hepfm.models.hierarchical import N_OBJECT
from hepfm.models.registry import create_model
from hepfm.train.distributed import DistContext
from hepfm.train.strategies import prepare
from hepfm.train.tasks import Task
from hepfm.train.trainer import TrainConfig, fit


def build(args, train):
    """(model, optimiser groups) with the frozen part frozen, the same initial weights every call."""
    torch.manual_seed(0)
    if args.mode == "head":
        model = hepfm.load_pretrained("graphnet-pythia12-multiclass")
        return model, prepare(model, "frozen", 1, lr=3e-3)
    model = create_model("hierarchical", 1, event_model="graphnet", jet_model=args.jet_model,
                         max_constituents=stored_constituents(args.signal))
    model.scaling.set(*fit_scaling(train.x[..., :N_OBJECT].numpy(), train.n_objects.numpy()))
    for p in model.jet.parameters():
        p.requires_grad_(False)
    return model, [{"params": [p for p in model.parameters() if p.requires_grad], "lr": 1e-3}]


def run(args, splits, cache: bool) -> tuple[float, list[float]]:
    model, groups = build(args, splits["train"])
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs, cache_frozen=cache,
                      progress=False, tensorboard=False)
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        result = fit(model, Task("binary", ["background", "signal"]), splits["train"], splits["val"], groups, cfg,
                     run_dir, DistContext(device=torch.device("cpu")))
        wall = time.perf_counter() - start
    return wall, [row["val_loss"] for row in result.history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["head", "jets"], required=True)
    parser.add_argument("--signal", required=True)
    parser.add_argument("--background", required=True)
    parser.add_argument("--jet-model", default="deepsets")
    parser.add_argument("--train-size", type=int, default=1000, help="training events per class")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    splits = binary_split(args.signal, args.background, BinarySplitPlan(train_size=args.train_size, test_size=200),
                          constituents=args.mode == "jets")
    walls = {True: [], False: []}
    losses = {}
    for _ in range(args.repeats):
        for cache in (False, True):
            wall, losses[cache] = run(args, splits, cache)
            walls[cache].append(wall)
    plain, cached = statistics.median(walls[False]), statistics.median(walls[True])
    print(f"{args.mode}: {len(splits['train'])} training + {len(splits['val'])} validation events, {args.epochs} "
          f"epochs, batch {args.batch_size}, {args.repeats} alternating repeats, {torch.get_num_threads()} thread(s)")
    print(f"  frozen part at every step: {plain:8.2f} s  (runs: {', '.join(f'{w:.2f}' for w in walls[False])})")
    print(f"  computed once per event:   {cached:8.2f} s  (runs: {', '.join(f'{w:.2f}' for w in walls[True])})")
    print(f"  ratio: {plain / cached:.1f}x; largest validation-loss difference "
          f"{max(abs(a - b) for a, b in zip(losses[True], losses[False], strict=True)):.2e}")


if __name__ == "__main__":
    main()
