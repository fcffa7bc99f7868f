"""How class-mixed are streamed batches? Distinct processes per batch on a one-process-per-shard store.

Writes a store of ``--processes`` processes, one shard each (the layout of a large pretraining store
generated process by process), streams one epoch of its training split with the given shuffle buffer,
read unit and batch size, and prints the mean and minimum number of distinct classes per batch.
The defaults are the library defaults scaled down 10x (buffer 200,000 -> 20,000; read unit
65,536 -> 6,554; batch 1,024 stays), so the buffer holds about as many read units as at full scale.

    python benchmarks/stream_mixing.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from hepfm.data.streaming import StreamingEvents
from hepfm.io.schema import TYPE, TYPE_CODES
from hepfm.io.store import shard_name, write_manifest, write_shard


def write_store(root: Path, processes: int, events: int) -> Path:
    """One shard of ``events`` random single-object events per process."""
    rng = np.random.default_rng(0)
    for p in range(processes):
        name = f"p{p:02d}"
        (root / name).mkdir(parents=True)
        objects = np.zeros((events, 2, 7), np.float32)
        objects[:, 0, :4] = rng.random((events, 4))
        objects[:, 0, TYPE] = TYPE_CODES["jet"]
        arrays = {"objects": objects, "n_objects": np.ones(events, np.int64), "n_dropped": np.zeros(events, np.int32),
                  "process": np.zeros(events, np.int32), "weight": np.ones(events, np.float32),
                  "event_id": np.arange(events, dtype=np.int64)}
        write_shard(root / name / shard_name(0), arrays, {"process_name": name, "process_names": [name],
                                                          "seed": p + 1, "shard_index": 0})
    write_manifest(root)
    return root


def classes_per_batch(store: Path, buffer_size: int, chunk_size: int, batch_size: int):
    """(distinct classes, largest class share) of each full batch of epoch 0."""
    src = StreamingEvents(store, buffer_size=buffer_size, chunk_size=chunk_size)
    counts = [np.unique(y.numpy(), return_counts=True)[1] for n, _, _, y in src.epoch_batches(0, 0, batch_size)
              if n == batch_size]
    return np.array([len(c) for c in counts]), np.array([c.max() / c.sum() for c in counts])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=12)
    ap.add_argument("--events", type=int, default=20_000, help="events per process")
    ap.add_argument("--buffer", type=int, default=20_000)
    ap.add_argument("--chunk", type=int, default=6_554)
    ap.add_argument("--batch", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "store", args.processes, args.events)
        k, share = classes_per_batch(store, args.buffer, args.chunk, args.batch)
    print(f"{args.processes} processes x {args.events} events, buffer {args.buffer}, read unit {args.chunk}, "
          f"batch {args.batch}: {len(k)} batches, distinct classes per batch mean {k.mean():.2f}, min {k.min()}, "
          f"max {k.max()}; largest class share per batch mean {share.mean():.3f}, max {share.max():.3f} "
          f"(uniform: {1 / args.processes:.3f})")


if __name__ == "__main__":
    main()
