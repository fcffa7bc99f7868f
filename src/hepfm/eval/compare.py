"""Domain comparison of two event stores (e.g. converted NanoAOD against generated events of the same process):
per-process summaries with errors on the mean, and their ratio to a reference store's process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hepfm.errors import HepfmError
from hepfm.io.store import EventStore
from hepfm.physics import validation as val


@dataclass
class ComparisonRow:
    """One process of one store: ``summary`` maps quantity -> (mean, error on the mean)."""

    store: str
    process: str
    summary: dict[str, tuple[float, float]]


@dataclass
class StoreComparison:
    """Summaries of every process in both stores and the (process, reference process) pairs compared."""

    rows: list[ComparisonRow]
    reference_rows: list[ComparisonRow]
    pairs: list[tuple[str, str]]
    objects: dict[tuple[str, str], np.ndarray]  # (store label, process) -> objects array, for plots

    def row(self, process: str, reference: bool = False) -> ComparisonRow:
        """The row of a process of the compared (or, with ``reference``, the reference) store."""
        for r in self.reference_rows if reference else self.rows:
            if r.process == process:
                return r
        raise KeyError(process)

    def ratios(self, process: str, reference_process: str) -> dict[str, tuple[float, float]]:
        """Ratio (compared / reference) with its error for every compared quantity of one pair."""
        a, b = self.row(process).summary, self.row(reference_process, reference=True).summary
        return {q: val.ratio_with_error(a[q], b[q]) for q in val.COMPARISON_QUANTITIES}


def default_pairs(processes: list[str], reference: list[str]) -> list[tuple[str, str]]:
    """Pair each process with the reference process of the same name, else with the only reference process."""
    pairs = []
    for p in processes:
        if p in reference:
            pairs.append((p, p))
        elif len(reference) == 1:
            pairs.append((p, reference[0]))
    return pairs


def compare_stores(store: str | Path, reference: str | Path, max_events: int = 200_000,
                   pairs: list[tuple[str, str]] | None = None) -> StoreComparison:
    """Summarise both stores per process and pair processes (``pairs`` of (process, reference process), by default
    ``default_pairs``); an unknown process in ``pairs`` is a HepfmError."""
    stores = {"store": EventStore(store), "reference": EventStore(reference)}
    names = {k: list(es.process_names) for k, es in stores.items()}
    if pairs is None:
        pairs = default_pairs(names["store"], names["reference"])
    for a, b in pairs:
        for label, p, path in (("store", a, store), ("reference", b, reference)):
            if p not in names[label]:
                raise HepfmError(f"{path}: no process {p!r} (has {', '.join(names[label])})")
    objects, rows = {}, {"store": [], "reference": []}
    for label, es in stores.items():
        for name in names[label]:
            obj = es.head(max_events, [name], ("objects",))["objects"]
            objects[(label, name)] = obj
            rows[label].append(ComparisonRow(str(es.root), name, val.summary_with_errors(obj)))
    return StoreComparison(rows["store"], rows["reference"], list(pairs), objects)
