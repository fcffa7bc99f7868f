"""Pretrain, fine-tune and evaluate: the library functions behind ``hepfm pretrain|finetune|evaluate``.

Each run writes one folder: ``model.safetensors`` + ``config.json`` (the model, loadable with
:func:`hepfm.load`), ``history.csv``, ``tensorboard/`` and, while running, ``checkpoint.pt``. Rerunning
the same command on a folder with a checkpoint resumes; a folder holding a finished model is refused
unless ``overwrite`` is set.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from hepfm.data.datasets import BinarySplitPlan, binary_split, binary_test_set
from hepfm.data.features import fit_scaling
from hepfm.data.streaming import StreamingEvents, pretraining_data
from hepfm.errors import HepfmError
from hepfm.models.base import Backbone, count_parameters
from hepfm.models.registry import create_model
from hepfm.models.saving import CONFIG, WEIGHTS, load_model, read_config, save_model
from hepfm.train import distributed
from hepfm.train.checkpoint import CHECKPOINT, remove_checkpoint
from hepfm.train.strategies import DEFAULT_BACKBONE_LR, DEFAULT_LR, STRATEGIES, prepare
from hepfm.train.tasks import Task
from hepfm.train.trainer import TrainConfig, evaluate, fit, predict


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise HepfmError(f"{out}: exists and is not a folder")
    if (out / CONFIG).exists() and not (out / CHECKPOINT).exists():
        if not overwrite:
            raise HepfmError(f"{out}: already holds a trained model; choose another --out or pass --overwrite")
        for name in (CONFIG, WEIGHTS, "history.csv"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "tensorboard", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _fit_scaling(model: Backbone, train) -> None:
    if isinstance(train, StreamingEvents):
        train = train.sample()  # a bounded, seeded sample: the stream does not fit in memory
    mean, std = fit_scaling(train.x.numpy(), train.n_objects.numpy())
    model.scaling.set(mean, std)


def _finish(model, task: Task, result, splits, cfg: TrainConfig, out: Path, ctx, metadata: dict) -> dict:
    test = evaluate(model, task, splits["test"].to(ctx.device), cfg.eval_batch_size) if len(splits["test"]) else {}
    summary = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
               "stopped_early": result.stopped_early, "train_time_s": round(result.train_time_s, 3),
               "n_train": len(splits["train"]), "n_val": len(splits["val"]), "n_test": len(splits["test"]),
               "test": test, "parameters": count_parameters(model)}
    if ctx.is_main:
        save_model(model, out, {**metadata, "task": task.name, "names": list(task.names),
                                "training": {**summary, "config": asdict(cfg), "world_size": ctx.world}})
        remove_checkpoint(out)
    ctx.barrier()
    return summary


def pretrain(data: str | Path, out: str | Path, task: str = "multiclass", model: str = "graphnet",
             model_config: dict | None = None, cfg: TrainConfig | None = None, lr: float = DEFAULT_LR,
             init_from: str | Path | None = None, split_seed: int = 0, max_events: int | None = None,
             device: str = "auto", overwrite: bool = False, stream: bool | None = None) -> dict:
    """Pretrain a backbone on a generated store (multiclass over its processes, or the 41 truth labels).

    ``stream``: read the training split from disk through a shuffle buffer instead of holding it in memory;
    None decides by the store's size (see :func:`hepfm.data.streaming.pretraining_data`).
    """
    cfg, out = cfg or TrainConfig(), Path(out)
    _prepare_out(out, overwrite)
    ctx = distributed.setup(device)
    splits, names, loading = pretraining_data(data, task, split_seed, max_events, stream, ctx, out,
                                              resume=(out / CHECKPOINT).exists())
    task_ = Task(task, names)
    torch.manual_seed(cfg.seed)
    if init_from is not None:
        net = load_model(init_from)
        meta = net.metadata
        if meta.get("task") != task or list(meta.get("names", [])) != names:
            raise HepfmError(f"{init_from}: pretrained for {meta.get('task')} over {meta.get('names')}, but this "
                             f"task is {task} over {names}; the label sets must match to continue pretraining")
    else:
        net = create_model(model, task_.n_outputs, **(model_config or {}))
        _fit_scaling(net, splits["train"])
    groups = prepare(net, "scratch", task_.n_outputs, lr=lr)
    result = fit(net, task_, splits["train"], splits["val"], groups, cfg, out, ctx)
    summary = _finish(net, task_, result, splits, cfg, out, ctx,
                      {"strategy": "pretrain", "data": str(data), "split_seed": split_seed, "max_events": max_events,
                       "init_from": str(init_from) if init_from else None, "data_loading": loading})
    return {**summary, "stream": loading["stream"]}


def finetune(signal: str | Path, background: str | Path, out: str | Path, strategy: str = "finetune",
             init_from: str | Path | None = None, model: str = "graphnet", model_config: dict | None = None,
             plan: BinarySplitPlan | None = None, cfg: TrainConfig | None = None, lr: float = DEFAULT_LR,
             backbone_lr: float = DEFAULT_BACKBONE_LR, frozen_part: str = "head", max_events: int | None = None,
             device: str = "auto", overwrite: bool = False) -> dict:
    """Train a binary signal-vs-background classifier: from scratch, fine-tuned, or on a frozen backbone."""
    cfg, plan, out = cfg or TrainConfig(), plan or BinarySplitPlan(), Path(out)
    if strategy not in STRATEGIES:
        raise HepfmError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if strategy in ("finetune", "frozen") and init_from is None:
        raise HepfmError(f"--strategy {strategy} needs a pretrained model: --from RUN")
    if init_from is not None:
        read_config(init_from)  # fail on an unreadable model before reading any data
    _prepare_out(out, overwrite)
    ctx = distributed.setup(device)
    splits = binary_split(signal, background, plan, max_events)
    task = Task("binary", ["background", "signal"])
    torch.manual_seed(cfg.seed)
    if strategy == "scratch":
        if init_from is not None:  # same architecture as the pretrained model, fresh weights
            arch = read_config(init_from)["architecture"]
            model, model_config = arch["model"], arch.get("config", {})
        net = create_model(model, task.n_outputs, **(model_config or {}))
        _fit_scaling(net, splits["train"])
    else:
        net = load_model(init_from)
    groups = prepare(net, strategy, task.n_outputs, lr=lr, backbone_lr=backbone_lr, frozen_part=frozen_part)
    result = fit(net, task, splits["train"], splits["val"], groups, cfg, out, ctx)
    return _finish(net, task, result, splits, cfg, out, ctx,
                   {"strategy": strategy, "signal": str(signal), "background": str(background),
                    "init_from": str(init_from) if init_from else None, "split": asdict(plan),
                    "max_events": max_events, "lr": lr, "backbone_lr": backbone_lr, "frozen_part": frozen_part})


def evaluate_run(run: str | Path, signal: str | Path, background: str | Path, device: str = "auto",
                 max_events: int | None = None) -> dict:
    """Accuracy (threshold 0.5), ROC AUC and the ROC curve of a binary model on the held-out test split.

    The split is rebuilt from the plan saved with the model, so the test events are the ones it never saw
    when ``signal`` and ``background`` are the stores it was trained on.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    net = load_model(run, distributed.resolve_device(device))
    meta = net.metadata
    if meta.get("task") != "binary":
        raise HepfmError(f"{run}: a {meta.get('task')} model; evaluate takes binary (fine-tuned) models")
    split = meta.get("split", {})
    plan = BinarySplitPlan(**{k: split[k] for k in ("test_fraction", "test_size", "split_seed") if k in split})
    test = binary_test_set(signal, background, plan, meta.get("max_events") if max_events is None else max_events)
    scores = Task("binary", ["background", "signal"]).scores(predict(net, test.to(next(net.parameters()).device)))
    s, y = scores.cpu().numpy().astype(np.float64), test.y.numpy()
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    same = str(signal) == meta.get("signal") and str(background) == meta.get("background")
    return {"accuracy": float(((s >= 0.5) == (y == 1)).mean()), "auc": float(roc_auc_score(y, s)),
            "n_test": len(y), "fpr": fpr, "tpr": tpr, "held_out": same, "strategy": meta.get("strategy")}
