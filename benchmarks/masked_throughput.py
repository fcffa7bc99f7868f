"""Masked-object pretraining events/s next to multiclass pretraining events/s: same backbone, store, batches.

Both run through the trainer (:func:`hepfm.train.trainer.fit`) on the same in-memory training events with the
same batch size; the masked task additionally draws its per-batch uniforms, hides one object per event on the
device and feeds the dummy token. Tasks alternate, ``--repeats`` times each, and the training rate of every
epoch after the first (warm-up) is recorded; the printed figure is the median, with the ratio
masked / multiclass (goal: >= 0.9).

    python benchmarks/masked_throughput.py --data STORE [--model graphnet] [--device auto] [--max-events 2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from hepfm.data.datasets import pretraining_split
from hepfm.data.features import fit_scaling
from hepfm.data.masking import object_classes
from hepfm.io.schema import TYPE
from hepfm.models.registry import create_model
from hepfm.train.distributed import DistContext
from hepfm.train.strategies import prepare
from hepfm.train.tasks import Task
from hepfm.train.trainer import TrainConfig, fit


def _rates(model_name: str, options: dict, task: Task, train, val, cfg: TrainConfig, device: str) -> list[float]:
    torch.manual_seed(0)
    model = create_model(model_name, task.n_outputs, **options, **({"mask_token": True} if task.masked else {}))
    model.scaling.set(*fit_scaling(train.x.numpy(), train.n_objects.numpy()))
    ctx = DistContext(device=torch.device(device))
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(model, task, train, val, prepare(model, "scratch", task.n_outputs, lr=1e-3), cfg, run_dir, ctx)
    return [row["events_per_s"] for row in result.history[1:]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="A store with at least two processes (multiclass needs them).")
    ap.add_argument("--model", default="graphnet")
    ap.add_argument("--max-events", type=int, default=2000, help="Events per process.")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=3, help="Epochs per run (the first is warm-up).")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    splits, names = pretraining_split(args.data, "multiclass", max_events=args.max_events)
    train, val = splits["train"].to(device), splits["val"].subset(torch.arange(min(256, len(splits["val"]))))
    mask = torch.arange(train.x.shape[1])[None, :] < train.n_objects.cpu()[:, None]
    classes = object_classes(None, torch.unique(train.x.cpu()[..., TYPE][mask]).tolist())
    tasks = {"multiclass": Task("multiclass", names), "masked": Task("masked", classes)}
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs, progress=False,
                      tensorboard=False, compile=args.compile)
    rates: dict[str, list[float]] = {k: [] for k in tasks}
    for _ in range(args.repeats):
        for name, task in tasks.items():
            rates[name] += _rates(args.model, {}, task, train, val.to(device), cfg, device)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"{args.model} on {device} ({torch.cuda.get_device_name() if device.startswith('cuda') else 'CPU'}, "
          f"{torch.get_num_threads()} threads), {len(train)} training events of {args.data}, batch {args.batch_size}, "
          f"{args.repeats} x {args.epochs - 1} timed epochs per task")
    for k, v in rates.items():
        print(f"  {k:10s} {med[k]:10,.0f} events/s (median; range {min(v):,.0f}-{max(v):,.0f})")
    print(f"  ratio masked / multiclass: {med['masked'] / med['multiclass']:.3f}")


if __name__ == "__main__":
    main()
