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
from hepfm.physics.truth import HEAVY_NAMES, JET_FLAVOURS, ORIGIN_NAMES

#: Version 1 also covers shards with the optional jet-constituent datasets (``constituents``,
#: ``n_constituents``, ``jet_flavour``): they are additions every reader ignores unless it asks for them.
#: Version 2 adds, in generated shards, the truth datasets ``origin`` int8 [n, M] (what each object came from,
#: :data:`ORIGIN_NAMES`) and ``heavy`` float32 [n, len(HEAVY_NAMES)] (truth kinematics of the tops, W, Z
#: and H), with the attributes ``origin_names`` and ``heavy_names``; the object record is unchanged.
SCHEMA_VERSION = 2
#: Versions whose object record this hepfm reads (a version-1 store simply has no ``origin``/``heavy``).
READABLE_SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)

__all__ = ["BTAG", "BTAG_THRESHOLD", "CHARGE", "CONSTITUENT_CLASS", "CONSTITUENT_CLASSES", "CONSTITUENT_FEATURES",
           "CONSTITUENT_INDEX", "DEFAULT_MAX_OBJECTS", "ENERGY", "ETA", "FEATURES", "FEATURE_INDEX", "HEAVY_NAMES",
           "JET_FLAVOURS", "ORIGIN_NAMES", "PHI", "PT", "READABLE_SCHEMA_VERSIONS", "SCHEMA_VERSION", "TYPE",
           "TYPE_CODES", "TYPE_NAMES", "b_tagged", "constituent_attrs",
           "constituent_counts", "is_type", "same_inputs", "truth_attrs"]


def constituent_attrs(k: int) -> dict:
    """Shard attributes of a store that keeps up to ``k`` constituents per jet (how readers recognise one)."""
    return {"max_constituents": k, "constituent_features": list(CONSTITUENT_FEATURES),
            "constituent_classes": CONSTITUENT_CLASSES, "jet_flavours": JET_FLAVOURS}


def truth_attrs() -> dict:
    """Shard attributes naming the codes of ``origin`` and the columns of ``heavy`` (generated shards)."""
    return {"origin_names": list(ORIGIN_NAMES), "heavy_names": list(HEAVY_NAMES)}


def same_inputs(version_a, version_b) -> bool:
    """Do stores of these two schema versions hold the same object record (what a model reads)?"""
    readable = set(READABLE_SCHEMA_VERSIONS)
    return version_a == version_b or (version_a in readable and version_b in readable)
