"""One training run's lifecycle, shared by every workflow: prepare → fit → finish.

* prepare: :class:`Run` checks the options and the output folder (a folder holding a finished model is
  refused unless ``overwrite``), resolves the model to start from (:func:`resolve_parent`);
  :meth:`Run.guard` locks the folder and, on any failure, removes what the run added;
  :meth:`Run.start` clears a previous run's outputs (``overwrite``) and sets up the device and processes;
  :meth:`Run.seed` seeds the model's initialisation; :func:`initial_model` builds the model (fresh, with its
  feature scaling fitted on the training data, or loaded from the model it starts from);
* fit: :meth:`Run.fit` trains it (:func:`hepfm.train.trainer.fit`, resumable from the folder's checkpoint),
  after, for LP-FT, :meth:`Run.probe` has trained its new head alone on the frozen backbone;
* finish: :meth:`Run.finish` refuses non-finite weights, warns about a model never better than untrained,
  evaluates the test split and saves the model with its :class:`~hepfm.train.record.RunRecord`.

A run that fails on its input leaves no output behind: a folder it created is removed, and a folder that
existed keeps what it held (only entries this run added are removed). A run that fails after writing its
own checkpoint keeps it and its data plan, so rerunning the command resumes (unless the cause is a damaged
store, a bad checkpoint or a model not worth keeping).
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hepfm.data.integrity import DamagedStoreError
from hepfm.data.streaming import StreamingEvents
from hepfm.errors import HepfmError
from hepfm.io.atomic import atomic_write, remove_stale_temporaries
from hepfm.io.locking import LOCK, exclusive_lock
from hepfm.io.rundir import PROBE_WEIGHTS, RunDir
from hepfm.models.base import Backbone, count_parameters
from hepfm.models.batched import predict
from hepfm.models.pretrained import resolve as resolve_model
from hepfm.models.registry import create_model
from hepfm.models.saving import load_model, read_config, save_model
from hepfm.train import distributed
from hepfm.train.checkpoint import BadCheckpointError, remove_checkpoint
from hepfm.train.record import RECORD_VERSION, RunRecord
from hepfm.train.tasks import Task
from hepfm.train.trainer import TrainConfig, check_learning_rate, check_max_events, evaluate, fit


class NotImprovedWarning(UserWarning):
    """A finished run whose best validation loss is no better than the untrained model's."""


class UntrainedModelError(HepfmError):
    """Training gave no usable model (non-finite weights, or never better than the untrained model)."""


def check_run_options(lr=None, backbone_lr=None, max_events=None, device="auto") -> None:
    """Refuse a bad learning rate, event cap or device before anything is written."""
    if lr is not None:
        check_learning_rate(lr, "lr")
    if backbone_lr is not None:
        check_learning_rate(backbone_lr, "backbone_lr", allow_zero=True)
    check_max_events(max_events)
    distributed.check_device(device)


def resolved_path(path) -> str | None:
    """``path`` made absolute (None stays None): how a run records the paths it read."""
    return None if path is None else str(Path(path).resolve())


def resolve_parent(init_from) -> tuple[str | Path | None, Path | None, RunRecord | None]:
    """(the name as given, its folder, its record) of the model a run starts from; all None without one.
    An unreadable model fails here, before anything is written."""
    if init_from is None:
        return None, None, None
    folder = resolve_model(init_from)
    return init_from, folder, RunRecord.from_json(read_config(folder), str(folder))


def initial_model(model: str, n_outputs: int, model_config: dict | None, train, init_from: Path | None = None,
                  transfer: bool = False) -> Backbone:
    """The model a run starts from: loaded from ``init_from`` when ``transfer``, else ``model`` built fresh
    (:func:`~hepfm.models.registry.create_model`) with its feature scaling fitted on ``train`` (streamed data:
    on a bounded, seeded sample)."""
    if transfer:
        return load_model(init_from)
    net = create_model(model, n_outputs, **(model_config or {}))
    net.fit_scaling(train.sample() if isinstance(train, StreamingEvents) else train)
    return net


