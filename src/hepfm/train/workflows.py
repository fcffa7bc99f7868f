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

import warnings
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
from hepfm.data.masking import object_classes
from hepfm.data.pretraining import EVENT_PRETRAINING_TASKS, HEADS, JET_PRETRAINING_TASKS, MULTI_TASK, PRETRAINING_TASKS
from hepfm.data.streaming import StreamingEvents, pretraining_data_record
from hepfm.errors import HepfmError, OverlapError
from hepfm.io.schema import TYPE
from hepfm.models.batched import predict
from hepfm.models.pretrained import data_schema, schema_differences
from hepfm.models.pretrained import resolve as resolve_model
from hepfm.models.registry import check_inputs, create_model
from hepfm.models.saving import load_model
from hepfm.train import distributed
from hepfm.train.lifecycle import (
    NotImprovedWarning,
    Run,
    UntrainedModelError,
    check_run_options,
    check_trained,
    initial_model,
    resolve_parent,
)
from hepfm.train.lifecycle import resolved_path as _abs
from hepfm.train.loading import pretraining_data
from hepfm.train.record import RunRecord, known
from hepfm.train.strategies import STRATEGIES, check_recipe, prepare
from hepfm.train.tasks import HeavyTask, MultiTask, Task
from hepfm.train.trainer import TrainConfig

__all__ = ["NotImprovedWarning", "OverlapWarning", "UntrainedModelError", "evaluate_run", "finetune",
           "finetune_hierarchical", "masked_classes", "pretrain", "pretrain_jets"]

_check_trained = check_trained  # the name tests and older callers use


class OverlapWarning(UserWarning):
    """Held-out events that the pretrained model trained on (only with ``allow_overlap``)."""


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


def _binary_task() -> Task:
    return Task("binary", ["background", "signal"])


def _check_strategy(strategy: str, init_from, needs: str) -> None:
    if strategy not in STRATEGIES:
        raise HepfmError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if strategy in ("finetune", "frozen") and init_from is None:
        raise HepfmError(f"strategy {strategy!r} needs {needs}")


def _check_continued(parent: RunRecord, folder: Path, task: str, names: list[str], what: str) -> None:
    """Refuse to continue pretraining a model that was pretrained for another task or label set."""
    if parent.task != task or list(known(parent.names, [])) != names:
        raise HepfmError(f"{folder}: pretrained for {known(parent.task)} over {known(parent.names)}, but {what}")


