"""Reading and writing events: the sharded HDF5 event store and external formats."""

from __future__ import annotations

__all__ = ["EventStore"]


def __getattr__(name: str):
    if name == "EventStore":
        from hepfm.io.store import EventStore

        return EventStore
    raise AttributeError(f"module 'hepfm.io' has no attribute {name!r}")
