"""Training tasks: their output size, per-event loss, scores and metrics.

Each kind of task is a class registered under its name (:func:`register_task`, :data:`TASKS`);
``Task(name, names, **options)`` builds the registered class of that name, so configs and saved models
name tasks by string. The kinds:

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

* ``origin``: what each object came from, a classification per object (the backbone's per-object outputs;
  padding ignored).
* ``heavy``: truth kinematics of the event's heavy particles, masked by their existence flags, standardised.

:class:`MultiTask` (``multi``) combines several tasks as heads of one backbone: each event-level head reads
its own slice of the outputs, a per-object head its slice of the per-object outputs, each its own targets, and
the event loss is the weighted sum of the heads' losses; a masked head masks the batch every head reads.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from hepfm.data import masking
from hepfm.errors import ConfigurationError
from hepfm.physics.truth import LABEL_KINDS, LABEL_NAMES

#: Seed of the masks of evaluation (validation, test) events: the same events get the same masks in every
#: epoch and run, whatever the batch size.
EVAL_MASK_SEED = 20_240_601

_REGISTRY: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task kind buildable by its ``name`` (``Task(name, names)``)."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ConfigurationError(f"task name {cls.name!r} is taken by {_REGISTRY[cls.name].__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


class _ByName(type):
    """``Task("binary", names, ...)`` builds the task class registered as "binary"; a subclass builds itself."""

    def __call__(cls, *args, **kwargs):
        if cls is Task:
            if not args:
                raise ConfigurationError("Task needs the task's name")
            name, *args = args
            if name not in _REGISTRY:
                raise ConfigurationError(f"unknown task {name!r}; choose from {', '.join(_REGISTRY)}")
            cls = _REGISTRY[name]
        return super().__call__(*args, **kwargs)


class Task(metaclass=_ByName):
    """A task: its ``name`` (the registry key), the class or label ``names`` it predicts, and how to score it.

    A subclass sets ``name`` and implements :attr:`n_outputs`, :meth:`loss`, :meth:`scores` and
    :meth:`metrics`; ``outputs`` are the model's outputs [B, n_outputs] and ``y`` the batch's targets.
    ``regress`` and ``regress_weight`` are options of the masked task; every other task refuses ``regress``.
    """

    name: ClassVar[str] = "task"
    #: Whether a finished run records :meth:`report` (the model card's held-out detail).
    card_detail: ClassVar[bool] = False
    #: Whether batches must be masked (:meth:`mask`) before the model sees them.
    masked: ClassVar[bool] = False
    #: Whether the task reads per-object outputs [B, M, n_outputs] (the backbone's per-object head).
    per_object: ClassVar[bool] = False

    def __init__(self, names, regress: bool = False, regress_weight: float = 1.0):
        if regress:
            raise ConfigurationError("kinematic regression is an option of the masked task only")
        self.names = names
        self.regress = False
        self.regress_weight = regress_weight

    def __repr__(self) -> str:
        return f"{type(self).__name__}(names={list(self.names)!r})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and (other.names, other.regress, other.regress_weight) == (
            self.names, self.regress, self.regress_weight)

    __hash__ = None

    @property
    def n_outputs(self) -> int:
        """Width of the output layer."""
        return len(self.names)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-event loss [B] (float32)."""
        raise NotImplementedError

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """Probabilities (or values, for regressed outputs) of ``outputs``."""
        raise NotImplementedError

    def metrics(self, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Accuracy and the task's other figures of ``outputs`` against targets ``y``."""
        raise NotImplementedError

    def report(self, outputs: torch.Tensor, y: torch.Tensor) -> dict:
        """The held-out detail a model card shows (none by default)."""
        return {}

    def score_table(self, outputs) -> torch.Tensor:
        """The scores a model's predictions are written as, one column each [B, C] (``predict``, ONNX)."""
        s = self.scores(outputs)
        return s[:, None] if s.ndim == 1 else s

    def summary(self) -> dict:
        """The task's options, saved with a model (``task_options`` in config.json)."""
        return {}

    def mask(self, x: torch.Tensor, mask: torch.Tensor, u: torch.Tensor, scaling):
        """(masked x, hidden, targets) of a batch; only for tasks with :attr:`masked` set."""
        raise ConfigurationError(f"the {self.name} task does not mask its inputs")

    def mask_batch(self, x: torch.Tensor, mask: torch.Tensor, u: torch.Tensor, scaling, y):
        """(masked x, hidden, targets) of a batch whose targets were ``y`` (a masked task's targets are made
        here; a multi-task keeps its other heads' targets)."""
        return self.mask(x, mask, u, scaling)

    def eval_uniforms(self, n: int) -> torch.Tensor:
        """The fixed uniform numbers that choose the hidden objects of ``n`` evaluation events (CPU)."""
        return torch.rand(n, generator=torch.Generator().manual_seed(EVAL_MASK_SEED), dtype=torch.float64)


@register_task
class MulticlassTask(Task):
    """Cross entropy over ``names`` (one class per example)."""

    name = "multiclass"
    card_detail = True

    def loss(self, outputs, y):
        return F.cross_entropy(outputs.float(), y, reduction="none")

    def scores(self, outputs):
        """Softmax over the classes."""
        return outputs.float().softmax(dim=1)

    def metrics(self, outputs, y):
        s = self.scores(outputs).cpu().numpy()
        return {"accuracy": float((s.argmax(axis=1) == y.cpu().numpy()).mean())}

    def report(self, outputs, y):
        """The confusion matrix (rows: true class, columns: predicted; counts) and each class's accuracy."""
        from sklearn.metrics import confusion_matrix

        s = self.scores(outputs).cpu().numpy()
        matrix = confusion_matrix(y.cpu().numpy(), s.argmax(axis=1), labels=range(len(self.names)))
        per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
        return {"confusion_matrix": matrix.tolist(),
                "class_accuracy": dict(zip(self.names, map(float, per_class), strict=True))}


@register_task
class MultilabelTask(Task):
    """The 41 truth labels of :mod:`hepfm.physics.truth`: flags by binary cross entropy, counts by squared error."""

    name = "multilabel"
    card_detail = True

    def __init__(self, names, regress: bool = False, regress_weight: float = 1.0):
        super().__init__(names, regress, regress_weight)
        if list(self.names) != list(LABEL_NAMES):
            raise ConfigurationError("multilabel tasks predict the 41 truth labels of hepfm.physics.truth")
        self._regression = torch.tensor([k == "regression" for k in LABEL_KINDS])

    def loss(self, outputs, y):
        outputs = outputs.float()
        regression = self._regression.to(outputs.device)
        per_label = torch.where(regression, (outputs - y) ** 2,
                                F.binary_cross_entropy_with_logits(outputs, y, reduction="none"))
        return per_label.mean(dim=1)

    def scores(self, outputs):
        """Sigmoid of the flags, the counts' values as they are."""
        outputs = outputs.float()
        return torch.where(self._regression.to(outputs.device), outputs, outputs.sigmoid())

    def metrics(self, outputs, y):
        s, t = self.scores(outputs).cpu().numpy(), y.cpu().numpy()
        binary = ~self._regression.numpy()
        acc = ((s[:, binary] >= 0.5) == (t[:, binary] >= 0.5)).mean()
        counts = (np.rint(s[:, ~binary]) == t[:, ~binary]).mean()
        return {"accuracy": float(acc), "count_accuracy": float(counts)}

    def report(self, outputs, y):
        """Each flag's ROC AUC (None where the test events hold one value only) and each count's exact accuracy."""
        from sklearn.metrics import roc_auc_score

        s, t = self.scores(outputs).cpu().numpy(), y.cpu().numpy()
        out: dict = {"label_auc": {}, "count_accuracy": {}}
        for i, (name, regression) in enumerate(zip(self.names, self._regression.tolist(), strict=True)):
            if regression:
                out["count_accuracy"][name] = float((np.rint(s[:, i]) == t[:, i]).mean())
            else:
                positive = t[:, i] >= 0.5
                out["label_auc"][name] = (float(roc_auc_score(positive, s[:, i]))
                                          if 0 < positive.sum() < len(positive) else None)
        return out


@register_task
class BinaryTask(Task):
    """One logit, binary cross entropy (signal = 1)."""

    name = "binary"

    @property
    def n_outputs(self) -> int:
        return 1

    def loss(self, outputs, y):
        return F.binary_cross_entropy_with_logits(outputs.float()[:, 0], y, reduction="none")

    def scores(self, outputs):
        """Sigmoid of the logit, [B]."""
        return outputs.float()[:, 0].sigmoid()

    def metrics(self, outputs, y):
        """Accuracy at 0.5 and, when both classes are present, ROC AUC."""
        from sklearn.metrics import roc_auc_score

        s, t = self.scores(outputs).cpu().numpy(), y.cpu().numpy()
        out = {"accuracy": float(((s >= 0.5) == (t == 1)).mean())}
        if 0 < t.sum() < len(t):
            out["auc"] = float(roc_auc_score(t, s))
        return out


@register_task
class MaskedTask(Task):
    """The hidden object's class (cross entropy over ``names``, the store's object classes); with ``regress``
    also its kinematics (squared error, weight ``regress_weight``). Targets y [B, 6]: class, then kinematics."""

    name = "masked"
    masked = True

    def __init__(self, names, regress: bool = False, regress_weight: float = 1.0):
        super().__init__(names, False, regress_weight)
        self.regress = regress
        self._table = masking.class_table(list(self.names))

    @property
    def n_outputs(self) -> int:
        return len(self.names) + (len(masking.KINEMATIC_TARGETS) if self.regress else 0)

    def mask(self, x: torch.Tensor, mask: torch.Tensor, u: torch.Tensor,
             scaling) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(masked x, hidden [B, M], targets [B, 6]) of a batch; ``u`` [B] uniform numbers choose the objects
        and ``scaling`` (the model's feature scaling) standardises the regression targets."""
        return masking.mask_objects(x, mask, u, self._table, scaling.mean, scaling.std)

    def summary(self) -> dict:
        return {"regress": self.regress, "regress_weight": self.regress_weight,
                "kinematic_targets": list(masking.KINEMATIC_TARGETS) if self.regress else [],
                "min_objects": masking.MIN_OBJECTS}

    def loss(self, outputs, y):
        outputs = outputs.float()
        k = len(self.names)
        target = y[:, 0].long()
        loss = F.cross_entropy(outputs[:, :k], target, ignore_index=masking.IGNORE, reduction="none")
        if self.regress:
            mse = ((outputs[:, k:] - y[:, 1:]) ** 2).mean(dim=1)
            loss = loss + self.regress_weight * torch.where(target != masking.IGNORE, mse, 0.0)
        return loss

    def scores(self, outputs):
        """Softmax over the object classes (the regressed kinematics left out)."""
        return outputs.float()[:, :len(self.names)].softmax(dim=1)

    def metrics(self, outputs, y):
        """Accuracy over the events with a hidden object, the chance level, per-class accuracies and, with
        ``regress``, the kinematics' mean squared error."""
        s = self.scores(outputs).cpu().numpy()
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


@register_task
class JetTaggingTask(MulticlassTask):
    """Cross entropy over the truth flavours of jets (a multiclass task whose examples are jets)."""

    name = "jet-tagging"
    card_detail = False


#: Target value of an object slot that has no target (padding): left out of per-object losses and metrics.
NO_TARGET = -1


@register_task
class OriginTask(Task):
    """What each object came from: a classification per object over the origin codes ``names`` (code 0 is
    "none"). Outputs [B, M, len(names)] (the backbone's per-object head), targets [B, M] with
    :data:`NO_TARGET` on padding; the event loss is the mean cross entropy over the event's objects."""

    name = "origin"
    per_object = True

    def loss(self, outputs, y):
        outputs = outputs[:, :y.shape[1]].float()  # compiled runs pad the object slots
        per_object = F.cross_entropy(outputs.transpose(1, 2), y.long(), ignore_index=NO_TARGET, reduction="none")
        counted = (y != NO_TARGET).sum(dim=1)
        return per_object.sum(dim=1) / counted.clamp_min(1)

    def scores(self, outputs):
        """Softmax over the origin codes, per object."""
        return outputs.float().softmax(dim=-1)

    def metrics(self, outputs, y):
        """Per-object accuracy over real objects and its chance level (the most common code's share)."""
        t = y.long().cpu().numpy()
        s = self.scores(outputs[:, :y.shape[1]]).cpu().numpy()
        used = t != NO_TARGET
        t, pred = t[used], s.argmax(axis=-1)[used]
        if not len(t):
            return {"accuracy": float("nan")}
        counts = np.bincount(t, minlength=len(self.names))
        return {"accuracy": float((pred == t).mean()), "chance": float(counts.max() / len(t))}


def _heavy_particles(names) -> list[str]:
    """The particles of a heavy-kinematics vector: each ``P_exists`` followed by ``P_pt, P_eta, P_phi, P_m``."""
    names = list(names)
    particles = [n[:-len("_exists")] for n in names if n.endswith("_exists")]
    expected = [f"{p}_{c}" for p in particles for c in ("exists", "pt", "eta", "phi", "m")]
    if not particles or names != expected:
        raise ConfigurationError(f"heavy-particle names must be P_exists, P_pt, P_eta, P_phi, P_m per particle, "
                                 f"got {names[:6]}{'...' if len(names) > 6 else ''}")
    return particles


#: Regressed kinematics of each heavy particle, from its (pt, eta, phi, m).
HEAVY_TARGETS = ("log_pt", "eta", "cos_phi", "sin_phi", "log_m")


def heavy_kinematics(y: torch.Tensor, n_particles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(exists flags [B, P], kinematics [B, P, 5] as :data:`HEAVY_TARGETS`) of heavy-particle targets [B, 5P]."""
    y = y.float().reshape(len(y), n_particles, 5)
    pt, eta, phi, m = y[..., 1], y[..., 2], y[..., 3], y[..., 4]
    kin = torch.stack([torch.log1p(pt.clamp_min(0)), eta, phi.cos(), phi.sin(), torch.log1p(m.clamp_min(0))], -1)
    return y[..., 0] >= 0.5, kin


@register_task
class HeavyTask(Task):
    """Truth kinematics of the event's heavy particles (tops, W, Z, H): per particle a logit for its existence
    (binary cross entropy) and its :data:`HEAVY_TARGETS` (squared error on targets standardised with the
    training split's ``mean`` and ``std``, counted only where the particle exists). Targets [B, 5P] in the
    store's order (``names``: P_exists, P_pt, P_eta, P_phi, P_m per particle)."""

    name = "heavy"

    def __init__(self, names, regress: bool = False, regress_weight: float = 1.0, mean=None, std=None):
        super().__init__(names, regress, regress_weight)
        self.particles = _heavy_particles(self.names)
        shape = (len(self.particles), len(HEAVY_TARGETS))
        self.mean = torch.zeros(shape) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        self.std = torch.ones(shape) if std is None else torch.as_tensor(std, dtype=torch.float32)

    @classmethod
    def fitted(cls, names, y: torch.Tensor) -> HeavyTask:
        """The task with its standardisation fitted on training targets ``y`` (existing particles only)."""
        task = cls(names)
        exists, kin = heavy_kinematics(y, len(task.particles))
        w = exists[..., None].float()
        n = w.sum(dim=0).clamp_min(1)
        mean = (kin * w).sum(dim=0) / n
        std = (((kin - mean) ** 2 * w).sum(dim=0) / n).sqrt()
        return cls(names, mean=mean, std=torch.where(std > 1e-6, std, torch.ones_like(std)))

    @property
    def n_outputs(self) -> int:
        return len(self.particles) * (1 + len(HEAVY_TARGETS))

    def _parts(self, outputs):
        outputs = outputs.float().reshape(len(outputs), len(self.particles), 1 + len(HEAVY_TARGETS))
        return outputs[..., 0], outputs[..., 1:]

    def loss(self, outputs, y):
        logit, pred = self._parts(outputs)
        exists, kin = heavy_kinematics(y, len(self.particles))
        target = (kin - self.mean.to(kin.device)) / self.std.to(kin.device)
        flags = F.binary_cross_entropy_with_logits(logit, exists.float(), reduction="none").mean(dim=1)
        squared = ((pred - target) ** 2).mean(dim=2) * exists
        return flags + squared.sum(dim=1) / exists.sum(dim=1).clamp_min(1)

    def scores(self, outputs):
        """Per particle: its existence probability, then its kinematics (:data:`HEAVY_TARGETS`, unstandardised)."""
        logit, pred = self._parts(outputs)
        kin = pred * self.std.to(pred.device) + self.mean.to(pred.device)
        return torch.cat([logit.sigmoid()[..., None], kin], dim=-1)

    def metrics(self, outputs, y):
        """Accuracy of the existence flags and the standardised kinematics' mean squared error where they exist."""
        logit, pred = self._parts(outputs)
        exists, kin = heavy_kinematics(y, len(self.particles))
        target = (kin - self.mean.to(kin.device)) / self.std.to(kin.device)
        out = {"accuracy": float(((logit >= 0) == exists).float().mean())}
        if exists.any():
            out["kinematics_mse"] = float(((pred - target) ** 2)[exists].mean())
        return out

    def summary(self) -> dict:
        return {"particles": self.particles, "targets": list(HEAVY_TARGETS), "mean": self.mean.tolist(),
                "std": self.std.tolist()}


class MultiTask(Task):
    """Several tasks as heads of one model: ``heads`` maps a head's name to (task, loss weight).

    Event-level heads share the backbone's output layer: its outputs [B, sum of their widths] are split in the
    order of ``heads``. Per-object heads (:attr:`Task.per_object`, e.g. origin) read the backbone's per-object
    outputs [B, M, sum of their widths]; the model then returns the pair (event outputs, object outputs). The
    targets are a dict {head: that head's targets}. The event loss is the weighted sum of the heads' per-event
    losses; scores and metrics are per head (metric names prefixed ``head_``, plus ``accuracy``: the first
    head's).

    A masked head (at most one) masks the batch: one object per event is hidden (:meth:`mask_batch`) and every
    head reads that one pass over the masked inputs, so the masked task costs no second forward pass and the
    other heads see events with one object hidden (in training and evaluation alike).
    """

    name = "multi"

    def __init__(self, heads: dict[str, tuple[Task, float]]):
        if not heads:
            raise ConfigurationError("a multi-task needs at least one head")
        for head, (task, weight) in heads.items():
            if isinstance(task, MultiTask):
                raise ConfigurationError(f"head {head!r}: a multi-task cannot be one head of another")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
                raise ConfigurationError(f"head {head!r}: the loss weight must be a number >= 0, got {weight!r}")
        if sum(task.masked for task, _ in heads.values()) > 1:
            raise ConfigurationError("a multi-task takes at most one masked head")
        super().__init__([f"{head}:{n}" for head, (task, _) in heads.items() for n in task.names])
        self.heads = dict(heads)
        self.masked = any(task.masked for task, _ in self.heads.values())

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.summary() == self.summary()

    __hash__ = None

    def _event_heads(self) -> dict[str, Task]:
        return {h: t for h, (t, _) in self.heads.items() if not t.per_object}

    def _object_heads(self) -> dict[str, Task]:
        return {h: t for h, (t, _) in self.heads.items() if t.per_object}

    @property
    def n_outputs(self) -> int:
        """Width of the backbone's (event-level) output layer."""
        return sum(task.n_outputs for task in self._event_heads().values())

    @property
    def n_object_outputs(self) -> int:
        """Width of the backbone's per-object output layer (0: no per-object head)."""
        return sum(task.n_outputs for task in self._object_heads().values())

    def split(self, outputs) -> dict[str, torch.Tensor]:
        """Each head's slice of ``outputs`` (a tensor, or the pair (event, object outputs))."""
        events, objects = outputs if isinstance(outputs, tuple) else (outputs, None)
        event_heads, object_heads = self._event_heads(), self._object_heads()
        parts = dict(zip(event_heads, torch.split(events, [t.n_outputs for t in event_heads.values()], dim=1),
                         strict=True))
        if object_heads:
            if objects is None:
                raise ConfigurationError(f"head(s) {', '.join(object_heads)} need the model's per-object outputs")
            parts.update(zip(object_heads, torch.split(objects, [t.n_outputs for t in object_heads.values()],
                                                       dim=-1), strict=True))
        return parts

    def loss(self, outputs, y: dict):
        parts = self.split(outputs)
        return sum(weight * task.loss(parts[head], y[head]) for head, (task, weight) in self.heads.items())

    def scores(self, outputs) -> dict[str, torch.Tensor]:
        """Each head's scores."""
        parts = self.split(outputs)
        return {head: task.scores(parts[head]) for head, (task, _) in self.heads.items()}

    def metrics(self, outputs, y: dict):
        parts = self.split(outputs)
        out: dict[str, float] = {}
        for head, (task, _) in self.heads.items():
            for key, value in task.metrics(parts[head], y[head]).items():
                out[f"{head}_{key}"] = value
        out["accuracy"] = out[f"{next(iter(self.heads))}_accuracy"]
        return out

    def mask_batch(self, x, mask, u, scaling, y: dict):
        """The masked head's masking of the batch; its targets join the other heads' (see the class docstring)."""
        head, task = next((h, t) for h, (t, _) in self.heads.items() if t.masked)
        x, hidden, targets = task.mask(x, mask, u, scaling)
        # Data with no other head's targets batch as the bare process index, which no head reads.
        return x, hidden, {**(y if isinstance(y, dict) else {}), head: targets}

    def summary(self) -> dict:
        return {"heads": {head: {"task": task.name, "names": list(task.names), "weight": weight,
                                 "options": task.summary()} for head, (task, weight) in self.heads.items()}}

    def event_score_columns(self) -> list[str]:
        """Names of the columns of :meth:`score_table`: ``head_name`` per event-level head's score (the heavy
        head: each particle's existence probability, then its kinematics). A masked head is left out: it scores
        a hidden object, and a scored event hides none."""
        columns = []
        for head, task in self._event_heads().items():
            if task.masked:
                continue
            if isinstance(task, HeavyTask):
                columns += [f"{head}_{p}_{q}" for p in task.particles for q in ("exists", *HEAVY_TARGETS)]
            else:
                columns += [f"{head}_{n}" for n in (task.names if task.n_outputs > 1 else task.names[-1:])]
        return columns

    def score_table(self, outputs) -> torch.Tensor:
        """The event-level heads' scores side by side [B, len(event_score_columns())]."""
        events = outputs[0] if isinstance(outputs, tuple) else outputs
        parts = dict(zip(self._event_heads(), torch.split(events, [t.n_outputs for t in self._event_heads().values()],
                                                           dim=1), strict=True))
        scores = [task.scores(parts[head]).reshape(len(events), -1) for head, task in self._event_heads().items()
                  if not task.masked]
        return torch.cat(scores, dim=1)


def saved_task(task: str, names, options: dict | None = None) -> Task:
    """The task of a saved model's outputs, from its config.json (``task``, ``names``, ``task_options``). A model
    pretrained on several heads keeps only its event-level heads (per-object outputs are not saved), so it is
    the multi-task of those."""
    if task != MultiTask.name:
        return Task(task, list(names))
    specs = (options or {}).get("heads") or {}
    # The record's names ("head:name", in the model's head order) give the order of the output columns: the
    # mapping of head settings may have been written with its keys sorted.
    order = list(dict.fromkeys(str(n).split(":", 1)[0] for n in names))
    heads = {}
    for head in sorted(specs, key=lambda h: order.index(h) if h in order else len(order)):
        spec = specs[head]
        cls = _REGISTRY.get(spec.get("task"))
        if cls is None:
            raise ConfigurationError(f"head {head!r}: unknown task {spec.get('task')!r}")
        if cls.per_object:
            continue
        extra = spec.get("options") or {}
        if cls is HeavyTask:
            built = HeavyTask(spec["names"], mean=extra.get("mean"), std=extra.get("std"))
        elif cls is MaskedTask:
            built = MaskedTask(spec["names"], regress=bool(extra.get("regress", False)),
                               regress_weight=float(extra.get("regress_weight", 1.0)))
        else:
            built = Task(spec["task"], spec["names"])
        heads[head] = (built, float(spec.get("weight", 1.0)))
    if not heads:
        raise ConfigurationError("a multi-task model whose record names no event-level head")
    return MultiTask(heads)


#: Every task name ``Task(name, names)`` takes.
TASKS = tuple(_REGISTRY)