class Run:
    """One run into one folder (see the module docstring): built before anything is written, it checks the
    options and the folder; the workflow then calls :meth:`guard`, :meth:`start`, :meth:`seed`, :meth:`fit`
    and :meth:`finish` in turn.

    """

    def __init__(self, out: str | Path, cfg: TrainConfig, device: str = "auto", overwrite: bool = False):
        self.dir = RunDir(out)
        self.out, self.cfg = self.dir.path, cfg
        self.device, self.overwrite = device, overwrite
        self.ctx: distributed.DistContext | None = None
        self.dir.check_free(overwrite)

    @contextmanager
    def guard(self):
        """Create and lock the folder; on any failure (an input error, a full disk, an interrupt) remove what
        this run added (the folder itself if it made it), keeping its own checkpoint when it may be resumed.
        Under torchrun only rank 0 locks and cleans (the others share its folder)."""
        out = self.out
        main = distributed.rank() == 0
        existed = out.exists()
        out.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(out, "run folder") if main else nullcontext():
            before = {p.name for p in out.iterdir()}
            had_checkpoint = self.dir.checkpoint.exists()
            if main:
                for name in RunDir.RUN_FILES:  # left by a run killed while writing (we hold the lock: nobody else is)
                    remove_stale_temporaries(out / name)
            try:
                yield self
            except BaseException as exc:
                if main:
                    resumable = self.dir.checkpoint.exists() or self.dir.probe.exists()
                    keep = resumable and not isinstance(
                        exc, (DamagedStoreError, UntrainedModelError, BadCheckpointError))
                    self._remove_added(existed, before, had_checkpoint, keep)
                raise

    def _remove_added(self, existed: bool, before: set[str], had_checkpoint: bool, keep: bool) -> None:
        out = self.out
        if not existed and not keep:
            shutil.rmtree(out, ignore_errors=True)
            return
        checkpoint = self.dir.checkpoint.name
        for p in out.iterdir():
            if p.name.startswith(LOCK) or (keep and p.name in RunDir.RESUME_FILES):
                continue
            if p.name not in before or (p.name == checkpoint and not had_checkpoint):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def start(self) -> distributed.DistContext:
        """Clear a previous run's outputs (with ``overwrite``) and set up the device and processes."""
        if self.overwrite:
            self.dir.clear()
        self.ctx = distributed.setup(self.device)
        return self.ctx

    @property
    def resuming(self) -> bool:
        """Whether the folder holds a checkpoint to resume from."""
        return self.dir.checkpoint.exists()

    def seed(self) -> None:
        """Seed the global generators the model's initialisation draws from (``cfg.seed``)."""
        torch.manual_seed(self.cfg.seed)

    def fit(self, net: Backbone, task: Task, splits: dict, groups: list[dict], settings: dict):
        """Train ``net`` on the train split, validating on the val split (:func:`hepfm.train.trainer.fit`).

        ``settings`` are the run's own settings (data, model, learning rates...): a checkpoint made with other
        settings is refused instead of resumed."""
        return fit(net, task, splits["train"], splits["val"], groups, self.cfg, self.out, self.ctx,
                   settings=settings)

    def probe(self, net: Backbone, task: Task, splits: dict, groups: list[dict], settings: dict) -> None:
        """LP-FT's first phase: train the new parts of ``net`` (the ``groups`` not marked ``pretrained``: the
        output layer; for the hierarchical model, its event part) on its frozen pretrained part, with the run's
        settings, into the folder's probe/; then leave ``net`` with what the probe trained and its parameters
        trainable as before. A finished probe is not trained again (resuming an interrupted run reuses it)."""
        folder = self.dir.probe
        probe_file = folder / PROBE_WEIGHTS
        new = [g for g in groups if not g.get("pretrained")]
        trained = {id(p) for g in new for p in g["params"]}
        names = [k for k, p in net.named_parameters() if id(p) in trained]
        if not probe_file.exists():
            wanted = {id(p): p.requires_grad for p in net.parameters()}
            for p in net.parameters():
                p.requires_grad_(id(p) in trained)
            cfg = dataclasses.replace(self.cfg, linear_probe=False, layer_decay=1.0)
            fit(net, task, splits["train"], splits["val"], [dict(g) for g in new], cfg, folder, self.ctx,
                settings={**settings, "phase": "linear probe"})
            for p in net.parameters():
                p.requires_grad_(wanted[id(p)])
            if self.ctx.is_main:
                state = net.state_dict()
                kept = {k: state[k].detach().cpu().contiguous() for k in names}
                atomic_write(probe_file, lambda tmp: save_file(kept, tmp))
                remove_checkpoint(folder)
            self.ctx.barrier()
        device = next(net.parameters()).device
        net.load_state_dict({k: v.to(device) for k, v in load_file(str(probe_file)).items()}, strict=False)

    def finish(self, net: Backbone, task: Task, result, splits: dict, record: RunRecord) -> dict:
        """Check the trained model, evaluate it on the test split and save it with ``record`` (completed with
        the task, its names and the training summary); returns the summary."""
        cfg, ctx = self.cfg, self.ctx
        check_trained(net, result, self.out)
        test, detail = {}, {}
        if len(splits["test"]):
            data = splits["test"].to(ctx.device)
            test = evaluate(net, task, data, cfg.eval_batch_size)
            if task.card_detail:  # the model card's confusion matrix / per-label AUCs
                detail = task.report(predict(net, data, cfg.eval_batch_size), data.y)
        summary = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
                   "stopped_early": result.stopped_early, "train_time_s": round(result.train_time_s, 3),
                   "n_train": len(splits["train"]), "n_val": len(splits["val"]), "n_test": len(splits["test"]),
                   "test": test, "parameters": count_parameters(net)}
        if detail:
            summary["test_detail"] = detail
        if ctx.is_main:
            record.task, record.names = task.name, list(task.names)
            record.training = {**summary, "config": asdict(cfg), "world_size": ctx.world}
            record.record_version = RECORD_VERSION
            net.drop_object_head()  # a per-object head trains the backbone; the saved model is the backbone
            save_model(net, self.out, record.metadata())
            remove_checkpoint(self.out)
        ctx.barrier()
        return summary


def check_trained(model, result, out: Path) -> None:
    """Refuse to save a model with non-finite weights; warn about one never better than before training."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise UntrainedModelError(f"{out}: training gave non-finite weights ({bad[0]}); nothing was saved (try a "
                                  "lower learning rate)")
    initial = result.initial_val_loss
    if result.best_epoch < 1 or (initial is not None and not result.best_val_loss < initial):
        # A warning, not a refusal: a study's tuning grid and its collapse check must see such runs to rank them.
        before = "" if initial is None else f" ({initial:.6g}; best after training {result.best_val_loss:.6g})"
        warnings.warn(f"{out}: training never improved on the untrained model's validation loss{before}; try "
                      "another learning rate or more epochs", NotImprovedWarning, stacklevel=3)
