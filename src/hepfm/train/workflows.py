"""Pretrain, fine-tune and evaluate: the library functions behind ``hepfm pretrain|finetune|evaluate``.

Each run writes one folder: ``model.safetensors`` + ``config.json`` (the model, loadable with
:func:`hepfm.load`), ``history.csv``, ``tensorboard/`` and, while running, ``checkpoint.pt``. Rerunning
the same command on a folder with a checkpoint resumes (any changed setting is refused); a folder
holding a finished model is refused unless ``overwrite`` is set, which also discards a checkpoint.
A run that fails on its input leaves no output behind: a folder it created is removed, and a folder that
existed keeps what it held (only entries this run added are removed).

Data identity: a pretrained model records its train+validation events
(:func:`hepfm.data.identity.pretraining_record`, key ``pretraining_data`` of config.json, inherited by
the models fine-tuned from it). Fine-tuning and evaluation refuse validation or test events that the
pretraining saw, unless ``allow_overlap`` is set: then they warn and mark the result ``overlap: true``.
"""

from __future__ import annotations

import shutil
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from hepfm.config import learning_rates
from hepfm.data.augment import check_augment
from hepfm.data.datasets import (
    BinarySplitPlan,
    binary_split,
    binary_test_set,
    check_sources,
    open_for_training,
    open_source,
)
from hepfm.data.features import TYPE, fit_scaling
from hepfm.data.integrity import DamagedStoreError
from hepfm.data.masking import object_classes
from hepfm.data.streaming import STREAM_PLAN, StreamingEvents, pretraining_data, pretraining_data_record
from hepfm.errors import HepfmError, OverlapError
from hepfm.io.atomic import remove_stale_temporaries
from hepfm.io.locking import LOCK, exclusive_lock
from hepfm.io.schema import FEATURE_INDEX
from hepfm.models.base import Backbone, count_parameters
from hepfm.models.pretrained import data_schema, schema_differences
from hepfm.models.pretrained import resolve as resolve_model
from hepfm.models.registry import check_inputs, create_model
from hepfm.models.saving import CONFIG, WEIGHTS, load_model, read_config, save_model
from hepfm.train import distributed
from hepfm.train.checkpoint import CHECKPOINT, BadCheckpointError, remove_checkpoint
from hepfm.train.strategies import STRATEGIES, prepare
from hepfm.train.tasks import JET_TASKS, PRETRAINING_TASKS, Task
from hepfm.train.trainer import (
    TrainConfig,
    check_learning_rate,
    check_max_events,
    evaluate,
    fit,
    predict,
)


class OverlapWarning(UserWarning):
    """Held-out events that the pretrained model trained on (only with ``allow_overlap``)."""


class NotImprovedWarning(UserWarning):
    """A finished run whose best validation loss is no better than the untrained model's."""


class UntrainedModelError(HepfmError):
    """Training gave no usable model (non-finite weights, or never better than the untrained model)."""


# What a run writes into its folder; interrupted atomic writes of these leave NAME.*.tmp files behind.
_RUN_FILES = (CONFIG, WEIGHTS, "history.csv", CHECKPOINT, STREAM_PLAN)
# Kept when a run fails after checkpointing, so rerunning the command resumes it exactly.
_RESUME_FILES = (CHECKPOINT, STREAM_PLAN)


def _check_run_options(lr=None, backbone_lr=None, max_events=None, device="auto") -> None:
    """Refuse a bad learning rate, event cap or device before anything is written."""
    if lr is not None:
        check_learning_rate(lr, "lr")
    if backbone_lr is not None:
        check_learning_rate(backbone_lr, "backbone_lr", allow_zero=True)
    check_max_events(max_events)
    distributed.check_device(device)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise HepfmError(f"{out}: exists and is not a folder")
    if (out / CONFIG).exists() and not (out / CHECKPOINT).exists() and not overwrite:
        raise HepfmError(f"{out}: already holds a trained model; choose another output folder or overwrite it "
                         "explicitly")


def _clear_out(out: Path, overwrite: bool) -> None:
    """With ``overwrite``: remove a previous run's outputs (model, history, checkpoint), so the run starts fresh."""
    if not overwrite:
        return
    for name in (CONFIG, WEIGHTS, "history.csv", CHECKPOINT, STREAM_PLAN):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "tensorboard", ignore_errors=True)


