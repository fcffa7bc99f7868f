"""Reading and writing events: the sharded HDF5 event store and external formats."""
