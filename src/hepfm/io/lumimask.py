"""Certified-luminosity masks ("golden JSON"): which luminosity sections of which runs are good for physics.

The file is CMS's JSON format: an object whose keys are run numbers (as strings) and whose values are
lists of inclusive ``[first, last]`` luminosity-section ranges, e.g. ``{"315257": [[1, 88], [91, 92]]}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hepfm.errors import HepfmError


@dataclass(frozen=True)
class LumiMask:
    """Certified (run, luminosity section) ranges, read from a golden JSON file."""

    path: str
    ranges: dict[int, np.ndarray]  # run -> [k, 2] inclusive lumi-section ranges, sorted

    @classmethod
    def from_file(cls, path: str | Path) -> LumiMask:
        """Read and check a golden JSON file; a malformed one is a HepfmError naming it."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise HepfmError(f"{path}: no such luminosity JSON file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HepfmError(f"{path}: not a readable JSON file ({exc})") from None
        if not isinstance(raw, dict) or not raw:
            raise HepfmError(f"{path}: a luminosity JSON maps run numbers to [first, last] lumi-section ranges")
        ranges = {}
        for run, spans in raw.items():
            try:
                arr = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
                ok = str(run).isdigit() and len(arr) == len(spans) and bool(np.all(arr[:, 0] <= arr[:, 1]))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise HepfmError(f"{path}: run {run!r} needs a list of [first, last] lumi-section ranges, "
                                 f"got {spans!r:.60}")
            ranges[int(run)] = arr[np.argsort(arr[:, 0])]
        return cls(str(path), ranges)

    def contains(self, run: np.ndarray, lumi: np.ndarray) -> np.ndarray:
        """True for each (run, luminosity section) pair inside a certified range."""
        run, lumi = np.asarray(run, dtype=np.int64), np.asarray(lumi, dtype=np.int64)
        good = np.zeros(len(run), dtype=bool)
        for r in np.unique(run):
            spans = self.ranges.get(int(r))
            if spans is None:
                continue
            rows = run == r
            k = np.searchsorted(spans[:, 0], lumi[rows], side="right") - 1
            good[rows] = (k >= 0) & (lumi[rows] <= spans[np.maximum(k, 0), 1])
        return good
