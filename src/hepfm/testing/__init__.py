"""Pieces shared by hepfm's tests and benchmarks, importable from an installed hepfm.

* :mod:`hepfm.testing.events`: toy and synthetic events in the store's layout, and stores of them
  (no Pythia needed);
* :mod:`hepfm.testing.streaming`: how class-mixed streamed batches are;
* :mod:`hepfm.testing.peers`: GraphNet written with PyTorch Geometric and as a dense padded model, with
  GraphNet's exact weights (needs the ``[pyg]`` extra, so it is not imported here).
"""

from hepfm.testing.events import (
    multi_task_store,
    one_shard_per_process_store,
    synthetic_events,
    synthetic_store,
    toy_events,
    toy_store,
)

__all__ = ["multi_task_store", "one_shard_per_process_store", "synthetic_events", "synthetic_store", "toy_events",
           "toy_store"]