def pretrain(data: str | Path, out: str | Path, task: str = "multiclass", model: str = "graphnet",
             model_config: dict | None = None, cfg: TrainConfig | None = None, lr: float | None = None,
             init_from: str | Path | None = None, split_seed: int = 0, max_events: int | None = None,
             device: str = "auto", overwrite: bool = False, stream: bool | None = None,
             regress: bool = False, heads: dict[str, float] | None = None) -> dict:
    """Pretrain a backbone on a store: multiclass over its processes, the 41 truth labels (multilabel), the
    self-supervised masked-object task (any store, labels ignored; ``regress``: also regress the hidden
    object's kinematics), or several of these and more as weighted ``heads`` of task ``multi``
    (:func:`pretrain_multi`).

    ``stream``: read the training split from disk through a shuffle buffer instead of holding it in memory;
    None decides by the store's size (see :func:`hepfm.train.loading.pretraining_data`). ``lr`` None: the
    optimizer's default (:func:`hepfm.config.learning_rates`: 1e-4, or 1e-2 with sgd-cosine).
    """
    cfg = cfg or TrainConfig()
    lr = learning_rates(cfg.optimizer, lr)[0]
    check_run_options(lr, None, max_events, device)
    check_recipe("pretraining", cfg.layer_decay, cfg.linear_probe)
    if task in JET_PRETRAINING_TASKS:
        if stream:
            raise HepfmError("jet tagging holds its jets in memory; it cannot stream them")
        return pretrain_jets(data, out, model=model, model_config=model_config, cfg=cfg, lr=lr, init_from=init_from,
                             split_seed=split_seed, max_events=max_events, device=device, overwrite=overwrite)
    if task == MULTI_TASK:
        if regress:
            raise HepfmError("kinematic regression of the hidden object needs the masked task")
        return pretrain_multi(data, out, heads or {}, model=model, model_config=model_config, cfg=cfg, lr=lr,
                              init_from=init_from, split_seed=split_seed, max_events=max_events, device=device,
                              overwrite=overwrite, stream=stream)
    if heads:
        raise HepfmError(f"heads are for --task {MULTI_TASK}, not {task}")
    if task not in EVENT_PRETRAINING_TASKS:
        raise HepfmError(f"unknown pretraining task {task!r}; choose from "
                         f"{', '.join((*PRETRAINING_TASKS, MULTI_TASK))}")
    if regress and task != "masked":
        raise HepfmError("kinematic regression of the hidden object needs the masked task")
    check_inputs(model, "objects", f"the {task} task")
    check_augment(task, cfg.augment)
    run = Run(out, cfg, device, overwrite)
    source_name, init_from, parent, schema, pretraining_events = _pretraining_source(data, init_from, split_seed,
                                                                                      max_events)
    settings = {"command": "pretrain", "data": _abs(data), "task": task, "model": model,
                "model_config": model_config or {}, "lr": lr, "init_from": _abs(init_from),
                "split_seed": split_seed, "max_events": max_events, "stream": stream}
    if task == "masked":
        settings["regress"] = regress
        model_config = {**(model_config or {}), "mask_token": True}
    with run.guard():
        ctx = run.start()
        splits, names, loading = pretraining_data(data, task, split_seed, max_events, stream, ctx, run.out,
                                                  resume=run.resuming)
        if task == "masked":
            names = masked_classes(data, splits["train"])
        task_ = Task(task, names, regress=regress)
        run.seed()
        net = initial_model(model, task_.n_outputs, model_config, splits["train"], init_from, parent is not None)
        if parent is not None:
            _check_continued(parent, init_from, task, names, f"this task is {task} over {names}; the label sets "
                             "must match to continue pretraining")
            if known(parent.task_options, {}).get("regress", False) != regress:
                raise HepfmError(f"{init_from}: pretrained with regress={not regress}; continue with the same "
                                 "regress setting")
        groups = prepare(net, "scratch", task_.n_outputs, lr=lr)
        summary = run.finish(net, task_, run.fit(net, task_, splits, groups, settings), splits, _pretraining_record(
            data, split_seed, max_events, lr, source_name, loading, pretraining_events, schema, task_))
    return {**summary, "stream": loading["stream"]}


def _multi_task(heads: dict[str, float], names: dict[str, list[str]], train, masked_names) -> MultiTask:
    """The multi-task of ``heads`` (head -> loss weight), each head's task built on its names; the heavy head's
    standardisation is fitted on the training split."""
    tasks = {}
    for head, weight in heads.items():
        if head == "heavy":
            sample = train.sample() if isinstance(train, StreamingEvents) else train
            task = HeavyTask.fitted(names[head], sample.targets[head])
        elif head == "masked":
            task = Task("masked", masked_names)
        else:
            task = Task(head, names[head])
        tasks[head] = (task, weight)
    return MultiTask(tasks)


