"""Measurements of streamed batches, shared by the streaming tests and benchmarks/stream_mixing.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hepfm.data.streaming import StreamingEvents


def classes_per_batch(store: Path, buffer_size: int, chunk_size: int, batch_size: int):
    """(distinct classes, largest class share) of each full batch of epoch 0."""
    src = StreamingEvents(store, buffer_size=buffer_size, chunk_size=chunk_size)
    counts = [np.unique(y.numpy(), return_counts=True)[1] for n, _, _, y in src.epoch_batches(0, 0, batch_size)
              if n == batch_size]
    return np.array([len(c) for c in counts]), np.array([c.max() / c.sum() for c in counts])
