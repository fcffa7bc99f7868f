"""The event-store schema: the object record's columns and type codes, and the store's schema version.

The object record itself (feature columns, type codes, M) is defined with the reconstruction in
:mod:`hepfm.physics.objects`; this module adds the version of the on-disk layout and is what store
readers and data loaders import.
"""

from __future__ import annotations

from hepfm.physics.objects import DEFAULT_MAX_OBJECTS, FEATURE_INDEX, FEATURES, TYPE_CODES, TYPE_NAMES

SCHEMA_VERSION = 1

__all__ = ["DEFAULT_MAX_OBJECTS", "FEATURES", "FEATURE_INDEX", "SCHEMA_VERSION", "TYPE_CODES", "TYPE_NAMES"]