def pretrain_multi(data: str | Path, out: str | Path, heads: dict[str, float], model: str = "graphnet",
                   model_config: dict | None = None, cfg: TrainConfig | None = None, lr: float | None = None,
                   init_from: str | Path | None = None, split_seed: int = 0, max_events: int | None = None,
                   device: str = "auto", overwrite: bool = False, stream: bool | None = None) -> dict:
    """Pretrain one backbone on several heads with weighted losses: ``heads`` maps each head of
    :data:`~hepfm.data.pretraining.HEADS` to its loss weight (:class:`~hepfm.train.tasks.MultiTask`).

    The ``origin`` head classifies each object (the backbone's per-object head, used in training only: the
    saved model holds the backbone and its event-level heads); a ``masked`` head masks every batch and the other
    heads read the masked events (see :class:`~hepfm.train.tasks.MultiTask`). ``stream``: as :func:`pretrain`.
    """
    cfg = cfg or TrainConfig()
    lr = learning_rates(cfg.optimizer, lr)[0]
    check_run_options(lr, None, max_events, device)
    unknown = [h for h in heads if h not in HEADS]
    if not heads or unknown:
        raise HepfmError(f"--task {MULTI_TASK} needs heads from {', '.join(HEADS)} with their loss weights (e.g. "
                         f"--heads multiclass=1,origin=0.5){f'; unknown head {unknown[0]!r}' if unknown else ''}")
    if set(heads) <= {"origin"}:
        raise HepfmError(f"--task {MULTI_TASK}: the origin head needs an event-level head beside it (multiclass, "
                         "multilabel, heavy or masked)")
    check_inputs(model, "objects", f"the {MULTI_TASK} task")
    for head in heads:
        check_augment(head if head in EVENT_PRETRAINING_TASKS else "multilabel", cfg.augment)
    run = Run(out, cfg, device, overwrite)
    source_name, init_from, parent, schema, pretraining_events = _pretraining_source(data, init_from, split_seed,
                                                                                      max_events)
    heads = {h: float(w) for h, w in heads.items()}
    settings = {"command": "pretrain", "data": _abs(data), "task": MULTI_TASK, "heads": heads, "model": model,
                "model_config": model_config or {}, "lr": lr, "init_from": _abs(init_from),
                "split_seed": split_seed, "max_events": max_events, "stream": stream}
    if "masked" in heads:
        model_config = {**(model_config or {}), "mask_token": True}
    with run.guard():
        ctx = run.start()
        splits, names, loading = pretraining_data(data, MULTI_TASK, split_seed, max_events, stream, ctx, run.out,
                                                  resume=run.resuming, heads=list(heads))
        masked_names = masked_classes(data, splits["train"]) if "masked" in heads else None
        task_ = _multi_task(heads, names, splits["train"], masked_names)
        run.seed()
        net = initial_model(model, task_.n_outputs, model_config, splits["train"], init_from, parent is not None)
        if parent is not None:
            parent_heads = known(parent.task_options, {}).get("heads", {})
            if parent.task != MULTI_TASK or {h: v["names"] for h, v in parent_heads.items()} != {
                    h: list(t.names) for h, (t, _) in task_.heads.items()}:
                raise HepfmError(f"{init_from}: pretrained for {known(parent.task)}, not with these heads and "
                                 "names; continue a multi-task pretraining with the same heads")
        if task_.n_object_outputs:
            net.add_object_head(task_.n_object_outputs)
        groups = prepare(net, "scratch", task_.n_outputs, lr=lr)
        summary = run.finish(net, task_, run.fit(net, task_, splits, groups, settings), splits, _pretraining_record(
            data, split_seed, max_events, lr, source_name, loading, pretraining_events, schema, task_))
    return {**summary, "stream": loading["stream"]}


def _pretraining_source(data, init_from, split_seed: int, max_events: int | None):
    """(name as given, folder, record) of the model a pretraining starts from, the store's data schema, and the
    pretraining events the run will record (with those its parent inherited); damaged shards and a store the
    parent's inputs differ from are refused before anything is written."""
    source_name, init_from, parent = resolve_parent(init_from)
    open_for_training(data, max_events)
    schema = data_schema(open_source(data)[0])
    if parent is not None:
        _check_schema(parent, data, source_name)
    pretraining_events = pretraining_data_record(data, split_seed, max_events)
    if parent is not None:
        pretraining_events = parent.inherited_pretraining_data() + pretraining_events
    return source_name, init_from, parent, schema, pretraining_events


