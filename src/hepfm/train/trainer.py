"""The one training loop, for every task and strategy.

Training data are any source with ``len()``, ``to(device)`` and ``epoch_batches(epoch, seed, batch_size,
rank, world, start)``: in-memory tensors indexed directly (:class:`~hepfm.data.datasets.EventData`, on the
GPU when they fit) or shards streamed from disk (:class:`~hepfm.data.streaming.StreamingEvents`). Batch
order is a function of (seed, epoch), so the data position is just (epoch, batch) and a resumed run
continues with exactly the batches it would have seen. Under torchrun every process takes an
interleaved slice of each global batch and the loss is normalised by the global batch size, so
DistributedDataParallel's gradient average equals the single-process gradient of that batch.

Augmentation draws its random numbers for the whole global batch from one generator, identical on
every process, and each process takes its slice: 2 processes augment exactly like 1.

The masked-object task hides one object per event of each batch (:mod:`hepfm.data.masking`) with uniform
numbers drawn, for the whole global batch, from a generator seeded by (seed, epoch, batch): masks do not
depend on the number of processes, and a resumed run masks exactly as an uninterrupted one. Evaluation
events are masked with fixed per-event numbers (:meth:`~hepfm.train.tasks.Task.eval_uniforms`).

Every ``checkpoint_every`` batches and at the end of every epoch the model, optimiser, scheduler, RNG
state, data position, early-stopping state, history and the run's full settings are saved atomically;
resuming with any different setting is refused, naming it. Validation loss (float32, like the test)
decides early stopping (``patience`` epochs without improvement); the best weights are restored at the
end. Modules whose parameters are all frozen stay in eval mode while training (no dropout). With ``ema_decay``
a moving average of the weights (:mod:`hepfm.train.ema`) is what is validated, restored and returned.

Large batches: ``lr_scaling="linear"`` multiplies every group's learning rate by batch_size /
``lr_reference_batch`` (the rates given are those of the reference batch); ``warmup_steps`` ramps each
optimiser step's rate linearly from 1/warmup_steps of the scheduled rate up to it over the first steps
(step s of the run trains at (s + 1) / warmup_steps of it). The ramp multiplies the rate for the step only,
so the per-epoch schedule is unchanged, and the step count is (epoch, batch): resume equals uninterrupted.

Speed: what a frozen part computes is computed once per event (``cache_frozen``; no augmentation, no
masking, in-memory data, one process): a run that trains only the output head of a frozen backbone trains it
on the backbone's latents of its training and validation events, and a hierarchical model whose jet backbone
is frozen reads each jet's embedding from its row. The same steps on the same numbers, without the frozen
part's pass per step.
``compile`` switches on GraphNet's ``bucket_shapes`` (packed sizes padded to a few buckets, inputs
to a multiple of 8 objects; outputs unchanged) and wraps it in ``torch.compile(dynamic=False)``, so a
compiled GraphNet recompiles once per bucket, not per batch (other backbones: ``torch.compile``'s
defaults). In-memory training data are moved to the device once (``train.to(device)``): on a GPU every
batch is then indexed there. Streamed sources are read ahead by a background thread
(:class:`~hepfm.data.prefetch.ReadAhead`, ``read_ahead`` batches; 0 reads synchronously) that also does
the pinned-memory copy and non-blocking transfer; the batches are identical either way.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from hepfm.config import (  # noqa: F401  (TrainConfig and its checks are imported from here by callers)
    BATCH_SIZE,
    LR_SCALINGS,
    MAX_LR,
    OPTIMIZERS,
    SCHEDULES,
    SGD_COSINE,
    TrainConfig,
    check_count,
    check_learning_rate,
    check_max_events,
    check_number,
)
from hepfm.data.augment import augment
from hepfm.data.datasets import EventData
from hepfm.data.prefetch import ReadAhead
from hepfm.errors import HepfmError
from hepfm.io.atomic import atomic_write
from hepfm.io.rundir import HISTORY, TENSORBOARD
from hepfm.models.base import Backbone
from hepfm.models.batched import autocast as _autocast
from hepfm.models.batched import in_batches
from hepfm.progress import EventProgress
from hepfm.train.checkpoint import load_checkpoint, save_checkpoint
from hepfm.train.distributed import DistContext
from hepfm.train.ema import WeightAverage
from hepfm.train.tasks import Task


class SimulatedKill(Exception):
    """Raised by ``stop_after_batches`` to emulate a killed run in tests."""


@dataclass
class FitResult:
    """What a finished run reports: per-epoch history, best epoch and timing."""

    history: list[dict]
    best_epoch: int
    best_val_loss: float
    train_time_s: float
    stopped_early: bool
    initial_val_loss: float | None = None  # before any training step (None for runs resumed from older hepfm)


def _optimizer(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = [{k: v for k, v in g.items() if k != "name"} for g in groups]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.optimizer == "sgd-cosine":
        # Each group anneals from its own rate to 1/100 of it (1e-2 -> 1e-4 at the seed's rate).
        floor = SGD_COSINE["min_lr"] / SGD_COSINE["lr"]
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(e, cfg.epochs) / cfg.epochs)))
    if cfg.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


# Settings that do not change what a run computes, so a resumed run may change them.
_RESUMABLE = ("progress", "tensorboard", "stop_after_batches", "checkpoint_every", "compile", "eval_batch_size",
              "read_ahead", "cache_frozen")
# Settings added later: left out of the recorded settings at their default, so older checkpoints still resume.
_NEWER = {"warmup_steps": 0, "lr_scaling": "none", "lr_reference_batch": BATCH_SIZE, "ema_decay": 0.0,
          "layer_decay": 1.0, "linear_probe": False, "max_train_time_s": 0.0}


def run_settings(cfg: TrainConfig, settings: dict | None = None) -> dict:
    """Everything a checkpoint must agree with to be resumed: ``cfg`` and the caller's ``settings``."""
    out = {k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE}
    if out["lr_scaling"] == "none":
        out.pop("lr_reference_batch")  # it changes nothing then
    out = {k: v for k, v in out.items() if k not in _NEWER or v != _NEWER[k]}
    out["augment"] = list(out["augment"])
    return {**out, **(settings or {})}