@contextmanager
def _output_guard(out: Path):
    """Create and lock ``out``; on any failure (an input error, a full disk, an interrupt) remove what this run
    added (the folder itself if it made it).

    A run that fails after writing its own checkpoint (e.g. a non-finite loss, Ctrl-C) keeps it and its data
    plan, so rerunning resumes, unless the cause is a damaged store or a model not worth keeping. Under
    torchrun only rank 0 locks and cleans (the others share its folder).
    """
    main = distributed.rank() == 0
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out, "run folder") if main else nullcontext():
        before = {p.name for p in out.iterdir()}
        had_checkpoint = (out / CHECKPOINT).exists()
        if main:
            for name in _RUN_FILES:  # left by a run killed while writing (we hold the lock: nobody else is)
                remove_stale_temporaries(out / name)
        try:
            yield
        except BaseException as exc:
            if main:
                keep = (out / CHECKPOINT).exists() and not isinstance(
                    exc, (DamagedStoreError, UntrainedModelError, BadCheckpointError))
                _remove_added(out, existed, before, had_checkpoint, keep)
            raise


def _remove_added(out: Path, existed: bool, before: set[str], had_checkpoint: bool, keep: bool) -> None:
    if not existed and not keep:
        shutil.rmtree(out, ignore_errors=True)
        return
    for p in out.iterdir():
        if p.name.startswith(LOCK) or (keep and p.name in _RESUME_FILES):
            continue
        if p.name not in before or (p.name == CHECKPOINT and not had_checkpoint):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _overlap(splits: dict, source: str, allow_overlap: bool, parts=("val", "test")) -> dict | None:
    """Counts of events per split seen in pretraining; refuse held-out ones unless ``allow_overlap``."""
    if any(splits[k].seen is None for k in splits):
        return None
    counts = {k: int(splits[k].seen.sum()) for k in splits}
    bad = {k: counts[k] for k in parts if counts.get(k)}
    if bad:
        what = " and ".join(f"{n} of the {len(splits[k])} {k} events" for k, n in bad.items())
        message = (f"{what} were in the training or validation data of the pretrained model {source} (same "
                   "generated events: same store, or stores generated with the same seed); use stores generated "
                   "with another generation seed")
        if not allow_overlap:
            raise OverlapError(message + ", or allow the overlap explicitly to go on (allow_overlap; the result is "
                               "then marked overlap: true)")
        warnings.warn("NOT HELD OUT: " + message + "; going on because the overlap was allowed, result marked "
                      "overlap: true", OverlapWarning, stacklevel=3)
    return {**counts, "overlap": bool(bad)}


def _abs(path) -> str | None:
    return None if path is None else str(Path(path).resolve())


def _fit_scaling(model: Backbone, train) -> None:
    if isinstance(train, StreamingEvents):
        train = train.sample()  # a bounded, seeded sample: the stream does not fit in memory
    mean, std = fit_scaling(train.x.numpy(), train.n_objects.numpy())
    model.scaling.set(mean, std)


def _check_trained(model, result, out: Path) -> None:
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


def _finish(model, task: Task, result, splits, cfg: TrainConfig, out: Path, ctx, metadata: dict) -> dict:
    _check_trained(model, result, out)
    test, detail = {}, {}
    if len(splits["test"]):
        data = splits["test"].to(ctx.device)
        test = evaluate(model, task, data, cfg.eval_batch_size)
        if task.name in ("multiclass", "multilabel"):  # the model card's confusion matrix / per-label AUCs
            detail = task.report(predict(model, data, cfg.eval_batch_size), data.y)
    summary = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
               "stopped_early": result.stopped_early, "train_time_s": round(result.train_time_s, 3),
               "n_train": len(splits["train"]), "n_val": len(splits["val"]), "n_test": len(splits["test"]),
               "test": test, "parameters": count_parameters(model)}
    if detail:
        summary["test_detail"] = detail
    if ctx.is_main:
        save_model(model, out, {**metadata, "task": task.name, "names": list(task.names),
                                "training": {**summary, "config": asdict(cfg), "world_size": ctx.world}})
        remove_checkpoint(out)
    ctx.barrier()
    return summary


