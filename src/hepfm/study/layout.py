"""The names of a study folder's files and folders, in one place (written by :mod:`hepfm.study.run`, read by
:mod:`hepfm.study.report` and :mod:`hepfm.study.scaling`)::

    DIR/stores/pretrain, DIR/stores/downstream      generated event stores (reused on rerun)
    DIR/pretrained/<task>/                          pretrained models (reused on rerun); quality.json for the
                                                    multilabel backbone (label accuracy vs trivial predictors)
    DIR/tuning/<task>/<size>/<strategy>/            one run per learning-rate point (seed 0) and tuning.json:
                                                    the grid, each point's validation loss/accuracy, the choice
    DIR/cells/<task>/<size>/<strategy>/seed<k>/     result.json, test scores (scores.npy), latents (latent.npy)
                                                    and, for seeds > 0, the run folder(s) lr<...>/
    DIR/failures.json, DIR/timing.json              cells that raised (retried on rerun); wall times
                                                    (failures-<part>.json, timing-<part>.json for a part)
    DIR/report.md, cells.csv, tuning.csv, ...       the report (:func:`hepfm.study.report.write_report`)

The files inside each run folder (weights, checkpoint, history) belong to the trainer's run folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


@dataclass(frozen=True)
class StudyLayout:
    """Paths inside one study folder ``root``."""

    root: Path

    RESULT: ClassVar[str] = "result.json"  # a finished cell's numbers
    TUNING: ClassVar[str] = "tuning.json"  # a tuning grid's points and choice
    QUALITY: ClassVar[str] = "quality.json"  # the multilabel backbone's label accuracy
    SCORES: ClassVar[str] = "scores.npy"  # a cell's test-set [labels; scores]
    LATENT: ClassVar[str] = "latent.npy"  # a cell's test-set latents, for CKA
    STORES: ClassVar[str] = "stores"
    PRETRAINED: ClassVar[str] = "pretrained"
    TUNING_DIR: ClassVar[str] = "tuning"
    CELLS: ClassVar[str] = "cells"
    PLOTS: ClassVar[str] = "plots"
    REPORT: ClassVar[str] = "report.md"
    CELLS_CSV: ClassVar[str] = "cells.csv"
    TUNING_CSV: ClassVar[str] = "tuning.csv"
    EFFICIENCY_CSV: ClassVar[str] = "efficiency.csv"
    DATA_EFFICIENCY_CSV: ClassVar[str] = "data_efficiency.csv"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ------------------------------------------------------------------------------------------- inputs
    def store(self, name: str) -> Path:
        """A generated event store: ``pretrain`` or ``downstream``."""
        return self.root / self.STORES / name

    def pretrained(self, task: str) -> Path:
        """The model pretrained on ``task``."""
        return self.root / self.PRETRAINED / task

    # ------------------------------------------------------------------------------------------- grid
    def tuning(self, task: str, size: int, strategy: str) -> Path:
        """Folder of one (task, size, strategy)'s learning-rate tuning runs."""
        return self.root / self.TUNING_DIR / task / str(size) / strategy

    def cells(self, task: str, size: int, strategy: str) -> Path:
        """Folder of one (task, size, strategy)'s cells, one per seed."""
        return self.root / self.CELLS / task / str(size) / strategy

    def cell(self, task: str, size: int, strategy: str, seed: int) -> Path:
        """Folder of one grid cell."""
        return self.cells(task, size, strategy) / f"seed{seed}"

    def run(self, relative: str | Path) -> Path:
        """A run folder named relative to the study folder (as ``result.json``'s ``run`` records it)."""
        return self.root / relative

    def link_from(self, other: StudyLayout, tasks, sizes, strategies) -> None:
        """Link ``other``'s tuning and cells of ``strategies`` into this study, which then skips them: for
        strategies whose runs do not depend on what differs between the two studies (the same stores, seeds
        and grid). Folders this study already has are kept."""
        for task in tasks:
            for size in sizes:
                for strategy in strategies:
                    for src, dst in ((other.tuning(task, size, strategy), self.tuning(task, size, strategy)),
                                     (other.cells(task, size, strategy), self.cells(task, size, strategy))):
                        if src.exists() and not dst.exists():
                            dst.parent.mkdir(parents=True, exist_ok=True)
                            dst.symlink_to(src.resolve(), target_is_directory=True)

    def results(self) -> list[Path]:
        """Every finished cell's ``result.json``, those of linked cells (:meth:`link_from`) included."""
        # A glob by levels follows linked folders, where rglob("**") would not descend into them.
        return sorted((self.root / self.CELLS).glob(f"*/*/*/*/{self.RESULT}"))

    # ------------------------------------------------------------------------------------ bookkeeping
    def failures(self, part: str | None = None) -> Path:
        """The failed cells of the whole grid (``part`` None) or of one part of it."""
        return self.root / ("failures.json" if part is None else f"failures-{part}.json")

    def all_failures(self) -> list[Path]:
        """Every failures file: the whole grid's and each part's."""
        return sorted(self.root.glob("failures*.json"))

    def timing(self, part: str | None = None) -> Path:
        """Wall times of the whole grid (``part`` None) or of one part of it."""
        return self.root / ("timing.json" if part is None else f"timing-{part}.json")

    def all_timings(self) -> list[Path]:
        """The whole grid's timing file if there is one, else every part's."""
        whole = self.timing()
        return [whole] if whole.exists() else sorted(self.root.glob("timing-*.json"))

    # ----------------------------------------------------------------------------------------- report
    def table1(self, metric: str, suffix: str) -> Path:
        """Table I of ``metric`` (accuracy or auc) as ``.md`` or ``.csv``."""
        return self.root / f"table1_{metric}{suffix}"

    def cka(self, task: str) -> Path:
        """The CKA comparison of ``task``'s latents."""
        return self.root / f"cka_{task}.json"

    def plot(self, name: str) -> Path:
        """A figure of the report."""
        return self.root / self.PLOTS / name