def _differences(old: dict, new: dict) -> list[str]:
    return [f"{k} {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _step(opt: torch.optim.Optimizer, factor: float) -> None:
    """One optimiser step at ``factor`` times each group's scheduled rate (warm-up), the rates left as they were."""
    if factor == 1.0:
        opt.step()
        return
    rates = [g["lr"] for g in opt.param_groups]
    for g, r in zip(opt.param_groups, rates, strict=True):
        g["lr"] = r * factor
    try:
        opt.step()
    finally:
        for g, r in zip(opt.param_groups, rates, strict=True):
            g["lr"] = r


def train_mode(model: nn.Module) -> None:
    """Training mode, except modules whose parameters are all frozen (their dropout stays off)."""
    model.train()
    for m in model.modules():
        params = list(m.parameters())
        if params and not any(p.requires_grad for p in params):
            m.eval()


def lr_scale(cfg: TrainConfig) -> float:
    """The factor :attr:`TrainConfig.lr_scaling` applies to every group's learning rate."""
    return cfg.batch_size / cfg.lr_reference_batch if cfg.lr_scaling == "linear" else 1.0


def warmup_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of the scheduled learning rate at optimiser step ``step`` (0-based) of the run."""
    return min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0


def pad_width(x: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None = None, multiple: int = 8):
    """(x, mask, hidden) padded with empty object slots to a multiple of ``multiple`` objects: a few widths, not
    one per largest multiplicity (compiled models are specialised to their input shapes)."""
    pad = -x.shape[1] % multiple
    if not pad:
        return x, mask, hidden
    return (nn.functional.pad(x, (0, 0, 0, pad)), nn.functional.pad(mask, (0, pad)),
            None if hidden is None else nn.functional.pad(hidden, (0, pad)))


def _masked_inputs(task: Task, model: nn.Module, data: EventData):
    """Batch inputs of a masked task's evaluation: every event masked with its fixed numbers."""
    u = task.eval_uniforms(len(data)).to(data.x.device)

    def inputs(idx, x, mask, y):
        x, hidden, y = task.mask_batch(x, mask, u[idx], model.scaling, y)
        return (x, mask, hidden), y

    return inputs


def evaluate(model: nn.Module, task: Task, data: EventData, batch_size: int = 8192,
             bf16: bool = False) -> dict[str, float]:
    """Mean loss and the task's metrics on ``data`` (masked task: every event masked, with fixed masks)."""
    net = getattr(model, "module", model)
    inputs = _masked_inputs(task, net, data) if task.masked else None
    out, y = in_batches(net, model, data, batch_size, bf16, inputs)
    return {"loss": float(task.loss(out, y).mean()), **task.metrics(out, y)}


class _Logger:
    """history.csv (rewritten atomically each epoch) and, when available, TensorBoard."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool):
        self.run_dir, self.enabled = run_dir, enabled
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: CSV only
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(run_dir / TENSORBOARD))

    def log(self, history: list[dict]) -> None:
        if not self.enabled:
            return
        keys = list(dict.fromkeys(k for row in history for k in row))

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(history)

        atomic_write(self.run_dir / HISTORY, write)
        if self.writer is not None:
            row = history[-1]
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, row["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def batch_uniforms(seed: int, epoch: int, batch: int, n: int, device) -> torch.Tensor:
    """``n`` uniform numbers for batch ``batch`` of ``epoch``, from a generator seeded by (seed, epoch, batch)."""
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + batch + 17)
    return torch.rand(n, generator=gen, device=device, dtype=torch.float64)


class _HeadOnLatents(nn.Module):
    """A backbone's output head applied to its precomputed latents, stored as one 64-d 'object' per event."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.head(x[:, 0])


def _only_head_trains(model: nn.Module) -> bool:
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module) or not isinstance(model, Backbone):
        return False
    head_ids = {id(p) for p in head.parameters()}
    return all(p.requires_grad == (id(p) in head_ids) for p in model.parameters())