def pretrain(data: str | Path, out: str | Path, task: str = "multiclass", model: str = "graphnet",
             model_config: dict | None = None, cfg: TrainConfig | None = None, lr: float | None = None,
             init_from: str | Path | None = None, split_seed: int = 0, max_events: int | None = None,
             device: str = "auto", overwrite: bool = False, stream: bool | None = None,
             regress: bool = False) -> dict:
    """Pretrain a backbone on a store: multiclass over its processes, the 41 truth labels (multilabel), or the
    self-supervised masked-object task (any store, labels ignored; ``regress``: also regress the hidden
    object's kinematics).

    ``stream``: read the training split from disk through a shuffle buffer instead of holding it in memory;
    None decides by the store's size (see :func:`hepfm.data.streaming.pretraining_data`). ``lr`` None: the
    optimizer's default (:func:`hepfm.config.learning_rates`: 1e-4, or 1e-2 with sgd-cosine).
    """
    cfg, out = cfg or TrainConfig(), Path(out)
    lr = learning_rates(cfg.optimizer, lr)[0]
    _check_run_options(lr, None, max_events, device)
    if task in JET_TASKS:
        if stream:
            raise HepfmError("jet tagging holds its jets in memory; it cannot stream them")
        return pretrain_jets(data, out, model=model, model_config=model_config, cfg=cfg, lr=lr, init_from=init_from,
                             split_seed=split_seed, max_events=max_events, device=device, overwrite=overwrite)
    if task not in PRETRAINING_TASKS:
        raise HepfmError(f"unknown pretraining task {task!r}; choose from "
                         f"{', '.join(PRETRAINING_TASKS + JET_TASKS)}")
    if regress and task != "masked":
        raise HepfmError("kinematic regression of the hidden object needs the masked task")
    check_inputs(model, "objects", f"the {task} task")
    check_augment(task, cfg.augment)
    _check_out(out, overwrite)
    source_name, init_from = init_from, resolve_model(init_from) if init_from is not None else None
    parent = read_config(init_from) if init_from is not None else None
    open_for_training(data, max_events)  # damaged shards are refused before anything is written
    schema = data_schema(open_source(data)[0])
    if parent is not None:
        _check_schema(parent, data, source_name)
    record = pretraining_data_record(data, split_seed, max_events)
    if parent is not None:
        record = list(parent.get("pretraining_data") or []) + record
    settings = {"command": "pretrain", "data": _abs(data), "task": task, "model": model,
                "model_config": model_config or {}, "lr": lr, "init_from": _abs(init_from),
                "split_seed": split_seed, "max_events": max_events, "stream": stream}
    if task == "masked":
        settings["regress"] = regress
        model_config = {**(model_config or {}), "mask_token": True}
    with _output_guard(out):
        _clear_out(out, overwrite)
        ctx = distributed.setup(device)
        splits, names, loading = pretraining_data(data, task, split_seed, max_events, stream, ctx, out,
                                                  resume=(out / CHECKPOINT).exists())
        if task == "masked":
            names = masked_classes(data, splits["train"])
        task_ = Task(task, names, regress=regress)
        torch.manual_seed(cfg.seed)
        if init_from is not None:
            net = load_model(init_from)
            meta = net.metadata
            if meta.get("task") != task or list(meta.get("names", [])) != names:
                raise HepfmError(f"{init_from}: pretrained for {meta.get('task')} over {meta.get('names')}, but this "
                                 f"task is {task} over {names}; the label sets must match to continue pretraining")
            if meta.get("task_options", {}).get("regress", False) != regress:
                raise HepfmError(f"{init_from}: pretrained with regress={not regress}; continue with the same "
                                 "regress setting")
        else:
            net = create_model(model, task_.n_outputs, **(model_config or {}))
            _fit_scaling(net, splits["train"])
        groups = prepare(net, "scratch", task_.n_outputs, lr=lr)
        result = fit(net, task_, splits["train"], splits["val"], groups, cfg, out, ctx, settings=settings)
        summary = _finish(net, task_, result, splits, cfg, out, ctx,
                          {"strategy": "pretrain", "data": str(data), "split_seed": split_seed,
                           "max_events": max_events, "lr": lr,
                           "init_from": str(source_name) if source_name is not None else None,
                           "data_loading": loading, "pretraining_data": record, "data_schema": schema,
                           "task_options": task_.summary()})
    return {**summary, "stream": loading["stream"]}


