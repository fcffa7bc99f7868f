"""The event-store schema: the object record's columns and type codes, and the store's schema version.

The object record itself (feature columns, type codes, M) is defined with the reconstruction in
:mod:`hepfm.physics.objects`; this module adds the version of the on-disk layout and is what store
readers and data loaders import.
"""

from __future__ import annotations

from hepfm.physics.objects import (
    CONSTITUENT_CLASSES,
    CONSTITUENT_FEATURES,
    CONSTITUENT_INDEX,
    DEFAULT_MAX_OBJECTS,
    FEATURE_INDEX,
    FEATURES,
    TYPE_CODES,
    TYPE_NAMES,
)
from hepfm.physics.truth import JET_FLAVOURS

#: Version 1 also covers shards with the optional jet-constituent datasets (``constituents``,
#: ``n_constituents``, ``jet_flavour``): they are additions every reader ignores unless it asks for them.
SCHEMA_VERSION = 1

__all__ = ["CONSTITUENT_CLASSES", "CONSTITUENT_FEATURES", "CONSTITUENT_INDEX", "DEFAULT_MAX_OBJECTS", "FEATURES",
           "FEATURE_INDEX", "JET_FLAVOURS", "SCHEMA_VERSION", "TYPE_CODES", "TYPE_NAMES", "constituent_attrs"]


def constituent_attrs(k: int) -> dict:
    """Shard attributes of a store that keeps up to ``k`` constituents per jet (how readers recognise one)."""
    return {"max_constituents": k, "constituent_features": list(CONSTITUENT_FEATURES),
            "constituent_classes": CONSTITUENT_CLASSES, "jet_flavours": JET_FLAVOURS}