def _once_per_event(model: nn.Module, rows, data: EventData, batch_size: int, bf16: bool,
                    one_row: bool) -> EventData:
    """``data`` with each event's rows replaced by ``rows(x, mask)`` (eval mode, no gradients), in its dtype:
    [B, M', F] object rows padded back to the data's object slots, or with ``one_row`` [B, 1, F] per event."""
    was_training = model.training
    model.eval()
    parts = []
    try:
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                idx = torch.arange(start, min(start + batch_size, len(data)), device=data.x.device)
                x, mask, _ = data.batch(idx)
                with _autocast(data.x.device, bf16):
                    out = rows(x, mask).to(data.x.dtype)
                width = 1 if one_row else data.x.shape[1]
                parts.append(torch.nn.functional.pad(out, (0, 0, 0, width - out.shape[1])))
    finally:
        model.train(was_training)
    x = torch.cat(parts)
    if one_row:
        return EventData(x, torch.ones_like(data.n_objects), data.y, data.seen)
    return EventData(x, data.n_objects, data.y, data.seen, data.targets, data.object_targets)


def _latent_rows(model: nn.Module):
    """The latent of each event as its one 64-d row."""
    return lambda x, mask: model.encode(x, mask)[:, None, :]


def _cache_frozen(model: Backbone, task: Task, train, val, cfg: TrainConfig, ctx: DistContext, bf16: bool):
    """(net, train, val) with what the model's frozen part computes done once per event, or None where nothing
    is cached (see the module docstring)."""
    if (not cfg.cache_frozen or cfg.augment or task.masked or cfg.compile or ctx.distributed
            or not isinstance(train, EventData)):
        return None
    if _only_head_trains(model):
        net, rows, one_row = _HeadOnLatents(model), _latent_rows(model), True
    elif (rows := model.frozen_rows()) is not None:  # the model reads these rows while embedded_inputs is set
        net, one_row = model, False
    else:
        return None
    return net, _once_per_event(model, rows, train, cfg.eval_batch_size, bf16, one_row), \
        _once_per_event(model, rows, val, cfg.eval_batch_size, False, one_row)