def masked_classes(data: str | Path, train) -> list[str]:
    """The masked task's object classes for a store: from its detector configuration (tau tagging) and the
    type codes of (a sample of) its training events."""
    sample = train.sample() if isinstance(train, StreamingEvents) else train
    mask = torch.arange(sample.x.shape[1])[None, :] < sample.n_objects[:, None]
    seen = torch.unique(sample.x[..., TYPE][mask]).tolist()
    return object_classes(open_source(data)[0].attrs().get("detector"), seen)


def pretrain_jets(data: str | Path, out: str | Path, model: str = "jet_transformer", model_config: dict | None = None,
                  cfg: TrainConfig | None = None, lr: float | None = None, init_from: str | Path | None = None,
                  split_seed: int = 0, max_events: int | None = None, device: str = "auto", overwrite: bool = False,
                  classes: list[str] | None = None) -> dict:
    """Pretrain a jet backbone on jet tagging: the truth flavours of the jets of a store with constituents.

    Jets are split by event (:func:`hepfm.data.jets.jet_tagging_data`); ``classes`` restricts the flavours.
    The summary holds the held-out metrics and, under ``test_outputs``, the test jets' class probabilities
    and true classes (numpy arrays, not saved) for rejection figures.
    """
    from hepfm.data.jets import jet_tagging_data, padding_fraction
    from hepfm.models.jets import fit_constituent_scaling

    cfg, out = cfg or TrainConfig(), Path(out)
    lr = learning_rates(cfg.optimizer, lr)[0]
    _check_run_options(lr, None, max_events, device)
    check_inputs(model, "constituents", "jet tagging")
    if cfg.augment:
        raise HepfmError("jet tagging takes no augmentation (the constituents are relative to their jet axis)")
    _check_out(out, overwrite)
    source_name, init_from = init_from, resolve_model(init_from) if init_from is not None else None
    settings = {"command": "pretrain", "data": _abs(data), "task": "jet-tagging", "model": model,
                "model_config": model_config or {}, "lr": lr, "init_from": _abs(init_from),
                "split_seed": split_seed, "max_events": max_events, "classes": classes}
    with _output_guard(out):
        _clear_out(out, overwrite)
        ctx = distributed.setup(device)
        splits, names = jet_tagging_data(data, split_seed, max_events, classes)
        task_ = Task("jet-tagging", names)
        torch.manual_seed(cfg.seed)
        if init_from is not None:
            net = load_model(init_from)
            meta = net.metadata
            if meta.get("task") != "jet-tagging" or list(meta.get("names", [])) != names:
                raise HepfmError(f"{init_from}: pretrained for {meta.get('task')} over {meta.get('names')}, but "
                                 f"this is jet-tagging over {names}; the classes must match to continue")
        else:
            net = create_model(model, task_.n_outputs, **(model_config or {}))
            train = splits["train"]
            net.scaling.set(*fit_constituent_scaling(train.x.numpy(), train.n_constituents.numpy()))
        groups = prepare(net, "scratch", task_.n_outputs, lr=lr)
        bucketed, unsorted = padding_fraction(splits["train"], cfg.batch_size, cfg.seed)
        result = fit(net, task_, splits["train"], splits["val"], groups, cfg, out, ctx, settings=settings)
        loading = {"jets": {k: len(v) for k, v in splits.items()},
                   "padding_per_real_constituent": {"bucketed": round(bucketed, 4), "unsorted": round(unsorted, 4)}}
        summary = _finish(net, task_, result, splits, cfg, out, ctx,
                          {"strategy": "pretrain", "data": str(data), "split_seed": split_seed,
                           "max_events": max_events, "lr": lr, "inputs": "constituents",
                           "init_from": str(source_name) if source_name is not None else None,
                           "data_loading": loading})
        test = splits["test"].to(ctx.device)
        summary["test_outputs"] = {"scores": task_.scores(predict(net, test, cfg.eval_batch_size)).cpu().numpy(),
                                   "y": test.y.cpu().numpy(), "names": names}
    return {**summary, **loading}


