"""The event-store schema: the object record's columns and type codes, and the store's schema version.

The object record itself (feature columns, their named indices such as :data:`TYPE` and :data:`BTAG`,
type codes, M, and the accessors :func:`is_type`, :func:`b_tagged` and :func:`constituent_counts`) is
defined with the reconstruction in :mod:`hepfm.physics.objects`, the one place the layers below the store
can see; this module adds the version of the on-disk layout and is what store readers, data loaders,
models and training import. Code indexes record columns by these names, never by number.
"""

from __future__ import annotations

from hepfm.physics.objects import (
    BTAG,
    BTAG_THRESHOLD,
    CHARGE,
    CONSTITUENT_CLASS,
    CONSTITUENT_CLASSES,
    CONSTITUENT_FEATURES,
    CONSTITUENT_INDEX,
    DEFAULT_MAX_OBJECTS,
    ENERGY,
    ETA,
    FEATURE_INDEX,
    FEATURES,
    PHI,
    PT,
    TYPE,
    TYPE_CODES,
    TYPE_NAMES,
    b_tagged,
    constituent_counts,
    is_type,
)
from hepfm.physics.truth import JET_FLAVOURS

#: Version 1 also covers shards with the optional jet-constituent datasets (``constituents``,
#: ``n_constituents``, ``jet_flavour``): they are additions every reader ignores unless it asks for them.
SCHEMA_VERSION = 1

__all__ = ["BTAG", "BTAG_THRESHOLD", "CHARGE", "CONSTITUENT_CLASS", "CONSTITUENT_CLASSES", "CONSTITUENT_FEATURES",
           "CONSTITUENT_INDEX", "DEFAULT_MAX_OBJECTS", "ENERGY", "ETA", "FEATURES", "FEATURE_INDEX", "JET_FLAVOURS",
           "PHI", "PT", "SCHEMA_VERSION", "TYPE", "TYPE_CODES", "TYPE_NAMES", "b_tagged", "constituent_attrs",
           "constituent_counts", "is_type"]


def constituent_attrs(k: int) -> dict:
    """Shard attributes of a store that keeps up to ``k`` constituents per jet (how readers recognise one)."""
    return {"max_constituents": k, "constituent_features": list(CONSTITUENT_FEATURES),
            "constituent_classes": CONSTITUENT_CLASSES, "jet_flavours": JET_FLAVOURS}