def _pretraining_record(data, split_seed, max_events, lr, source_name, loading, pretraining_events, schema,
                        task: Task) -> RunRecord:
    """The record of a pretraining run (event tasks, single or multi-task)."""
    return RunRecord(strategy="pretrain", data=str(data), split_seed=split_seed, max_events=max_events, lr=lr,
                     init_from=_given(source_name), data_loading=loading, pretraining_data=pretraining_events,
                     data_schema=schema, task_options=task.summary())


def _given(source_name) -> str | None:
    """The starting model as the caller named it (recorded so), or None."""
    return str(source_name) if source_name is not None else None


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

    cfg = cfg or TrainConfig()
    lr = learning_rates(cfg.optimizer, lr)[0]
    check_run_options(lr, None, max_events, device)
    check_recipe("pretraining", cfg.layer_decay, cfg.linear_probe)
    check_inputs(model, "constituents", "jet tagging")
    if cfg.augment:
        raise HepfmError("jet tagging takes no augmentation (the constituents are relative to their jet axis)")
    run = Run(out, cfg, device, overwrite)
    source_name, init_from = init_from, resolve_model(init_from) if init_from is not None else None
    settings = {"command": "pretrain", "data": _abs(data), "task": "jet-tagging", "model": model,
                "model_config": model_config or {}, "lr": lr, "init_from": _abs(init_from),
                "split_seed": split_seed, "max_events": max_events, "classes": classes}
    with run.guard():
        ctx = run.start()
        splits, names = jet_tagging_data(data, split_seed, max_events, classes)
        task_ = Task("jet-tagging", names)
        run.seed()
        net = initial_model(model, task_.n_outputs, model_config, splits["train"], init_from, init_from is not None)
        if init_from is not None:
            _check_continued(RunRecord.from_json(net.metadata), init_from, "jet-tagging", names,
                             f"this is jet-tagging over {names}; the classes must match to continue")
        groups = prepare(net, "scratch", task_.n_outputs, lr=lr)
        bucketed, unsorted = padding_fraction(splits["train"], cfg.batch_size, cfg.seed)
        result = run.fit(net, task_, splits, groups, settings)
        loading = {"jets": {k: len(v) for k, v in splits.items()},
                   "padding_per_real_constituent": {"bucketed": round(bucketed, 4), "unsorted": round(unsorted, 4)}}
        summary = run.finish(net, task_, result, splits, RunRecord(
            strategy="pretrain", data=str(data), split_seed=split_seed, max_events=max_events, lr=lr,
            inputs="constituents", init_from=_given(source_name), data_loading=loading))
        test = splits["test"].to(ctx.device)
        summary["test_outputs"] = {"scores": task_.scores(predict(net, test, cfg.eval_batch_size)).cpu().numpy(),
                                   "y": test.y.cpu().numpy(), "names": names}
    return {**summary, **loading}