def _check_schema(parent: dict, data: str | Path, name) -> None:
    """Refuse events whose features or detector differ from those the model was pretrained on."""
    diffs = schema_differences(parent, open_source(data)[0])
    if diffs:
        raise HepfmError(f"{data}: these events differ from those {name} was pretrained on: {'; '.join(diffs)}")


def finetune(signal: str | Path, background: str | Path, out: str | Path, strategy: str = "finetune",
             init_from: str | Path | None = None, model: str = "graphnet", model_config: dict | None = None,
             plan: BinarySplitPlan | None = None, cfg: TrainConfig | None = None, lr: float | None = None,
             backbone_lr: float | None = None, frozen_part: str = "head", max_events: int | None = None,
             device: str = "auto", overwrite: bool = False, allow_overlap: bool = False) -> dict:
    """Train a binary signal-vs-background classifier: from scratch, fine-tuned, or on a frozen backbone.

    Validation or test events that the pretrained model (``init_from``, finetune/frozen) trained on are
    refused unless ``allow_overlap`` (then: a warning, and ``overlap: true`` in config.json).
    ``lr``/``backbone_lr`` None: the optimizer's defaults (:func:`hepfm.config.learning_rates`).
    """
    cfg, plan, out = cfg or TrainConfig(), plan or BinarySplitPlan(), Path(out)
    lr, backbone_lr = learning_rates(cfg.optimizer, lr, backbone_lr)
    _check_run_options(lr, backbone_lr, max_events, device)
    if strategy not in STRATEGIES:
        raise HepfmError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if strategy in ("finetune", "frozen") and init_from is None:
        raise HepfmError(f"strategy {strategy!r} needs a pretrained model to start from (a run folder or a "
                         "shipped model's name)")
    check_augment("binary", cfg.augment)
    check_sources(signal, background)
    source_name, init_from = init_from, resolve_model(init_from) if init_from is not None else None
    parent = read_config(init_from) if init_from is not None else None  # fail early on an unreadable model
    if model == "hierarchical" or (parent is not None and parent.get("task") in JET_TASKS):
        return finetune_hierarchical(signal, background, out, strategy=strategy, init_from=source_name,
                                     model=model, model_config=model_config, plan=plan, cfg=cfg, lr=lr,
                                     backbone_lr=backbone_lr, max_events=max_events, device=device,
                                     overwrite=overwrite)
    check_inputs(parent["architecture"]["model"] if parent is not None else model, "objects", "an event classifier")
    _check_out(out, overwrite)
    for source in (signal, background):
        open_for_training(source, max_events)  # damaged shards are refused before anything is written
        if parent is not None and strategy != "scratch":
            _check_schema(parent, source, source_name)
    schema = (parent or {}).get("data_schema") if strategy != "scratch" else None
    schema = schema or data_schema(open_source(signal)[0])
    record = (parent.get("pretraining_data") or []) if parent is not None and strategy != "scratch" else None
    settings = {"command": "finetune", "signal": _abs(signal), "background": _abs(background), "strategy": strategy,
                "init_from": _abs(init_from), "model": model,
                "model_config": model_config or {}, "split": asdict(plan), "lr": lr, "backbone_lr": backbone_lr,
                "frozen_part": frozen_part, "max_events": max_events, "allow_overlap": allow_overlap}
    with _output_guard(out):
        splits = binary_split(signal, background, plan, max_events, record=record)
        overlap = _overlap(splits, str(init_from), allow_overlap)
        _clear_out(out, overwrite)
        ctx = distributed.setup(device)
        task = Task("binary", ["background", "signal"])
        torch.manual_seed(cfg.seed)
        if strategy == "scratch":
            if init_from is not None:  # same architecture as the pretrained model, fresh weights
                arch = parent["architecture"]
                model = arch["model"]
                model_config = {k: v for k, v in arch.get("config", {}).items() if k != "mask_token"}
            net = create_model(model, task.n_outputs, **(model_config or {}))
            _fit_scaling(net, splits["train"])
        else:
            net = load_model(init_from)
            net.drop_mask_token()  # a masked-pretrained backbone: embedding + backbone transfer, not the dummy
        groups = prepare(net, strategy, task.n_outputs, lr=lr, backbone_lr=backbone_lr, frozen_part=frozen_part)
        result = fit(net, task, splits["train"], splits["val"], groups, cfg, out, ctx, settings=settings)
        return _finish(net, task, result, splits, cfg, out, ctx,
                       {"strategy": strategy, "signal": str(signal), "background": str(background),
                        "data_paths": {"signal": _abs(signal), "background": _abs(background)},
                        "init_from": str(source_name) if source_name is not None else None, "split": asdict(plan),
                        "max_events": max_events, "lr": lr, "backbone_lr": backbone_lr, "frozen_part": frozen_part,
                        "pretraining_data": record, "pretraining_overlap": overlap,
                        "overlap": bool(overlap and overlap["overlap"]), "data_schema": schema})


