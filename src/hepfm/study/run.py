"""Run a study: generate or reuse stores, pretrain (or load) backbones, then the grid of cells.

Layout of the output folder::

    DIR/stores/pretrain, DIR/stores/downstream      generated event stores (reused on rerun)
    DIR/pretrained/<task>/                          pretrained models (reused on rerun)
    DIR/cells/<task>/<size>/<strategy>/seed<k>/     one trained model per cell, with result.json,
                                                    test scores (scores.npy) and latents (latent.npy)
    DIR/failures.json                               cells that raised, with the error (retried on rerun)

Every cell evaluates on its task's one fixed test set (BinarySplitPlan.split_seed = 0 and the
config's test_size), so cells differ only by training size, strategy and seed. A finished cell has a
``result.json`` and is skipped on rerun; an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from hepfm.data.datasets import BinarySplitPlan, binary_test_set
from hepfm.errors import HepfmError
from hepfm.io.atomic import atomic_write_text
from hepfm.models.saving import CONFIG, load_model, read_config
from hepfm.study.config import STRATEGIES, StudyConfig, TaskSpec, pretraining_processes
from hepfm.train.checkpoint import CHECKPOINT
from hepfm.train.tasks import Task
from hepfm.train.trainer import TrainConfig, encode, predict

RESULT = "result.json"


@dataclass
class StudyState:
    """Where a study's pieces are and what has been done."""

    out: Path
    pretrained: dict[str, Path] = field(default_factory=dict)
    pretrain_time_s: dict[str, float] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)


def task_paths(cfg: StudyConfig, task: TaskSpec, out: Path) -> tuple[Path, Path]:
    """(signal, background) folders of a task."""
    if task.external:
        return Path(task.signal), Path(task.background)
    root = out / "stores" / "downstream"
    return root / task.signal, root / task.background


def cell_dir(out: Path, task: str, size: int, strategy: str, seed: int) -> Path:
    """Folder of one grid cell."""
    return out / "cells" / task / str(size) / strategy / f"seed{seed}"


def _write_json(path: Path, value) -> None:
    atomic_write_text(path, json.dumps(value, indent=1, sort_keys=True))


