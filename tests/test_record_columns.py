"""The object record's named columns and accessors (hepfm.io.schema) read the columns they name."""

from __future__ import annotations

import numpy as np
import torch

from hepfm.io import schema


def _rows() -> np.ndarray:
    """Four object rows: a b-tagged jet, an untagged jet, a muon, padding."""
    rows = np.zeros((4, len(schema.FEATURES)), dtype=np.float32)
    for row, (pt, btag, kind) in enumerate([(40.0, 1.0, "jet"), (30.0, 0.0, "jet"), (20.0, 0.0, "muon")]):
        rows[row, schema.PT], rows[row, schema.BTAG], rows[row, schema.TYPE] = pt, btag, schema.TYPE_CODES[kind]
    return rows


def test_named_columns_are_the_record_columns():
    names = ("pt", "eta", "phi", "energy", "btag", "charge", "type")
    assert schema.FEATURES == names
    named = [schema.PT, schema.ETA, schema.PHI, schema.ENERGY, schema.BTAG, schema.CHARGE, schema.TYPE]
    assert named == [0, 1, 2, 3, 4, 5, 6]  # the on-disk layout: changing it needs a new SCHEMA_VERSION
    assert schema.CONSTITUENT_FEATURES[schema.CONSTITUENT_CLASS] == "class"


def test_accessors_agree_on_numpy_and_torch_and_on_wider_rows():
    rows = _rows()
    wide = np.concatenate([rows, np.full((4, 3), 9.0, dtype=np.float32)], axis=1)  # extra columns after the record
    for x in (rows, torch.from_numpy(rows), wide, torch.from_numpy(wide)):
        assert list(np.asarray(schema.is_type(x, "jet"))) == [True, True, False, False]
        assert list(np.asarray(schema.is_type(x, "muon", "electron"))) == [False, False, True, False]
        assert list(np.asarray(schema.is_type(x, "jet") & schema.b_tagged(x))) == [True, False, False, False]


def test_constituent_counts_count_the_rows_with_a_class():
    k = 5
    constituents = np.zeros((2, 3, k, len(schema.CONSTITUENT_FEATURES)), dtype=np.float32)
    constituents[0, 0, :3, schema.CONSTITUENT_CLASS] = schema.CONSTITUENT_CLASSES["photon"]
    constituents[1, 2, :, schema.CONSTITUENT_CLASS] = schema.CONSTITUENT_CLASSES["charged_hadron"]
    counts = schema.constituent_counts(constituents)
    np.testing.assert_array_equal(counts, [[3, 0, 0], [0, 0, k]])
    np.testing.assert_array_equal(schema.constituent_counts(torch.from_numpy(constituents)).numpy(), counts)
