"""The run record: what a model's ``config.json`` says about the run that trained it, as one typed value.

``config.json`` holds the architecture (written by :func:`hepfm.models.saving.save_model`) and this record:
the task and its names, the strategy, the data and their identity, the learning rates and the training
summary. A command records only the fields that concern it (a pretraining run has no ``signal``); the others
are :data:`UNSET` and left out of the file, not written as null, so the keys are those hepfm always wrote.

``record_version`` is :data:`RECORD_VERSION` in files written now; a file without it (hepfm before the
record) reads as version 0, with the same keys. Keys the record does not know are kept (``extra``) and
written back unchanged; a file from a newer record version is refused, naming the version.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hepfm.errors import HepfmError

#: The version of the record written now (1: the first typed record; 0: files written before it).
RECORD_VERSION = 1


class _Unset:
    """A field the run did not record (left out of config.json)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()


def known(value, default=None):
    """``value``, or ``default`` where it is :data:`UNSET` (a field the run did not record)."""
    return default if value is UNSET else value


@dataclass
class RunRecord:
    """A run's record in ``config.json`` (see the module docstring); every field may be :data:`UNSET`."""

    #: The training task (:mod:`hepfm.train.tasks`) and the class or label names it predicts.
    task: str = UNSET
    names: list[str] = UNSET
    #: "pretrain" for pretraining runs, else the fine-tuning strategy (scratch, finetune, frozen).
    strategy: str = UNSET
    #: The model the run started from, as given (a run folder or a shipped model's name), or None.
    init_from: str | None = UNSET
    lr: float = UNSET
    backbone_lr: float = UNSET
    frozen_part: str = UNSET
    max_events: int | None = UNSET
    #: Pretraining: the store, the split seed, how the data were read, the task's options.
    data: str = UNSET
    split_seed: int = UNSET
    data_loading: dict = UNSET
    task_options: dict = UNSET
    #: Fine-tuning: the two stores (as given and resolved) and the split plan.
    signal: str = UNSET
    background: str = UNSET
    data_paths: dict = UNSET
    split: dict = UNSET
    #: What the model reads ("constituents", "objects+constituents"; unset: objects) and the hierarchical flag.
    inputs: str = UNSET
    hierarchical: bool = UNSET
    #: Data identity: the pretraining events (inherited by fine-tuned models) and the overlap found with them.
    pretraining_data: list | None = UNSET
    pretraining_overlap: dict | None = UNSET
    overlap: bool = UNSET
    #: What the model expects of its inputs (:func:`hepfm.models.pretrained.data_schema`).
    data_schema: dict | None = UNSET
    #: The training summary (epochs, timing, test metrics, the TrainConfig, world size).
    training: dict = UNSET
    #: Written by :func:`~hepfm.models.saving.save_model` (read back, never passed to it).
    architecture: dict = UNSET
    hepfm_version: str = UNSET
    record_version: int = RECORD_VERSION
    #: Keys this version does not know, kept as they were.
    extra: dict = field(default_factory=dict)

    _WRITTEN_BY_SAVE = ("architecture", "hepfm_version")

    @classmethod
    def from_json(cls, config: dict, source: str = "config.json") -> RunRecord:
        """The record of a config.json's contents (version 0 when it has no ``record_version``)."""
        version = config.get("record_version", 0)
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise HepfmError(f"{source}: unreadable record_version {version!r}")
        if version > RECORD_VERSION:
            raise HepfmError(f"{source}: written by a newer hepfm (record version {version}; this hepfm reads up "
                             f"to {RECORD_VERSION}); upgrade hepfm to read it")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "record_version"}
        values = {k: v for k, v in config.items() if k in known}
        extra = {k: v for k, v in config.items() if k not in known and k != "record_version"}
        return cls(**values, record_version=version, extra=extra)

    def to_json(self) -> dict:
        """The config.json contents of this record: the recorded fields, the unknown keys, the version."""
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and value is not UNSET:
                out[f.name] = value
        if not self.record_version:
            out.pop("record_version")  # version 0: a file written before the record, kept as it was
        return out

    def metadata(self) -> dict:
        """What :func:`~hepfm.models.saving.save_model` is given: the record without what it writes itself."""
        return {k: v for k, v in self.to_json().items() if k not in self._WRITTEN_BY_SAVE}

    @property
    def model(self) -> str:
        """The registry name of the recorded architecture."""
        return self.architecture["model"]

    @property
    def model_config(self) -> dict:
        """The recorded architecture's options."""
        return dict(self.architecture.get("config", {}))

    @property
    def heads(self) -> dict[str, float]:
        """A multi-task run's heads and their loss weights (``task_options.heads``); {} for any other run."""
        heads = known(self.task_options, {}).get("heads") or {}
        return {head: float(spec["weight"]) for head, spec in heads.items()}

    def inherited_pretraining_data(self) -> list:
        """The pretraining events a model started from this one inherits ([] if none recorded)."""
        return list(self.pretraining_data or [])