def _check_schema(parent: RunRecord, data: str | Path, name) -> None:
    """Refuse events whose features or detector differ from those the model was pretrained on."""
    diffs = schema_differences(parent.to_json(), open_source(data)[0])
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
    cfg, plan = cfg or TrainConfig(), plan or BinarySplitPlan()
    lr, backbone_lr = learning_rates(cfg.optimizer, lr, backbone_lr)
    check_run_options(lr, backbone_lr, max_events, device)
    _check_strategy(strategy, init_from, "a pretrained model to start from (a run folder or a shipped model's name)")
    check_recipe(strategy, cfg.layer_decay, cfg.linear_probe)
    check_augment("binary", cfg.augment)
    check_sources(signal, background)
    source_name, init_from, parent = resolve_parent(init_from)  # fail early on an unreadable model
    if model == "hierarchical" or (parent is not None and parent.task in JET_PRETRAINING_TASKS):
        return finetune_hierarchical(signal, background, out, strategy=strategy, init_from=source_name,
                                     model=model, model_config=model_config, plan=plan, cfg=cfg, lr=lr,
                                     backbone_lr=backbone_lr, max_events=max_events, device=device,
                                     overwrite=overwrite)
    check_inputs(parent.model if parent is not None else model, "objects", "an event classifier")
    run = Run(out, cfg, device, overwrite)
    transfer = parent is not None and strategy != "scratch"
    for source in (signal, background):
        open_for_training(source, max_events)  # damaged shards are refused before anything is written
        if transfer:
            _check_schema(parent, source, source_name)
    schema = (known(parent.data_schema) if transfer else None) or data_schema(open_source(signal)[0])
    pretraining_events = parent.inherited_pretraining_data() if transfer else None
    settings = {"command": "finetune", "signal": _abs(signal), "background": _abs(background), "strategy": strategy,
                "init_from": _abs(init_from), "model": model,
                "model_config": model_config or {}, "split": asdict(plan), "lr": lr, "backbone_lr": backbone_lr,
                "frozen_part": frozen_part, "max_events": max_events, "allow_overlap": allow_overlap}
    if parent is not None and not transfer:  # same architecture as the pretrained model, fresh weights
        model = parent.model
        model_config = {k: v for k, v in parent.model_config.items() if k != "mask_token"}
    with run.guard():
        splits = binary_split(signal, background, plan, max_events, record=pretraining_events)
        overlap = _overlap(splits, str(init_from), allow_overlap)
        run.start()
        task = _binary_task()
        run.seed()
        net = initial_model(model, task.n_outputs, model_config, splits["train"], init_from, transfer)
        if transfer:
            net.drop_mask_token()  # a masked-pretrained backbone: embedding + backbone transfer, not the dummy
        groups = prepare(net, strategy, task.n_outputs, lr=lr, backbone_lr=backbone_lr, frozen_part=frozen_part,
                         layer_decay=cfg.layer_decay)
        if cfg.linear_probe:
            run.probe(net, task, splits, groups, settings)
        result = run.fit(net, task, splits, groups, settings)
        return run.finish(net, task, result, splits, RunRecord(
            strategy=strategy, signal=str(signal), background=str(background),
            data_paths={"signal": _abs(signal), "background": _abs(background)}, init_from=_given(source_name),
            split=asdict(plan), max_events=max_events, lr=lr, backbone_lr=backbone_lr, frozen_part=frozen_part,
            pretraining_data=pretraining_events, pretraining_overlap=overlap,
            overlap=bool(overlap and overlap["overlap"]), data_schema=schema))


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

    cfg, plan = cfg or TrainConfig(), plan or BinarySplitPlan()
    lr, backbone_lr = learning_rates(cfg.optimizer, lr, backbone_lr)
    check_run_options(lr, backbone_lr, max_events, device)
    _check_strategy(strategy, init_from, "a jet-tagging run to take the jet backbone from")
    check_recipe(strategy, cfg.layer_decay, cfg.linear_probe)
    if cfg.augment:
        raise HepfmError("the hierarchical model takes no augmentation (its constituents would not follow)")
    check_sources(signal, background)
    source_name, init_from, parent = resolve_parent(init_from)
    if parent is not None and parent.task not in JET_PRETRAINING_TASKS:
        raise HepfmError(f"{source_name}: the hierarchical model takes its jet backbone from a jet-tagging run, "
                         f"this one was trained for {known(parent.task)}")
    options = dict(model_config or {})
    event_model = options.pop("event_model", "transformer") if model == "hierarchical" else model
    event_config = options.pop("event_config", options if model != "hierarchical" else {})
    if parent is not None:
        jet_model, jet_config = parent.model, parent.model_config
    else:
        jet_model, jet_config = options.pop("jet_model", "jet_transformer"), options.pop("jet_config", {})
    k = stored_constituents(signal)
    if stored_constituents(background) != k:
        raise HepfmError(f"{signal} and {background} keep different numbers of constituents per jet")
    run = Run(out, cfg, device, overwrite)
    for source in (signal, background):
        open_for_training(source, max_events)
    settings = {"command": "finetune", "hierarchical": True, "signal": _abs(signal), "background": _abs(background),
                "strategy": strategy, "init_from": _abs(init_from), "event_model": event_model,
                "event_config": event_config, "jet_model": jet_model, "jet_config": jet_config,
                "split": asdict(plan), "lr": lr, "backbone_lr": backbone_lr, "max_events": max_events}
    with run.guard():
        splits = binary_split(signal, background, plan, max_events, constituents=True)
        run.start()
        task = _binary_task()
        run.seed()
        net = create_model("hierarchical", task.n_outputs, event_model=event_model, event_config=event_config,
                           jet_model=jet_model, jet_config=jet_config, max_constituents=k)
        if strategy != "scratch":
            net.load_jet_backbone(load_model(init_from).state_dict())
        net.fit_scaling(splits["train"])
        groups = prepare(net, strategy, task.n_outputs, lr=lr, backbone_lr=backbone_lr, layer_decay=cfg.layer_decay)
        if cfg.linear_probe:
            run.probe(net, task, splits, groups, settings)
        result = run.fit(net, task, splits, groups, settings)
        return run.finish(net, task, result, splits, RunRecord(
            strategy=strategy, hierarchical=True, signal=str(signal), background=str(background),
            inputs=net.inputs, data_paths={"signal": _abs(signal), "background": _abs(background)},
            init_from=_given(source_name), split=asdict(plan), max_events=max_events, lr=lr,
            backbone_lr=backbone_lr, data_schema=data_schema(open_source(signal)[0])))