def finetune_hierarchical(signal: str | Path, background: str | Path, out: str | Path, strategy: str = "finetune",
                          init_from: str | Path | None = None, model: str = "transformer",
                          model_config: dict | None = None, plan: BinarySplitPlan | None = None,
                          cfg: TrainConfig | None = None, lr: float | None = None,
                          backbone_lr: float | None = None, max_events: int | None = None,
                          device: str = "auto", overwrite: bool = False) -> dict:
    """Train the hierarchical event classifier (:mod:`hepfm.models.hierarchical`) on stores with constituents.

    ``init_from``: a jet-tagging run whose jet backbone is used ``frozen``, ``finetune``-d (at
    ``backbone_lr``; the rest at ``lr``) or, with ``scratch``, rebuilt with fresh weights; without it the
    jet backbone is ``model_config["jet_model"]`` (default jet_transformer) from scratch. The event
    backbone (``model``: graphnet or transformer, or ``model_config["event_model"]`` when ``model`` is
    "hierarchical") is always trained from scratch, at ``lr``.
    """
    from hepfm.data.datasets import stored_constituents
    from hepfm.data.features import fit_scaling
    from hepfm.models.hierarchical import N_CONSTITUENT, N_OBJECT
    from hepfm.models.jets import fit_constituent_scaling

    cfg, plan, out = cfg or TrainConfig(), plan or BinarySplitPlan(), Path(out)
    lr, backbone_lr = learning_rates(cfg.optimizer, lr, backbone_lr)
    _check_run_options(lr, backbone_lr, max_events, device)
    if strategy not in STRATEGIES:
        raise HepfmError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if strategy in ("finetune", "frozen") and init_from is None:
        raise HepfmError(f"strategy {strategy!r} needs a jet-tagging run to take the jet backbone from")
    if cfg.augment:
        raise HepfmError("the hierarchical model takes no augmentation (its constituents would not follow)")
    check_sources(signal, background)
    source_name, init_from = init_from, resolve_model(init_from) if init_from is not None else None
    parent = read_config(init_from) if init_from is not None else None
    if parent is not None and parent.get("task") not in JET_TASKS:
        raise HepfmError(f"{source_name}: the hierarchical model takes its jet backbone from a jet-tagging run, "
                         f"this one was trained for {parent.get('task')}")
    options = dict(model_config or {})
    event_model = options.pop("event_model", "transformer") if model == "hierarchical" else model
    event_config = options.pop("event_config", options if model != "hierarchical" else {})
    if parent is not None:
        jet_model, jet_config = parent["architecture"]["model"], parent["architecture"].get("config", {})
    else:
        jet_model, jet_config = options.pop("jet_model", "jet_transformer"), options.pop("jet_config", {})
    k = stored_constituents(signal)
    if stored_constituents(background) != k:
        raise HepfmError(f"{signal} and {background} keep different numbers of constituents per jet")
    _check_out(out, overwrite)
    for source in (signal, background):
        open_for_training(source, max_events)
    settings = {"command": "finetune", "hierarchical": True, "signal": _abs(signal), "background": _abs(background),
                "strategy": strategy, "init_from": _abs(init_from), "event_model": event_model,
                "event_config": event_config, "jet_model": jet_model, "jet_config": jet_config,
                "split": asdict(plan), "lr": lr, "backbone_lr": backbone_lr, "max_events": max_events}
    with _output_guard(out):
        splits = binary_split(signal, background, plan, max_events, constituents=True)
        _clear_out(out, overwrite)
        ctx = distributed.setup(device)
        task = Task("binary", ["background", "signal"])
        torch.manual_seed(cfg.seed)
        net = create_model("hierarchical", 1, event_model=event_model, event_config=event_config,
                           jet_model=jet_model, jet_config=jet_config, max_constituents=k)
        train = splits["train"]
        net.scaling.set(*fit_scaling(train.x[..., :N_OBJECT].numpy(), train.n_objects.numpy()))
        if strategy != "scratch":
            state = {key: v for key, v in load_model(init_from).state_dict().items() if not key.startswith("head.")}
            net.jet.load_state_dict(state)
        else:
            rows = train.x[(train.x[..., FEATURE_INDEX["type"]] == 1)][:, N_OBJECT:].reshape(-1, k, N_CONSTITUENT)
            counts = (rows[..., -1] > 0).sum(dim=1)
            net.jet.scaling.set(*fit_constituent_scaling(rows.numpy(), counts.numpy()))
        jet_ids = {id(p) for p in net.jet.parameters()}
        rest = [p for p in net.parameters() if id(p) not in jet_ids]
        groups = [{"params": rest, "lr": lr, "name": "event"}]
        if strategy == "frozen":
            for p in net.jet.parameters():
                p.requires_grad_(False)
        else:
            groups.append({"params": list(net.jet.parameters()), "name": "jet",
                           "lr": backbone_lr if strategy == "finetune" else lr})
        result = fit(net, task, splits["train"], splits["val"], groups, cfg, out, ctx, settings=settings)
        return _finish(net, task, result, splits, cfg, out, ctx,
                       {"strategy": strategy, "hierarchical": True, "signal": str(signal),
                        "background": str(background), "inputs": "objects+constituents",
                        "data_paths": {"signal": _abs(signal), "background": _abs(background)},
                        "init_from": str(source_name) if source_name is not None else None, "split": asdict(plan),
                        "max_events": max_events, "lr": lr, "backbone_lr": backbone_lr,
                        "data_schema": data_schema(open_source(signal)[0])})


