"""Training tasks: their output size, per-event loss, scores and metrics.

* ``multiclass``: cross entropy over the pretraining processes.
* ``multilabel``: the 41 truth labels; binary labels use binary cross entropy on logits, the 5 count
  labels use mean squared error; the event loss is the equal-weighted mean of the 41 per-label losses.
* ``binary``: one logit, binary cross entropy (signal = 1).
* ``jet-tagging``: cross entropy over the truth flavours of jets (a multiclass task on jets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from hepfm.errors import ConfigurationError
from hepfm.physics.truth import LABEL_KINDS, LABEL_NAMES

TASKS = ("multiclass", "multilabel", "binary", "jet-tagging")
#: Tasks whose examples are jets (constituents) rather than events (objects).
JET_TASKS = ("jet-tagging",)


@dataclass
class Task:
    """A task: ``name``, the class or label names it predicts, and how to score it."""

    name: str
    names: list[str]

    @property
    def _classes(self) -> bool:
        return self.name in ("multiclass", "jet-tagging")

    def __post_init__(self):
        if self.name not in TASKS:
            raise ConfigurationError(f"unknown task {self.name!r}; choose from {', '.join(TASKS)}")
        if self.name == "multilabel":
            if list(self.names) != list(LABEL_NAMES):
                raise ConfigurationError("multilabel tasks predict the 41 truth labels of hepfm.physics.truth")
            self._regression = torch.tensor([k == "regression" for k in LABEL_KINDS])

    @property
    def n_outputs(self) -> int:
        """Width of the output layer."""
        return 1 if self.name == "binary" else len(self.names)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-event loss [B] (float32)."""
        outputs = outputs.float()
        if self._classes:
            return F.cross_entropy(outputs, y, reduction="none")
        if self.name == "binary":
            return F.binary_cross_entropy_with_logits(outputs[:, 0], y, reduction="none")
        regression = self._regression.to(outputs.device)
        per_label = torch.where(regression, (outputs - y) ** 2,
                                F.binary_cross_entropy_with_logits(outputs, y, reduction="none"))
        return per_label.mean(dim=1)

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """Probabilities: softmax (multiclass, jet-tagging), sigmoid (binary; [B]), sigmoid or value (multilabel)."""
        outputs = outputs.float()
        if self._classes:
            return outputs.softmax(dim=1)
        if self.name == "binary":
            return outputs[:, 0].sigmoid()
        return torch.where(self._regression.to(outputs.device), outputs, outputs.sigmoid())

    def metrics(self, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Accuracy (and ROC AUC for binary tasks) of ``outputs`` against targets ``y``."""
        from sklearn.metrics import roc_auc_score

        s = self.scores(outputs).cpu().numpy()
        t = y.cpu().numpy()
        if self._classes:
            return {"accuracy": float((s.argmax(axis=1) == t).mean())}
        if self.name == "binary":
            out = {"accuracy": float(((s >= 0.5) == (t == 1)).mean())}
            if 0 < t.sum() < len(t):
                out["auc"] = float(roc_auc_score(t, s))
            return out
        binary = ~self._regression.numpy()
        acc = ((s[:, binary] >= 0.5) == (t[:, binary] >= 0.5)).mean()
        counts = (np.rint(s[:, ~binary]) == t[:, ~binary]).mean()
        return {"accuracy": float(acc), "count_accuracy": float(counts)}

    def report(self, outputs: torch.Tensor, y: torch.Tensor) -> dict:
        """The held-out detail a model card shows: for multiclass the confusion matrix (rows: true class,
        columns: predicted; counts) and each class's accuracy; for multilabel each binary label's ROC AUC
        (None where the test events hold one value only) and each count label's exact-count accuracy."""
        from sklearn.metrics import confusion_matrix, roc_auc_score

        s = self.scores(outputs).cpu().numpy()
        t = y.cpu().numpy()
        if self._classes:
            matrix = confusion_matrix(t, s.argmax(axis=1), labels=range(len(self.names)))
            per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
            return {"confusion_matrix": matrix.tolist(),
                    "class_accuracy": dict(zip(self.names, map(float, per_class), strict=True))}
        if self.name == "binary":
            return {}
        out: dict = {"label_auc": {}, "count_accuracy": {}}
        for i, (name, regression) in enumerate(zip(self.names, self._regression.tolist(), strict=True)):
            if regression:
                out["count_accuracy"][name] = float((np.rint(s[:, i]) == t[:, i]).mean())
            else:
                positive = t[:, i] >= 0.5
                out["label_auc"][name] = (float(roc_auc_score(positive, s[:, i]))
                                          if 0 < positive.sum() < len(positive) else None)
        return out