def evaluate_run(run: str | Path, signal: str | Path, background: str | Path, device: str = "auto",
                 max_events: int | None = None, allow_overlap: bool = False) -> dict:
    """Accuracy (threshold 0.5), ROC AUC and the ROC curve of a binary model on the held-out test split.

    The split is rebuilt from the plan saved with the model, so the test events are the ones it never saw
    when ``signal`` and ``background`` are the stores it was trained on. Test events that its pretrained
    backbone trained on are refused unless ``allow_overlap`` (then ``overlap`` is True in the result).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    check_run_options(max_events=max_events, device=device)
    net = load_model(resolve_model(run), distributed.resolve_device(device))
    meta = RunRecord.from_json(net.metadata, str(run))
    if meta.task != "binary":
        raise HepfmError(f"{run}: a {known(meta.task)} model; evaluate takes binary (fine-tuned) models")
    split = known(meta.split, {})
    plan = BinarySplitPlan(**{k: split[k] for k in ("test_fraction", "test_size", "split_seed") if k in split})
    trained_max_events = known(meta.max_events)
    test = binary_test_set(signal, background, plan, trained_max_events if max_events is None else max_events,
                           record=known(meta.pretraining_data), constituents=net.inputs != "objects")
    overlap = _overlap({"test": test}, str(known(meta.init_from)), allow_overlap, parts=("test",))
    scores = _binary_task().scores(predict(net, test.to(next(net.parameters()).device)))
    s, y = scores.cpu().numpy().astype(np.float64), test.y.numpy()
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    overlapping = bool(overlap and overlap["overlap"]) or bool(meta.overlap)
    # Held out only on the very events the split was planned on: the same stores and the same --max-events.
    # The paths as resolved when training (a model saved before they were recorded: as typed, from here).
    trained_on = known(meta.data_paths) or {"signal": _abs(known(meta.signal)),
                                            "background": _abs(known(meta.background))}
    same = (_abs(signal) == trained_on.get("signal") and _abs(background) == trained_on.get("background")
            and (max_events is None or max_events == trained_max_events))
    return {"accuracy": float(((s >= 0.5) == (y == 1)).mean()), "auc": float(roc_auc_score(y, s)),
            "n_test": len(y), "fpr": fpr, "tpr": tpr, "held_out": same and not overlapping,
            "overlap": overlapping, "strategy": known(meta.strategy)}
