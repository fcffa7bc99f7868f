"""The event-store schema: feature columns, object type codes and the schema version.

Kept apart from the reader/writer so that producers (detector, NanoAOD reader) and consumers (data
loaders) agree on one definition.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

#: Columns of the ``objects`` array, in order. Energies are massless: E = pT cosh(eta).
FEATURES: tuple[str, ...] = ("pt", "eta", "phi", "energy", "btag", "charge", "type")
FEATURE_INDEX = {name: i for i, name in enumerate(FEATURES)}

#: Object type codes stored in the ``type`` column; 0 marks padding rows (all-zero rows).
TYPE_CODES: dict[str, int] = {"padding": 0, "jet": 1, "electron": 2, "muon": 3, "photon": 4, "tau": 5, "met": 6}
TYPE_NAMES: dict[int, str] = {v: k for k, v in TYPE_CODES.items()}

#: Default maximum number of objects per event (the M of x[B, M, F]).
DEFAULT_MAX_OBJECTS = 20