def evaluate_run(run: str | Path, signal: str | Path, background: str | Path, device: str = "auto",
                 max_events: int | None = None, allow_overlap: bool = False) -> dict:
    """Accuracy (threshold 0.5), ROC AUC and the ROC curve of a binary model on the held-out test split.

    The split is rebuilt from the plan saved with the model, so the test events are the ones it never saw
    when ``signal`` and ``background`` are the stores it was trained on. Test events that its pretrained
    backbone trained on are refused unless ``allow_overlap`` (then ``overlap`` is True in the result).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    _check_run_options(max_events=max_events, device=device)
    net = load_model(resolve_model(run), distributed.resolve_device(device))
    meta = net.metadata
    if meta.get("task") != "binary":
        raise HepfmError(f"{run}: a {meta.get('task')} model; evaluate takes binary (fine-tuned) models")
    split = meta.get("split", {})
    plan = BinarySplitPlan(**{k: split[k] for k in ("test_fraction", "test_size", "split_seed") if k in split})
    record = meta.get("pretraining_data")
    test = binary_test_set(signal, background, plan, meta.get("max_events") if max_events is None else max_events,
                           record=record, constituents=net.inputs == "objects+constituents")
    overlap = _overlap({"test": test}, str(meta.get("init_from")), allow_overlap, parts=("test",))
    scores = Task("binary", ["background", "signal"]).scores(predict(net, test.to(next(net.parameters()).device)))
    s, y = scores.cpu().numpy().astype(np.float64), test.y.numpy()
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    overlapping = bool(overlap and overlap["overlap"]) or bool(meta.get("overlap"))
    # Held out only on the very events the split was planned on: the same stores and the same --max-events.
    # The paths as resolved when training (a model saved before they were recorded: as typed, from here).
    trained_on = meta.get("data_paths") or {k: _abs(meta.get(k)) for k in ("signal", "background")}
    same = (_abs(signal) == trained_on.get("signal") and _abs(background) == trained_on.get("background")
            and (max_events is None or max_events == meta.get("max_events")))
    return {"accuracy": float(((s >= 0.5) == (y == 1)).mean()), "auc": float(roc_auc_score(y, s)),
            "n_test": len(y), "fpr": fpr, "tpr": tpr, "held_out": same and not overlapping,
            "overlap": overlapping, "strategy": meta.get("strategy")}