def _check_splits(train, val) -> None:
    if len(train) == 0:
        raise HepfmError("the training split is empty")
    if len(val) == 0:
        raise HepfmError("the validation split is empty")


def _fresh_state() -> dict:
    """The position and early-stopping state of a run that has not trained yet."""
    return {"epoch": 0, "batch": 0, "best_loss": math.inf, "best_epoch": -1, "best_state": None, "bad_epochs": 0,
            "history": [], "elapsed": 0.0, "loss_sum": 0.0, "loss_events": 0, "done": False, "initial_loss": None}


class _Fit:
    """One call of :func:`fit`, in named steps: :meth:`resume`, :meth:`wrap`, then per epoch
    :meth:`train_epoch` and :meth:`end_epoch`, each of which may :meth:`checkpoint`."""

    def __init__(self, model: Backbone, task: Task, train, val, groups: list[dict], cfg: TrainConfig,
                 run_dir: Path, ctx: DistContext, settings: dict | None):
        self.model, self.task, self.cfg, self.run_dir, self.ctx = model, task, cfg, run_dir, ctx
        self.device = device = ctx.device
        self.bf16 = cfg.bf16 if cfg.bf16 is not None else device.type == "cuda"
        model.to(device)
        self.train, self.val = train.to(device), val.to(device)  # in-memory data: on the device once
        scale = lr_scale(cfg)
        self.opt = _optimizer([{**g, "lr": g["lr"] * scale} for g in groups], cfg)
        self.sched = _scheduler(self.opt, cfg)
        self.aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 7919)
        self.ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
        # What is validated and kept: the moving average when there is one.
        self.kept_weights = self.ema.in_model if self.ema is not None else contextlib.nullcontext
        self.state = _fresh_state()
        self.current = {**run_settings(cfg, settings), "n_train": len(self.train),
                        "group_lrs": {g.get("name", str(i)): g["lr"] for i, g in enumerate(groups)}}
        self.net = self.eval_net = model
        self.bucketed = self.embedded = False
        self.batches_run = 0
        self.stopped_early = False

    def resume(self) -> None:
        """Load the folder's checkpoint, if any, after checking it was made with the same settings."""
        run_dir, saved = self.run_dir, load_checkpoint(self.run_dir)
        if saved is None:
            return
        if "settings" not in saved:
            raise HepfmError(f"{run_dir}: its checkpoint does not record its settings (an older hepfm), so it "
                             "cannot be checked; start fresh by overwriting the run")
        diff = _differences(saved["settings"], self.current)
        if diff:
            raise HepfmError(f"{run_dir}: its checkpoint comes from a run with other settings ({'; '.join(diff)}); "
                             "rerun with the same settings to resume, or overwrite the run (or choose a new output "
                             "folder) to start fresh")
        self.model.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        self.sched.load_state_dict(saved["scheduler"])
        self.aug_gen.set_state(saved["aug_rng"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        if "torch_rng" in saved:  # dropout draws from the global generators: resume them where they were
            torch.set_rng_state(saved["torch_rng"])
            if saved.get("cuda_rng") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(saved["cuda_rng"], self.device)
        self.state = {"initial_loss": None, **saved["state"]}

    def wrap(self) -> None:
        """The module trained: DistributedDataParallel under torchrun, compiled, or the head on cached latents."""
        model, cfg, ctx = self.model, self.cfg, self.ctx
        net = model
        if ctx.distributed:
            device = self.device
            net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                      else None)
        self.bucketed = cfg.compile and model.compile_bucketed
        if self.bucketed:
            model.bucket_shapes = True  # a few padded shapes, not one per batch
        if cfg.compile:  # bucketed: a few static shapes; otherwise torch's default (dynamic after a recompile)
            net = torch.compile(net, dynamic=False if self.bucketed else None)
        self.net = net
        # A frozen part gives every event the same output each epoch (its modules stay in eval mode).
        cached = None if self.state["done"] else _cache_frozen(model, self.task, self.train, self.val, cfg, ctx,
                                                               self.bf16)
        self.embedded = cached is not None and cached[0] is model  # the model reads its frozen_rows()
        if cached is not None:
            self.net, self.train, self.val = cached  # the original rows are not kept: no second copy on the device
            self.eval_net = self.net

    def checkpoint(self) -> None:
        """Save everything a resumed run needs (rank 0), then wait for every process."""
        if self.ctx.is_main:
            device, ema = self.device, self.ema
            save_checkpoint(self.run_dir, {
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "aug_rng": self.aug_gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "state": self.state, "config": asdict(self.cfg), "settings": self.current,
                **({"ema": ema.state_dict()} if ema is not None else {})})
        self.ctx.barrier()

    def batch_loss(self, epoch: int, b: int, global_size: int, x, mask, y) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-event losses, the loss to back-propagate) of batch ``b``: augmented, masked, padded, forward."""
        cfg, ctx, task, device = self.cfg, self.ctx, self.task, self.device
        if cfg.augment:
            x = augment(x, mask, cfg.augment, self.aug_gen, rank=ctx.rank, world=ctx.world, global_size=global_size)
        hidden = None
        if task.masked:
            u = batch_uniforms(cfg.seed, epoch, b, global_size, device)[ctx.rank::ctx.world]
            x, hidden, y = task.mask_batch(x, mask, u, self.model.scaling, y)
        if self.bucketed:  # after augmentation and masking, which draw per object slot
            x, mask, hidden = pad_width(x, mask, hidden)
        with _autocast(device, self.bf16):
            out = self.net(x, mask) if hidden is None else self.net(x, mask, hidden)
        losses = task.loss(out, y)
        loss = losses.sum() * (ctx.world / global_size)
        if not torch.isfinite(loss):
            raise HepfmError(f"non-finite training loss at epoch {epoch + 1}, batch {b + 1}; the last "
                             f"checkpoint in {self.run_dir} is left as it was (try a lower learning rate)")
        return losses, loss

    def train_epoch(self, n_batches: int) -> tuple[float, float]:
        """Train the rest of the current epoch; (its start time, the events it started at)."""
        cfg, ctx, state, bs = self.cfg, self.ctx, self.state, self.cfg.batch_size
        epoch, n_train = state["epoch"], len(self.train)
        t0 = epoch_start = time.perf_counter()
        events_start = state["batch"] * bs
        train_mode(self.model)
        with (EventProgress(n_train, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and ctx.is_main) as bar,
              contextlib.ExitStack() as stack):
            bar.advance(min(events_start, n_train))
            batches = self.train.epoch_batches(epoch, cfg.seed, bs, ctx.rank, ctx.world, state["batch"])
            if cfg.read_ahead and not isinstance(self.train, EventData):
                batches = stack.enter_context(contextlib.closing(ReadAhead(batches, cfg.read_ahead)))
            for b, (global_size, x, mask, y) in enumerate(batches, start=state["batch"]):
                losses, loss = self.batch_loss(epoch, b, global_size, x, mask, y)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                _step(self.opt, warmup_factor(cfg, epoch * n_batches + b))
                if self.ema is not None:
                    self.ema.update()
                state["loss_sum"] += float(losses.detach().sum())
                state["loss_events"] += len(losses)
                state["batch"] = b + 1
                bar.advance(global_size)
                self.batches_run += 1
                mid_epoch = state["batch"] < n_batches
                if cfg.checkpoint_every and state["batch"] % cfg.checkpoint_every == 0 and mid_epoch:
                    state["elapsed"] += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self.checkpoint()
                if cfg.stop_after_batches is not None and self.batches_run >= cfg.stop_after_batches:
                    raise SimulatedKill(f"stopped after {self.batches_run} batches")
        self.t0 = t0
        return epoch_start, events_start

    def end_epoch(self, epoch_start: float, events_start: int) -> None:
        """Step the schedule, validate, record the epoch's row, keep the best weights, decide early stopping."""
        cfg, state = self.cfg, self.state
        epoch = state["epoch"]
        epoch_lr = self.opt.param_groups[0]["lr"]  # the rate this epoch trained with, before the schedule steps
        self.sched.step()
        now = time.perf_counter()
        state["elapsed"] += now - self.t0
        rate = (len(self.train) - events_start) / max(now - epoch_start, 1e-9)
        with self.kept_weights():
            metrics = evaluate(self.eval_net, self.task, self.val, cfg.eval_batch_size)  # float32, as the test
        loss_sum, loss_events = self.ctx.all_sum([state["loss_sum"], float(state["loss_events"])])
        row = {"epoch": epoch + 1, "wall_time_s": round(state["elapsed"], 4),
               "train_loss": loss_sum / max(loss_events, 1), "val_loss": metrics.pop("loss"),
               **{f"val_{k}": v for k, v in metrics.items()},
               "lr": epoch_lr, "events_per_s": round(rate, 1)}
        improved = row["val_loss"] < state["best_loss"] - cfg.min_delta
        row["best"] = int(improved)  # the last flagged epoch is the one whose weights are kept
        state["history"].append(row)
        if improved:
            with self.kept_weights():
                state.update(best_loss=row["val_loss"], best_epoch=epoch + 1, bad_epochs=0,
                             best_state=copy.deepcopy({k: v.cpu() for k, v in self.model.state_dict().items()}))
        else:
            state["bad_epochs"] += 1
        state.update(epoch=epoch + 1, batch=0, loss_sum=0.0, loss_events=0)
        if state["bad_epochs"] >= cfg.patience:
            state["done"] = self.stopped_early = True
        # Every process stops together: the slowest one's clock decides (one sum, no rank waits for another).
        if cfg.max_train_time_s and self.ctx.all_sum([float(state["elapsed"] >= cfg.max_train_time_s)])[0] > 0:
            state["done"] = True

    def run(self) -> FitResult:
        """Every epoch left, then the best weights restored."""
        cfg, state, model = self.cfg, self.state, self.model
        logger = _Logger(self.run_dir, self.ctx.is_main, cfg.tensorboard)
        n_batches = math.ceil(len(self.train) / cfg.batch_size)
        if self.embedded:
            model.embedded_inputs = True
        try:
            if state["initial_loss"] is None and state["epoch"] == 0 and state["batch"] == 0:
                # What the untrained model scores: a run that never beats it is refused, not saved as trained.
                state["initial_loss"] = evaluate(self.eval_net, self.task, self.val, cfg.eval_batch_size)["loss"]
            while state["epoch"] < cfg.epochs and not state["done"]:
                self.end_epoch(*self.train_epoch(n_batches))
                logger.log(state["history"])
                self.checkpoint()
        finally:
            logger.close()
            if self.bucketed:
                model.bucket_shapes = False
            if self.embedded:
                model.embedded_inputs = False
        if state["best_state"] is not None:
            model.load_state_dict(state["best_state"])
        return FitResult(history=state["history"], best_epoch=state["best_epoch"], best_val_loss=state["best_loss"],
                         train_time_s=state["elapsed"], stopped_early=self.stopped_early or state["done"],
                         initial_val_loss=state["initial_loss"])


def fit(model: Backbone, task: Task, train: EventData, val: EventData, groups: list[dict], cfg: TrainConfig,
        run_dir: str | Path, ctx: DistContext | None = None, settings: dict | None = None) -> FitResult:
    """Train ``model`` on ``train`` for ``task``, validating on ``val``; resume from ``run_dir`` if possible.

    ``groups`` are the optimiser parameter groups from :func:`hepfm.train.strategies.prepare`.
    ``settings``: the caller's run settings (data, learning rates, ...), stored in the checkpoint with
    ``cfg`` and the learning rates of ``groups``; a checkpoint made with other settings is refused.
    On return the model holds the weights of the best validation epoch.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_splits(train, val)
    steps = _Fit(model, task, train, val, groups, cfg, run_dir, ctx or DistContext(), settings)
    steps.resume()
    steps.wrap()
    return steps.run()
