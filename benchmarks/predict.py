"""hepfm predict throughput: events/s into each output format, next to the bare model forward on the same
events in memory (the ratio is what reading, identity columns and writing cost).

    python benchmarks/predict.py [--events 100000] [--threads 2] [--model-dir DIR]

Uses toy events in the store layout (:func:`hepfm.testing.toy_store`; ~6 objects per event) and a GraphNet with
default options unless ``--model-dir`` names a trained model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hepfm.data.datasets import read_events
from hepfm.inference.predict import predict_file
from hepfm.models.pretrained import load
from hepfm.models.registry import create_model
from hepfm.models.saving import save_model
from hepfm.testing import toy_store


def bare_forward(model, store: Path, batch_size: int) -> float:
    """Events/s of model forward passes on the store's events already in memory."""
    arrays = read_events(store, ("objects", "n_objects"))[0]
    x, n = torch.from_numpy(arrays["objects"]), torch.from_numpy(arrays["n_objects"].astype(np.int64))
    start = time.perf_counter()
    with torch.no_grad():
        for b in range(0, len(x), batch_size):
            nb = n[b:b + batch_size]
            width = int(nb.max())
            model(x[b:b + batch_size, :width], torch.arange(width)[None] < nb[:, None])
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--model-dir", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = toy_store(tmp / "store", n_per_class=args.events // 2, shards=4)
        model_dir = args.model_dir
        if model_dir is None:
            torch.manual_seed(0)
            model_dir = save_model(create_model("graphnet", 2), tmp / "model",
                                   {"task": "multiclass", "names": ["soft", "hard"]})
        model = load(model_dir).eval()
        bare = bare_forward(model, store, args.batch_size)
        print(f"{args.events:,} toy events, {args.threads} threads, batch {args.batch_size}")
        print(f"{'bare model forward (in memory)':34s} {bare:10,.0f} events/s  1.00")
        for suffix in (".parquet", ".h5", ".root"):
            rep = predict_file(model_dir, store, tmp / f"scores{suffix}", batch_size=args.batch_size, progress=False)
            rate = rep.events_per_second
            size = (tmp / f"scores{suffix}").stat().st_size / 1e6
            print(f"{'hepfm predict -> ' + suffix:34s} {rate:10,.0f} events/s  {rate / bare:.2f}  ({size:.1f} MB)")


if __name__ == "__main__":
    main()
