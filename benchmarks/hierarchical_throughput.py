"""Hierarchical event model on the CPU: training events/s, padding and memory per event, with the batch's jets
encoded in one group at the batch's largest jet (``jet_buckets`` 1) against count-sorted groups (the default).

Both run the trainer (:func:`hepfm.train.trainer.fit`) on the same training events of a store with constituents
(signal and background process folders), same model and initial weights, same batches; they alternate,
``--repeats`` times each, and the median events/s of the epochs after the first (warm-up) is printed with the
ratio. Padding: padded constituent slots per real constituent over the training batches, both ways. Memory:
bytes per event of the stored rows (objects with their constituents, float32) and of the store on disk.

    python benchmarks/hierarchical_throughput.py --signal STORE/x_hh_4b --background STORE/qcd \\
        [--jet-model jet_transformer] [--train-size 500] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from hepfm.data.datasets import BinarySplitPlan, binary_split, open_source, stored_constituents
from hepfm.data.features import fit_scaling
from hepfm.io.schema import FEATURE_INDEX, TYPE_CODES
from hepfm.models.hierarchical import N_CONSTITUENT, N_OBJECT, jet_groups
from hepfm.models.registry import create_model
from hepfm.train.distributed import DistContext
from hepfm.train.strategies import prepare
from hepfm.train.tasks import Task
from hepfm.train.trainer import TrainConfig, fit


def padding(train, k: int, batch_size: int, buckets: int) -> float:
    """Padded constituent slots per real constituent over shuffled batches, for a given grouping."""
    g = torch.Generator().manual_seed(0)
    real = padded = 0
    for idx in torch.randperm(len(train), generator=g).split(batch_size):
        x, n_obj = train.x[idx], train.n_objects[idx]
        mask = torch.arange(x.shape[1])[None, :] < n_obj[:, None]
        jets = x[mask & (x[..., FEATURE_INDEX["type"]] == TYPE_CODES["jet"])][:, N_OBJECT:]
        n = (jets.reshape(-1, k, N_CONSTITUENT)[..., -1] > 0).sum(dim=1)
        for idx, width in jet_groups(n, buckets):  # the model's own grouping
            real += int(n[idx].sum())
            padded += len(idx) * width - int(n[idx].sum())
    return padded / real


def rates(train, val, k: int, args, buckets: int) -> list[float]:
    torch.manual_seed(0)
    model = create_model("hierarchical", 1, event_model=args.event_model, jet_model=args.jet_model,
                         max_constituents=k)
    model.jet_buckets = buckets
    model.scaling.set(*fit_scaling(train.x[..., :N_OBJECT].numpy(), train.n_objects.numpy()))
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs, progress=False,
                      tensorboard=False)
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(model, Task("binary", ["background", "signal"]), train, val,
                     prepare(model, "scratch", 1, lr=1e-3), cfg, run_dir, DistContext(device=torch.device("cpu")))
    return [row["events_per_s"] for row in result.history[1:]]


def main() -> None:
    from hepfm.models import hierarchical

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--signal", required=True)
    ap.add_argument("--background", required=True)
    ap.add_argument("--jet-model", default="jet_transformer")
    ap.add_argument("--event-model", default="graphnet")
    ap.add_argument("--train-size", type=int, default=500, help="Training events per class.")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3, help="Epochs per run (the first is warm-up).")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    k = stored_constituents(args.signal)
    splits = binary_split(args.signal, args.background, BinarySplitPlan(train_size=args.train_size, test_size=10),
                          constituents=True)
    train, val = splits["train"], splits["val"]
    mean_objects = float(train.n_objects.float().mean())
    store = open_source(args.signal)[0]
    files = [p for p in Path(store.root).rglob("*") if p.is_file()]
    on_disk = sum(p.stat().st_size for p in files) / sum(store.counts().values())
    print(f"{len(train):,} training events, {mean_objects:.1f} objects each, K = {k} constituents per jet")
    print(f"memory per event: {4 * (N_OBJECT + N_CONSTITUENT * k) * mean_objects:,.0f} B as unpadded float32 rows "
          f"({4 * (N_OBJECT + N_CONSTITUENT * k) * train.x.shape[1]:,} B at the store's {train.x.shape[1]} slots); "
          f"{on_disk:,.0f} B on disk per event of the whole store (compressed)")
    found: dict[int, list[float]] = {1: [], hierarchical.JET_BUCKETS: []}
    for _ in range(args.repeats):
        for buckets in found:
            found[buckets] += rates(train, val, k, args, buckets)
    one, grouped = (statistics.median(found[b]) for b in found)
    pad = {b: padding(train, k, args.batch_size, b) for b in found}
    print(f"{args.event_model} + {args.jet_model}, batch {args.batch_size}, one CPU thread "
          f"({torch.get_num_threads()} torch threads):")
    print(f"  one group at the batch's largest jet: {one:,.0f} events/s, {pad[1]:.3f} padded per real constituent")
    print(f"  {hierarchical.JET_BUCKETS} count-sorted groups:          {grouped:,.0f} events/s, "
          f"{pad[hierarchical.JET_BUCKETS]:.3f} padded per real constituent")
    print(f"  ratio grouped / one group: {grouped / one:.2f}")


if __name__ == "__main__":
    main()
