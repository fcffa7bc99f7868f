"""The run record, defined in :mod:`hepfm.models.record` (below the training layer, so that inference, study
and the CLI read ``config.json`` as the same typed value); re-exported here where training imports it."""

from hepfm.models.record import RECORD_VERSION, UNSET, RunRecord, known

__all__ = ["RECORD_VERSION", "UNSET", "RunRecord", "known"]
