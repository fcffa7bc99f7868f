"""Training tasks: their output size, per-event loss, scores and metrics.

* ``multiclass``: cross entropy over the pretraining processes.
* ``multilabel``: the 41 truth labels; binary labels use binary cross entropy on logits, the 5 count
  labels use mean squared error; the event loss is the equal-weighted mean of the 41 per-label losses.
* ``binary``: one logit, binary cross entropy (signal = 1).
* ``masked``: self-supervised; one object per event is hidden at batch time (:mod:`hepfm.data.masking`)
  and the task predicts its class: cross entropy over the store's object classes. With ``regress``, five
  more outputs regress the hidden object's kinematics (mean squared error on standardised log pT, eta,
  log E and cos/sin phi), added to the cross entropy with weight ``regress_weight``. Events too small to
  mask (fewer than 2 objects) have no loss and are left out of the accuracy.
* ``jet-tagging``: cross entropy over the truth flavours of jets (a multiclass task on jets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from hepfm.data import masking
from hepfm.errors import ConfigurationError
from hepfm.physics.truth import LABEL_KINDS, LABEL_NAMES

TASKS = ("multiclass", "multilabel", "binary", "masked", "jet-tagging")
PRETRAINING_TASKS = ("multiclass", "multilabel", "masked")  # event-level pretraining (jets: JET_TASKS)
#: Tasks whose examples are jets (constituents) rather than events (objects).
JET_TASKS = ("jet-tagging",)
#: Seed of the masks of evaluation (validation, test) events: the same events get the same masks in every
#: epoch and run, whatever the batch size.
EVAL_MASK_SEED = 20_240_601


@dataclass
class Task:
    """A task: ``name``, the class or label names it predicts, and how to score it.

    ``regress`` and ``regress_weight`` apply to the masked task only.
    """

    name: str
    names: list[str]
    regress: bool = False
    regress_weight: float = 1.0

    @property
    def _classes(self) -> bool:
        return self.name in ("multiclass", "jet-tagging")

    def __post_init__(self):
        if self.name not in TASKS:
            raise ConfigurationError(f"unknown task {self.name!r}; choose from {', '.join(TASKS)}")
        if self.regress and self.name != "masked":
            raise ConfigurationError("kinematic regression is an option of the masked task only")
        if self.name == "masked":
            self._table = masking.class_table(list(self.names))
        if self.name == "multilabel":
            if list(self.names) != list(LABEL_NAMES):
                raise ConfigurationError("multilabel tasks predict the 41 truth labels of hepfm.physics.truth")
            self._regression = torch.tensor([k == "regression" for k in LABEL_KINDS])

    @property
    def n_outputs(self) -> int:
        """Width of the output layer."""
        if self.name == "masked":
            return len(self.names) + (len(masking.KINEMATIC_TARGETS) if self.regress else 0)
        return 1 if self.name == "binary" else len(self.names)

    @property
    def masked(self) -> bool:
        """Whether batches must be masked (:meth:`mask`) before the model sees them."""
        return self.name == "masked"

    def mask(self, x: torch.Tensor, mask: torch.Tensor, u: torch.Tensor,
             scaling) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(masked x, hidden [B, M], targets [B, 6]) of a batch; ``u`` [B] uniform numbers choose the objects
        and ``scaling`` (the model's feature scaling) standardises the regression targets."""
        return masking.mask_objects(x, mask, u, self._table, scaling.mean, scaling.std)

    def eval_uniforms(self, n: int) -> torch.Tensor:
        """The fixed uniform numbers that choose the hidden objects of ``n`` evaluation events (CPU)."""
        return torch.rand(n, generator=torch.Generator().manual_seed(EVAL_MASK_SEED), dtype=torch.float64)

    def summary(self) -> dict:
        """The task's options, saved with a model (``task_options`` in config.json)."""
        if self.name != "masked":
            return {}
        return {"regress": self.regress, "regress_weight": self.regress_weight,
                "kinematic_targets": list(masking.KINEMATIC_TARGETS) if self.regress else [],
                "min_objects": masking.MIN_OBJECTS}

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-event loss [B] (float32)."""
        outputs = outputs.float()
        if self._classes:
            return F.cross_entropy(outputs, y, reduction="none")
        if self.name == "binary":
            return F.binary_cross_entropy_with_logits(outputs[:, 0], y, reduction="none")
        if self.name == "masked":
            k = len(self.names)
            target = y[:, 0].long()
            loss = F.cross_entropy(outputs[:, :k], target, ignore_index=masking.IGNORE, reduction="none")
            if self.regress:
                mse = ((outputs[:, k:] - y[:, 1:]) ** 2).mean(dim=1)
                loss = loss + self.regress_weight * torch.where(target != masking.IGNORE, mse, 0.0)
            return loss
        regression = self._regression.to(outputs.device)
        per_label = torch.where(regression, (outputs - y) ** 2,
                                F.binary_cross_entropy_with_logits(outputs, y, reduction="none"))
        return per_label.mean(dim=1)

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """Probabilities: softmax (multiclass, jet-tagging), sigmoid (binary; [B]), sigmoid or value (multilabel)."""
        outputs = outputs.float()
        if self._classes:
            return outputs.softmax(dim=1)
        if self.name == "masked":
            return outputs[:, :len(self.names)].softmax(dim=1)
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
        if self.name == "masked":
            return self._masked_metrics(s, outputs, y)
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
        if self.name in ("binary", "masked"):
            return {}  # masked: per-class accuracies are among its metrics
        out: dict = {"label_auc": {}, "count_accuracy": {}}
        for i, (name, regression) in enumerate(zip(self.names, self._regression.tolist(), strict=True)):
            if regression:
                out["count_accuracy"][name] = float((np.rint(s[:, i]) == t[:, i]).mean())
            else:
                positive = t[:, i] >= 0.5
                out["label_auc"][name] = (float(roc_auc_score(positive, s[:, i]))
                                          if 0 < positive.sum() < len(positive) else None)
        return out

    def _masked_metrics(self, s: np.ndarray, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        t = y[:, 0].long().cpu().numpy()
        used = t != masking.IGNORE
        s, t = s[used], t[used]
        if not len(t):
            return {"accuracy": float("nan")}
        right = s.argmax(axis=1) == t
        counts = np.bincount(t, minlength=len(self.names))
        out = {"accuracy": float(right.mean()), "chance": float(counts.max() / len(t))}
        for i, name in enumerate(self.names):
            if counts[i]:
                out[f"accuracy_{name}"] = float(right[t == i].mean())
        if self.regress:
            k = len(self.names)
            pred, true = outputs[:, k:].float().cpu().numpy()[used], y[:, 1:].cpu().numpy()[used]
            out["kinematics_mse"] = float(((pred - true) ** 2).mean())
        return out
