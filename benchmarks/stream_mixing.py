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

from hepfm.testing import one_shard_per_process_store
from hepfm.testing.streaming import classes_per_batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=12)
    ap.add_argument("--events", type=int, default=20_000, help="events per process")
    ap.add_argument("--buffer", type=int, default=20_000)
    ap.add_argument("--chunk", type=int, default=6_554)
    ap.add_argument("--batch", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = one_shard_per_process_store(Path(tmp) / "store", args.processes, args.events)
        k, share = classes_per_batch(store, args.buffer, args.chunk, args.batch)
    print(f"{args.processes} processes x {args.events} events, buffer {args.buffer}, read unit {args.chunk}, "
          f"batch {args.batch}: {len(k)} batches, distinct classes per batch mean {k.mean():.2f}, min {k.min()}, "
          f"max {k.max()}; largest class share per batch mean {share.mean():.3f}, max {share.max():.3f} "
          f"(uniform: {1 / args.processes:.3f})")


if __name__ == "__main__":
    main()