def generate_stores(cfg: StudyConfig, out: Path, console: Console, progress: bool) -> None:
    """Generate (or complete) the pretraining and downstream stores the study needs."""
    from hepfm.physics.generate import catalog_source, generate

    jobs = []
    if len(cfg.pretrained) < len(cfg.pretraining_tasks) and cfg.pretrain_data is None:
        jobs.append(("pretrain", pretraining_processes(), cfg.pretrain_events, cfg.generation_seed))
    if cfg.downstream_processes:
        # A different seed from the pretraining store, so fine-tuning never sees pretraining events.
        jobs.append(("downstream", cfg.downstream_processes, cfg.downstream_events, cfg.generation_seed + 1000))
    for name, processes, n, seed in jobs:
        console.print(f"[bold]event store {name}[/]: {', '.join(processes)} ({n} events each)")
        shard = max(1000, -(-n // 2))  # two shards per process, so two workers share even one process
        generate([catalog_source(p) for p in processes], out / "stores" / name, n, seed=seed, workers=cfg.workers,
                 shard_size=shard, progress=progress)


def pretrain_backbones(cfg: StudyConfig, state: StudyState, console: Console, progress: bool) -> None:
    """Pretrain each needed backbone, or use the configured or previously finished one."""
    from hepfm.train.workflows import pretrain

    for task in cfg.pretraining_tasks:
        if task in cfg.pretrained:
            state.pretrained[task] = Path(cfg.pretrained[task])
            state.pretrain_time_s[task] = read_config(cfg.pretrained[task]).get("training", {}).get("train_time_s",
                                                                                                      float("nan"))
            continue
        folder = state.out / "pretrained" / task
        if not ((folder / CONFIG).exists() and not (folder / CHECKPOINT).exists()):
            console.print(f"[bold]pretraining[/] {cfg.model} on {task}")
            spec = cfg.pretrain.with_overrides(cfg.pretrain_by_task.get(task, {}))
            data = cfg.pretrain_data or state.out / "stores" / "pretrain"
            pretrain(data, folder, task, model=cfg.model, model_config=cfg.model_options,
                     lr=spec.lr, max_events=cfg.pretrain_max_events,
                     cfg=TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, patience=spec.patience,
                                     optimizer=spec.optimizer, seed=0, progress=progress))
        meta = read_config(folder)
        state.pretrained[task] = folder
        state.pretrain_time_s[task] = meta["training"]["train_time_s"]
        console.print(f"  {task}: held-out {meta['training']['test']}, {meta['training']['train_time_s']:.0f} s")


def run_cell(cfg: StudyConfig, state: StudyState, task: TaskSpec, size: int, strategy: str, seed: int,
             test, progress: bool) -> dict:
    """Train and evaluate one cell; returns (and saves) its result."""
    from hepfm.eval.metrics import accuracy, roc_auc
    from hepfm.train.workflows import finetune

    folder = cell_dir(state.out, task.name, size, strategy, seed)
    pre_task, how = STRATEGIES[strategy]
    spec = cfg.finetune.for_size(size)
    signal, background = task_paths(cfg, task, state.out)
    done = (folder / CONFIG).exists() and not (folder / CHECKPOINT).exists()
    if not done:
        finetune(signal, background, folder, how, init_from=state.pretrained.get(pre_task), model=cfg.model,
                 model_config=cfg.model_options, lr=spec.lr, backbone_lr=spec.backbone_lr,
                 plan=BinarySplitPlan(train_size=size, test_size=cfg.test_size, seed=seed),
                 cfg=TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, patience=spec.patience,
                                 optimizer=spec.optimizer, seed=seed, progress=progress, tensorboard=False))
    model = load_model(folder)
    scores = Task("binary", ["background", "signal"]).scores(predict(model, test)).numpy()
    y = test.y.numpy()
    np.save(folder / "scores.npy", np.stack([y, scores]).astype(np.float32))  # [labels; scores]
    if size == (cfg.cka_size or min(cfg.sizes)):
        np.save(folder / "latent.npy", encode(model, test.subset(torch.arange(min(len(test), cfg.cka_events))))
                .numpy().astype(np.float32))
    training = model.metadata["training"]
    result = {"task": task.name, "size": size, "strategy": strategy, "seed": seed,
              "accuracy": accuracy(y, scores), "auc": float(roc_auc(y, scores)),
              "train_time_s": training["train_time_s"], "epochs_run": training["epochs_run"],
              "best_epoch": training["best_epoch"], "n_test": len(y)}
    _write_json(folder / RESULT, result)
    return result


def run_study(cfg: StudyConfig, out: str | Path, progress: bool = True, console: Console | None = None) -> StudyState:
    """Run (or resume) the whole study into ``out``; returns its state. Failed cells are listed, not fatal."""
    console = console or Console()
    state = StudyState(out=Path(out))
    state.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    generate_stores(cfg, state.out, console, progress)
    pretrain_backbones(cfg, state, console, progress)
    n_cells = len(cfg.tasks) * len(cfg.sizes) * len(cfg.strategies) * cfg.seeds
    k = 0
    for task in cfg.tasks:
        signal, background = task_paths(cfg, task, state.out)
        test = binary_test_set(signal, background, BinarySplitPlan(test_size=cfg.test_size))
        # Interleave the test classes so a latent subset (CKA) holds both.
        order = torch.argsort(torch.arange(len(test)) % (len(test) // 2), stable=True)
        test = test.subset(order)
        for size in cfg.sizes:
            for strategy in cfg.strategies:
                for seed in range(cfg.seeds):
                    k += 1
                    folder = cell_dir(state.out, task.name, size, strategy, seed)
                    if (folder / RESULT).exists():
                        continue
                    label = f"[{k}/{n_cells}] {task.name} size {size} {strategy} seed {seed}"
                    started = time.perf_counter()
                    try:
                        r = run_cell(cfg, state, task, size, strategy, seed, test, progress=False)
                    except (HepfmError, RuntimeError, ValueError) as exc:
                        state.failures.append({"cell": label, "error": str(exc), "trace": traceback.format_exc()})
                        console.print(f"{label}: [red]FAILED[/] {exc}")
                        continue
                    console.print(f"{label}: accuracy {r['accuracy']:.4f}, AUC {r['auc']:.4f}, "
                                  f"{r['epochs_run']} epochs, {time.perf_counter() - started:.0f} s")
    _write_json(state.out / "failures.json", state.failures)
    _write_json(state.out / "timing.json", {"pretrain_time_s": state.pretrain_time_s,
                                             "study_wall_time_s": time.perf_counter() - t0})
    return state
