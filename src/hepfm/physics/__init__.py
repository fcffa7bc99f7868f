"""Physics: the process catalog, event simulation, detector response, the object record and truth labels.

Event simulation (Pythia 8 -> detector -> truth labels) lives in :mod:`hepfm.physics.generation`; the
job that runs it shard by shard and writes event stores is :mod:`hepfm.io.generate` (``hepfm generate``).
Nothing here reads or writes files of the event store: this package imports nothing from :mod:`hepfm.io`.
"""
