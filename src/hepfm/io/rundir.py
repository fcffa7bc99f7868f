"""The files of a run folder, by name: one place that knows what a training run writes where.

A run folder holds the model (:data:`WEIGHTS` + :data:`CONFIG`, loadable with :func:`hepfm.load`), the
per-epoch :data:`HISTORY`, :data:`TENSORBOARD` logs and, while the run is unfinished, its
:data:`CHECKPOINT` and (streamed pretraining) the data plan :data:`STREAM_PLAN`; a fine-tuning run with a
linear probe first (LP-FT) keeps the probe's own run folder in :data:`PROBE`, with the probe's head in
:data:`PROBE_WEIGHTS` (the weights the probe trained). A study adds each
cell's test :data:`SCORES` and :data:`LATENT` sample to the cell's run folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hepfm.errors import HepfmError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.pt"
STREAM_PLAN = "stream.json"
TENSORBOARD = "tensorboard"
SCORES = "scores.npy"
LATENT = "latent.npy"
#: LP-FT's first phase (a head trained on the frozen backbone): a run folder of its own inside the run's.
PROBE = "probe"
PROBE_WEIGHTS = "probed.safetensors"


class RunDir:
    """A run folder: the paths of its files, whether it holds a finished model, and clearing it."""

    #: What a run writes into its folder (interrupted atomic writes of these leave NAME.*.tmp files behind).
    RUN_FILES = (CONFIG, WEIGHTS, HISTORY, CHECKPOINT, STREAM_PLAN)
    #: Kept when a run fails after checkpointing, so rerunning the command resumes it exactly.
    RESUME_FILES = (CHECKPOINT, STREAM_PLAN, PROBE)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def history(self) -> Path:
        return self.path / HISTORY

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def stream_plan(self) -> Path:
        return self.path / STREAM_PLAN

    @property
    def probe(self) -> Path:
        return self.path / PROBE

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def scores(self) -> Path:
        return self.path / SCORES

    @property
    def latent(self) -> Path:
        return self.path / LATENT

    def holds_model(self) -> bool:
        """Whether a finished model is here (its config.json, written last, and no checkpoint of a run going on)."""
        return self.config.exists() and not self.checkpoint.exists()

    def check_free(self, overwrite: bool) -> None:
        """Refuse a path that is not a folder, or a folder holding a finished model unless ``overwrite``."""
        if self.path.exists() and not self.path.is_dir():
            raise HepfmError(f"{self.path}: exists and is not a folder")
        if self.holds_model() and not overwrite:
            raise HepfmError(f"{self.path}: already holds a trained model; choose another output folder or overwrite "
                             "it explicitly")

    def clear(self) -> None:
        """Remove a previous run's outputs (model, history, checkpoint, data plan, logs): the run starts fresh."""
        for name in self.RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.tensorboard, ignore_errors=True)
