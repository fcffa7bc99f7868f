"""Run a study: generate or reuse stores, pretrain (or load) backbones, tune each strategy's learning rate,
then train the grid of cells.

The output folder's files and folders are named by :class:`hepfm.study.layout.StudyLayout`.

With ``jobs > 1`` the grid trains in that many processes at once, each with its share of the cores, in three
waves: every learning-rate point of every tuning grid, then each (task, strategy)'s tuning choice and seed 0
(its tuning run), then every other seed. A run's result does not depend on which process trained it.

Every cell evaluates on its task's one fixed test set (BinarySplitPlan.split_seed = 0 and the config's
test_size). When the pool holds them, seed k trains and validates on its own block of events
(BinarySplitPlan.block = k), so seeds never share an event; otherwise seeds draw random subsets and
the results say so (``disjoint_events``). Seed 0's run at the chosen rates is its tuning run. After
training, a model whose validation scores depend on the object multiplicity alone is collapsed and the
cell retries the next-best rates of its tuning ranking (at most MAX_RETRIES; never judged on the test set);
if all collapse, the cell keeps the chosen rates' model. The final model's test-set check is reported and
a collapsed model is marked. Finished tuning points and cells are skipped on rerun; an
interrupted run resumes from its checkpoint.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from hepfm.data.datasets import BinarySplitPlan, binary_split, binary_test_set
from hepfm.data.pretraining import JET_PRETRAINING_TASKS, MULTI_TASK
from hepfm.errors import HepfmError, disk_error
from hepfm.eval.collapse import collapse_check
from hepfm.eval.metrics import accuracy, accuracy_error, auc_error, roc_auc
from hepfm.executors import LOCAL, Executor, run_tasks, session, task_threads
from hepfm.io.atomic import atomic_write_text
from hepfm.io.locking import exclusive_lock
from hepfm.models.batched import encode, predict
from hepfm.models.pretrained import resolve as resolve_model
from hepfm.models.record import known as recorded_or
from hepfm.models.saving import CONFIG, load_model, read_record
from hepfm.study.config import (
    HIERARCHICAL,
    STRATEGIES,
    StudyConfig,
    TaskSpec,
    block_events,
    disjoint_seeds,
)
from hepfm.study.layout import StudyLayout
from hepfm.train import defaults
from hepfm.train.checkpoint import CHECKPOINT
from hepfm.train.tasks import Task
from hepfm.train.trainer import TrainConfig

TUNING_SEED = 0  # the seed whose events and initialisation choose the learning rates
MAX_RETRIES = 2  # a collapsed cell tries at most this many next-best points of its ranking


@dataclass
class StudyState:
    """Where a study's pieces are and what has been done."""

    out: Path
    pretrained: dict[str, Path] = field(default_factory=dict)
    pretrain_time_s: dict[str, float] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)

    @property
    def layout(self) -> StudyLayout:
        """The study folder's file names."""
        return StudyLayout(self.out)


def task_paths(cfg: StudyConfig, task: TaskSpec, out: Path) -> tuple[Path, Path]:
    """(signal, background) folders of a task."""
    if task.external:
        return Path(task.signal), Path(task.background)
    root = StudyLayout(out).store("downstream")
    return root / task.signal, root / task.background


def _write_json(path: Path, value) -> None:
    atomic_write_text(path, json.dumps(value, indent=1, sort_keys=True))


def generate_stores(cfg: StudyConfig, out: Path, console: Console, progress: bool,
                    executor: Executor = LOCAL) -> None:
    """Generate (or complete) the pretraining and downstream stores the study needs."""
    from hepfm.io.generate import catalog_source, generate

    jobs = []
    if len(cfg.pretrained) < len(cfg.pretraining_tasks) and cfg.pretrain_data is None:
        jobs.append(("pretrain", cfg.pretrain_processes, cfg.pretrain_events, cfg.generation_seed))
    if cfg.downstream_processes:
        # A different seed from the pretraining store, so fine-tuning never sees pretraining events.
        jobs.append(("downstream", cfg.downstream_processes, cfg.downstream_events, cfg.generation_seed + 1000))
    for name, processes, n, seed in jobs:
        console.print(f"[bold]event store {name}[/]: {', '.join(processes)} ({n} events each)")
        shard = max(1000, -(-n // 4))  # four shards per process, so workers share even one process
        generate([catalog_source(p) for p in processes], StudyLayout(out).store(name), n, seed=seed,
                 workers=cfg.workers, shard_size=shard, progress=progress, constituents=cfg.constituents,
                 executor=executor)


def pretrain_backbones(cfg: StudyConfig, state: StudyState, console: Console, progress: bool) -> None:
    """Pretrain each needed backbone, or use the configured or previously finished one."""
    from hepfm.train.workflows import pretrain

    for task in cfg.pretraining_tasks:
        if task in cfg.pretrained:
            state.pretrained[task] = resolve_model(cfg.pretrained[task])
            training = recorded_or(read_record(state.pretrained[task]).training, {})
            state.pretrain_time_s[task] = training.get("train_time_s", float("nan"))
            continue
        folder = state.layout.pretrained(task)
        if not ((folder / CONFIG).exists() and not (folder / CHECKPOINT).exists()):
            console.print(f"[bold]pretraining[/] {cfg.jet_model if task == 'jet-tagging' else cfg.model} on {task}")
            spec = cfg.pretrain.with_overrides(cfg.pretrain_by_task.get(task, {}))
            data = cfg.pretrain_data or state.layout.store("pretrain")
            masked = cfg.masked if task == "masked" else {"regress": False}
            jets = task in JET_PRETRAINING_TASKS  # the hierarchical strategies' jet backbone
            pretrain(data, folder, task, model=cfg.jet_model if jets else cfg.model,
                     model_config=None if jets else cfg.model_options,
                     lr=spec.lr, max_events=cfg.pretrain_max_events, device=cfg.device, regress=masked["regress"],
                     heads=cfg.multi_heads if task == MULTI_TASK else None,
                     cfg=spec.train_config(seed=0, progress=progress, bf16=cfg.bf16,
                                           **({"augment": tuple(masked["augment"])} if masked.get("augment") else {})))
        training = read_record(folder).training
        state.pretrained[task] = folder
        state.pretrain_time_s[task] = training["train_time_s"]
        console.print(f"  {task}: held-out {training['test']}, {training['train_time_s']:.0f} s")
        if task == "multilabel" and not (folder / StudyLayout.QUALITY).exists():
            quality = multilabel_backbone_quality(folder, cfg.pretrain_data or state.layout.store("pretrain"),
                                                  cfg.pretrain_max_events)
            _write_json(folder / StudyLayout.QUALITY, quality)
            console.print(f"  multilabel: label accuracy {quality['label_accuracy']:.4f} vs "
                          f"{quality['all_absent_accuracy']:.4f} predicting every flag absent")


#: Short names of recipe settings in tuning-point folder names (other settings go by their own name).
RECIPE_SHORT = {"weight_decay": "wd", "ema_decay": "ema", "layer_decay": "ld", "linear_probe": "lp"}


def _value_name(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def point_name(lr: float, backbone_lr: float | None, recipe: dict | None = None) -> str:
    """Folder name of one tuning point: its learning rate(s) and the recipe settings it changes."""
    name = f"lr{lr:g}" + ("" if backbone_lr is None else f"_bb{backbone_lr:g}")
    return name + "".join(f"_{RECIPE_SHORT.get(k, k)}{_value_name(v)}" for k, v in (recipe or {}).items())


def _plan(cfg: StudyConfig, size: int, seed: int, disjoint: bool) -> BinarySplitPlan:
    # Disjoint: seed k trains and validates on block k of the pool (never another seed's events).
    return BinarySplitPlan(train_size=size, test_size=cfg.test_size, seed=seed, block=seed if disjoint else None)


def _train(cfg: StudyConfig, state: StudyState, task: TaskSpec, size: int, strategy: str, seed: int, lr: float,
           backbone_lr: float | None, folder: Path, disjoint: bool, progress: bool, recipe: dict | None = None) -> None:
    """Train one run into ``folder`` unless it is finished there (an interrupted one resumes); ``recipe``: the
    settings a tuning point changes."""
    from hepfm.train.workflows import finetune

    spec = cfg.finetune.for_cell(size, strategy)
    if (folder / CONFIG).exists() and not (folder / CHECKPOINT).exists():
        _check_finished(folder, spec, seed, lr, recipe)
        return
    pre_task, how = STRATEGIES[strategy]
    signal, background = task_paths(cfg, task, state.out)
    model, options, init_from = cfg.model, cfg.model_options, state.pretrained.get(pre_task)
    if strategy in HIERARCHICAL and init_from is None:
        # The jet backbone from scratch: the pretrained one's architecture when there is one, else jet_model.
        init_from = state.pretrained.get("jet-tagging")
        if init_from is None:
            model, options = "hierarchical", {"event_model": cfg.model, "event_config": cfg.model_options,
                                              "jet_model": cfg.jet_model}
    finetune(signal, background, folder, how, init_from=init_from, model=model, model_config=options, lr=lr,
             backbone_lr=defaults.BACKBONE_LR if backbone_lr is None else backbone_lr,
             plan=_plan(cfg, size, seed, disjoint), device=cfg.device,
             cfg=cell_config(spec, seed, progress, cfg.bf16, recipe))


def cell_config(spec, seed: int, progress: bool = False, bf16: bool | None = None,
                recipe: dict | None = None) -> TrainConfig:
    """The TrainConfig of one cell or tuning run: the configuration's settings with a tuning point's ``recipe``,
    the cell's seed, no TensorBoard unless the configuration asks for it."""
    return TrainConfig(**{"tensorboard": False, **spec.train, **(recipe or {}), "seed": seed, "progress": progress,
                          "bf16": bf16})


def _check_finished(folder: Path, spec, seed: int, lr: float, recipe: dict | None = None) -> None:
    """Refuse to reuse a finished run trained with other settings than the configuration's (silently mixing
    protocols in one table is worse than an error)."""
    record = read_record(folder)
    done = record.training["config"]
    resolved = asdict(cell_config(spec, seed, recipe=recipe))
    # The settings that change what a run computes; a setting an older run did not record had its default.
    keys = ["epochs", "batch_size", "patience", "optimizer", "seed",
            *(k for k in (*spec.train, *(recipe or {})) if k not in RESULT_NEUTRAL)]
    want = {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items() if k in keys}
    defaults_ = asdict(TrainConfig())
    differ = [f"{k} {done.get(k, defaults_[k])} (configuration: {v})" for k, v in want.items()
              if _recorded(done.get(k, defaults_[k])) != v]
    if not math.isclose(recorded_or(record.lr, lr), lr):
        differ.append(f"lr {recorded_or(record.lr)} (configuration: {lr})")
    if differ:
        raise HepfmError(f"{folder}: finished with other settings than this configuration's: {', '.join(differ)}; "
                         "run the changed configuration into a new study folder")


#: TrainConfig settings that do not change what a run computes (a finished run is reused whatever they were).
RESULT_NEUTRAL = ("progress", "tensorboard", "stop_after_batches", "checkpoint_every", "compile", "eval_batch_size",
                  "read_ahead", "cache_frozen", "bf16")


def _recorded(value):
    return list(value) if isinstance(value, tuple) else value


def run_summary(folder: Path) -> dict:
    """Validation scores at the restored (best) epoch, epochs, whether the epoch cap ended training, steps."""
    from hepfm.study.efficiency import read_history

    training = read_record(folder).training
    best = [r for r in read_history(folder / "history.csv") if r["epoch"] == training["best_epoch"]]
    row = best[-1] if best else {}
    batch = training["config"]["batch_size"]
    return {"val_loss": row.get("val_loss", math.inf), "val_accuracy": row.get("val_accuracy"),
            "val_auc": row.get("val_auc"), "epochs_run": training["epochs_run"], "best_epoch": training["best_epoch"],
            "epoch_cap_hit": not training["stopped_early"], "train_time_s": training["train_time_s"],
            "n_train": training["n_train"], "batch_size": batch,
            "steps_per_epoch": math.ceil(training["n_train"] / batch), "n_val": training["n_val"]}


def first_points(cfg: StudyConfig, size: int, strategy: str) -> list[tuple[float, float | None]]:
    """(lr, backbone_lr) points a strategy's tuning tries first (a head on a frozen backbone: frozen_lr_grid)."""
    how = STRATEGIES[strategy][1]
    spec = cfg.finetune.for_cell(size, strategy)
    return spec.first_points(how, head_only=how == "frozen" and strategy not in HIERARCHICAL)


def _ranked(points: list[dict]) -> list[dict]:
    """Tuning points best first: by validation loss, collapsed or diverged points last."""
    return sorted(points, key=lambda p: (p["collapsed"], p["val_loss"]))


def recipe_points(spec, how: str, key: str, values: tuple, points: list[dict]) -> list[tuple]:
    """(lr, backbone_lr, recipe) points of one recipe axis: its values at the best point so far (a value equal
    to that point's own is not trained again)."""
    best = _ranked(points)[0]
    base = dict(best.get("recipe", {}))
    current = base.get(key, getattr(cell_config(spec, 0), key))
    return [(best["lr"], best["backbone_lr"], {**base, key: v}) for v in values if v != current]


def check_grid(cfg: StudyConfig, task: str, size: int, strategy: str, tuning: dict, where: Path) -> None:
    """Refuse a tuning (or a cell trained at its choice) made on other points than the configuration's: its
    first points, fine-tuning's other backbone ratios at the best of them, then each recipe axis at the best
    point before it (replayed from the recorded validation losses); fixed rates count as a grid."""
    how = STRATEGIES[strategy][1]
    spec = cfg.finetune.for_cell(size, strategy)
    first = {point_name(lr, bb) for lr, bb in first_points(cfg, size, strategy)}
    tried = {p["point"] for p in tuning["grid"]}
    wanted = set(first)
    firsts = [p for p in tuning["grid"] if p["point"] in first]
    if firsts:
        wanted |= {point_name(lr, bb) for lr, bb in spec.second_points(how, _ranked(firsts)[0]["lr"])}
        for key, values in spec.recipe_axes(how):
            so_far = [p for p in tuning["grid"] if p["point"] in wanted]
            wanted |= {point_name(*point) for point in recipe_points(spec, how, key, values, so_far)}
    if tried != wanted or tuning.get("tuned", spec.tuned) != spec.tuned:
        raise HepfmError(f"{where}: this study folder {'tuned' if tuning.get('tuned', True) else 'trained'} "
                         f"{task} {size} {strategy} at {', '.join(sorted(tried))}; the configuration asks for "
                         f"{', '.join(sorted(wanted))}; use another output folder, or delete that strategy's "
                         "tuning and cell folders to retune")


def tune(cfg: StudyConfig, state: StudyState, task: TaskSpec, size: int, strategy: str, disjoint: bool,
         progress: bool, console: Console | None = None) -> dict:
    """Choose a strategy's learning rate(s) by validation loss (seed TUNING_SEED); cached in tuning.json.

    Every point is trained on the tuning seed's training and validation events; points whose validation
    scores collapsed onto the object multiplicity, or whose training diverged, rank after all others. The
    ranking is the order in which a collapsed cell retries its rates.
    """
    folder = state.layout.tuning(task.name, size, strategy)
    how = STRATEGIES[strategy][1]
    spec = cfg.finetune.for_cell(size, strategy)
    if (folder / StudyLayout.TUNING).exists():
        cached = json.loads((folder / StudyLayout.TUNING).read_text())
        check_grid(cfg, task.name, size, strategy, cached, folder / StudyLayout.TUNING)
        return cached
    signal, background = task_paths(cfg, task, state.out)
    val = None
    points: list[dict] = []

    def run_point(lr: float, backbone_lr: float | None, recipe: dict | None = None) -> None:
        nonlocal val
        name = point_name(lr, backbone_lr, recipe)
        entry = {"point": name, "lr": lr, "backbone_lr": backbone_lr, "run": str(Path("tuning", task.name, str(size),
                                                                                       strategy, name))}
        if recipe:
            entry["recipe"] = recipe
        try:
            _train(cfg, state, task, size, strategy, TUNING_SEED, lr, backbone_lr, folder / name, disjoint, progress,
                   recipe)
        except HepfmError as exc:
            if "non-finite" not in str(exc):
                raise  # not the rate's fault: the cell fails and the point is retried on rerun
            # A diverging rate is a result of the grid: ranked last, not fatal.
            points.append({**entry, "error": str(exc), "val_loss": math.inf, "collapsed": True})
            return
        if val is None:
            val = binary_split(signal, background, _plan(cfg, size, TUNING_SEED, disjoint),
                               constituents=strategy in HIERARCHICAL)["val"]
        scores = Task("binary", ["background", "signal"]).scores(predict(load_model(folder / name), val)).numpy()
        check = collapse_check(scores, val.n_objects.numpy())
        points.append({**entry, **run_summary(folder / name), "collapsed": check["collapsed"], "val_collapse": check})
        if console is not None:
            p = points[-1]
            console.print(f"  tune {task.name} {size} {strategy} {name}: val loss {p['val_loss']:.4f}, "
                          f"accuracy {p['val_accuracy']:.4f}{' COLLAPSED' if p['collapsed'] else ''}")

    for lr, bb in first_points(cfg, size, strategy):
        run_point(lr, bb)
    for lr, bb in spec.second_points(how, _ranked(points)[0]["lr"]):
        run_point(lr, bb)
    for key, values in spec.recipe_axes(how):  # one axis at a time, each at the best point before it
        for lr, bb, recipe in recipe_points(spec, how, key, values, points):
            run_point(lr, bb, recipe)
    ranking = [p["point"] for p in _ranked(points)]
    result = {"task": task.name, "size": size, "strategy": strategy, "tuned": spec.tuned, "seed": TUNING_SEED,
              "criterion": "validation loss (collapsed or diverged points last)", "grid": points,
              "ranking": ranking, "chosen": ranking[0]}
    _write_json(folder / StudyLayout.TUNING, result)
    return result


def _predictions(model, test) -> np.ndarray:
    return Task("binary", ["background", "signal"]).scores(predict(model, test)).numpy()


def multilabel_backbone_quality(folder: Path, data: Path, max_events: int | None) -> dict:
    """A multilabel backbone's binary flags on its held-out pretraining events against trivial predictors."""
    from hepfm.data.datasets import pretraining_split
    from hepfm.eval.metrics import multilabel_quality
    from hepfm.physics.truth import LABEL_KINDS, LABEL_NAMES

    splits, _ = pretraining_split(data, "multilabel", 0, max_events=max_events)
    model = load_model(folder)
    scores = Task("multilabel", list(LABEL_NAMES)).scores(predict(model, splits["test"])).numpy()
    binary = np.array([k != "regression" for k in LABEL_KINDS])
    names = [n for n, b in zip(LABEL_NAMES, binary, strict=True) if b]
    return multilabel_quality(scores[:, binary], splits["test"].y.numpy()[:, binary],
                              splits["train"].y.numpy()[:, binary], names)


class TestSets:
    """A task's one test set, read when first needed, once per kind of input (objects; objects with their
    jets' constituents). Both hold the same events in the same order, so every strategy's scores pair event
    by event."""

    def __init__(self, cfg: StudyConfig, task: TaskSpec, out: Path):
        self.paths, self.plan, self.sets = task_paths(cfg, task, out), BinarySplitPlan(test_size=cfg.test_size), {}

    def __call__(self, constituents: bool = False):
        if constituents not in self.sets:
            test = binary_test_set(*self.paths, self.plan, constituents=constituents)
            # Interleave the test classes so a latent subset (CKA) holds both.
            order = torch.argsort(torch.arange(len(test)) % (len(test) // 2), stable=True)
            self.sets[constituents] = test.subset(order)
        return self.sets[constituents]


def run_cell(cfg: StudyConfig, state: StudyState, task: TaskSpec, size: int, strategy: str, seed: int,
             test_sets: TestSets, disjoint: bool, progress: bool, console: Console | None = None) -> dict:
    """Train and evaluate one cell with its tuned rates; a collapsed model is retried at the next-best rates."""
    test = test_sets(constituents=strategy in HIERARCHICAL)
    tuning = tune(cfg, state, task, size, strategy, disjoint, progress, console)
    folder = state.layout.cell(task.name, size, strategy, seed)
    points = {p["point"]: p for p in tuning["grid"]}
    candidates = [name for name in tuning["ranking"] if "error" not in points[name]][:1 + MAX_RETRIES]
    if not candidates:
        raise HepfmError(f"{task.name} size {size} {strategy}: every learning rate of the grid diverged")
    y = test.y.numpy()
    # Retries are decided on this seed's validation events (never on the test set); the test-set check of
    # the final model is reported.
    signal, background = task_paths(cfg, task, state.out)
    val = binary_split(signal, background, _plan(cfg, size, seed, disjoint),
                       constituents=strategy in HIERARCHICAL)["val"]
    attempts = []
    for name in candidates:
        p = points[name]
        # The tuning seed's run at a point is this seed's run: reuse it instead of training it again.
        run = state.out / p["run"] if seed == TUNING_SEED else folder / name
        _train(cfg, state, task, size, strategy, seed, p["lr"], p["backbone_lr"], run, disjoint, progress,
               p.get("recipe"))
        model = load_model(run)
        check = collapse_check(_predictions(model, val), val.n_objects.numpy())
        attempts.append({"point": name, "run": str(run.relative_to(state.out)), "model": model,
                         "val_collapse": check})
        if not check["collapsed"]:
            break
    final = next((a for a in attempts if not a["val_collapse"]["collapsed"]), attempts[0])
    folder.mkdir(parents=True, exist_ok=True)
    model = final["model"]
    scores = _predictions(model, test)
    final["collapse"] = collapse_check(scores, test.n_objects.numpy())
    np.save(folder / StudyLayout.SCORES, np.stack([y, scores]).astype(np.float32))  # [labels; scores]
    if size == (cfg.cka_size or min(cfg.sizes)):
        np.save(folder / StudyLayout.LATENT, encode(model, test.subset(torch.arange(min(len(test), cfg.cka_events))))
                .numpy().astype(np.float32))
    p = points[final["point"]]
    acc, auc = accuracy(y, scores), roc_auc(y, scores)
    n_pos = int(y.sum())
    result = {"task": task.name, "size": size, "strategy": strategy, "seed": seed,
              "accuracy": acc, "accuracy_err": accuracy_error(acc, len(y)),
              "auc": auc, "auc_err": auc_error(auc, n_pos, len(y) - n_pos), "n_test": len(y),
              "lr": p["lr"], "backbone_lr": p["backbone_lr"], **({"recipe": p["recipe"]} if "recipe" in p else {}),
              "point": final["point"], "tuned": tuning["tuned"],
              "chosen": tuning["chosen"],
              "run": final["run"], **run_summary(state.out / final["run"]),
              "collapsed": final["collapse"]["collapsed"], "collapse": final["collapse"],
              "validation_collapse": final["val_collapse"],
              "retries": [{"point": a["point"], "collapsed_on_validation": a["val_collapse"]["collapsed"]}
                          for a in attempts[1:]],
              "disjoint_events": disjoint, "tuning": {k: tuning[k] for k in ("grid", "ranking", "chosen", "seed")}}
    _write_json(folder / StudyLayout.RESULT, result)
    return result




def _pool_size(cfg: StudyConfig, task: TaskSpec, out: Path) -> int:
    """Events per class available to a task (the smaller class)."""
    from hepfm.data.datasets import open_source

    counts = []
    for path in task_paths(cfg, task, out):
        store, processes = open_source(path)
        c = store.counts()
        counts.append(sum(c[p] for p in (processes or store.process_names)))
    return min(counts)


@dataclass
class CellFilter:
    """A part of the grid to run (None: every value), so that parts can run in parallel processes or jobs."""

    tasks: list[str] | None = None
    sizes: list[int] | None = None
    strategies: list[str] | None = None
    seeds: list[int] | None = None

    def tag(self) -> str:
        """A file-name tag naming the part (for its own failures file)."""
        parts = [",".join(map(str, v)) for v in (self.tasks, self.sizes, self.strategies) if v]
        if self.seeds:
            parts.append("seed" + ",".join(map(str, self.seeds)))
        return "-".join(parts) or "all"

    def check(self, cfg: StudyConfig) -> None:
        """Refuse values the configuration does not have."""
        for name, chosen, known in (("task", self.tasks, [t.name for t in cfg.tasks]), ("size", self.sizes, cfg.sizes),
                                    ("strategy", self.strategies, cfg.strategies),
                                    ("seed", self.seeds, list(range(cfg.seeds)))):
            unknown = [v for v in chosen or [] if v not in known]
            if unknown:
                raise HepfmError(f"{cfg.source}: no {name} {', '.join(map(str, unknown))} in this study "
                                 f"(it has {', '.join(map(str, known))})")


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_part(cfg: StudyConfig, out: Path, part: CellFilter, threads: int | None) -> list[dict]:
    """One process's share of a parallel study: a part of the grid with ``threads`` PyTorch threads (None: the
    Dask worker's cores per task)."""
    torch.set_num_threads(threads or task_threads())
    return run_study(cfg, out, progress=False, only=part, prepared=True).failures


def _run_point(cfg: StudyConfig, out: Path, task_name: str, size: int, strategy: str, lr: float,
               backbone_lr: float | None, threads: int | None) -> None:
    """One process's share of a parallel study: one learning-rate point of a tuning grid (seed TUNING_SEED).

    Only the run is trained here; the ranking (tuning.json) is made afterwards by the strategy's part, which
    finds the run finished, or retries a failed one and records its failure."""
    torch.set_num_threads(threads or task_threads())
    state = run_study(cfg, out, progress=False, prepare_only=True, prepared=True)
    task = next(t for t in cfg.tasks if t.name == task_name)
    disjoint = disjoint_seeds(cfg, size, _pool_size(cfg, task, out))
    folder = StudyLayout(out).tuning(task_name, size, strategy) / point_name(lr, backbone_lr)
    try:
        _train(cfg, state, task, size, strategy, TUNING_SEED, lr, backbone_lr, folder, disjoint, False)
    except (HepfmError, RuntimeError, ValueError):
        pass  # the part trains the point again and records the failure with its cell


def _tuning_points(cfg: StudyConfig, out: Path, only: CellFilter) -> list[tuple[str, int, str, float, float | None]]:
    """(task, size, strategy, lr, backbone_lr) of every first tuning point not yet chosen from."""
    points = []
    for task in cfg.tasks:
        for size in cfg.sizes:
            for strategy in cfg.strategies:
                if ((only.tasks and task.name not in only.tasks) or (only.sizes and size not in only.sizes)
                        or (only.strategies and strategy not in only.strategies)
                        or (StudyLayout(out).tuning(task.name, size, strategy) / StudyLayout.TUNING).exists()):
                    continue
                points += [(task.name, size, strategy, lr, bb) for lr, bb in first_points(cfg, size, strategy)]
    return points


def _run_parts(cfg: StudyConfig, state: StudyState, only: CellFilter, jobs: int, threads: int | None,
               console: Console, executor: Executor = LOCAL) -> None:
    """Train the selected grid in ``jobs`` spawned processes (or as tasks of a Dask ``executor``), in three waves:
    every first tuning point; then per (task, strategy) the tuning choice and seed 0 (whose run is the chosen
    point's); then every other seed on its own. Each wave waits for the one before (a seed needs its strategy's
    chosen rates)."""
    pairs = [(t.name, s) for t in cfg.tasks for s in cfg.strategies
             if (not only.tasks or t.name in only.tasks) and (not only.strategies or s in only.strategies)]
    points = _tuning_points(cfg, state.out, only)
    first = [CellFilter([t], only.sizes, [s], [TUNING_SEED]) for t, s in pairs]
    rest = [CellFilter([t], only.sizes, [s], [k]) for t, s in pairs for k in range(cfg.seeds) if k != TUNING_SEED]
    if executor.is_dask:
        console.print(f"training {len(points)} tuning points, then {len(first) + len(rest)} parts of the grid, "
                      f"as tasks of {executor.describe()}")
        run_tasks(executor, _run_point, [(cfg, state.out, *point, threads) for point in points], jobs)
        for wave in (first, rest):
            for failures in run_tasks(executor, _run_part, [(cfg, state.out, part, threads) for part in wave], jobs):
                state.failures.extend(failures)
        return
    jobs = max(1, min(jobs, max(len(points), len(first), len(rest))))
    threads = threads or max(1, available_cores() // jobs)
    console.print(f"training {len(points)} tuning points, then {len(first) + len(rest)} parts of the grid, "
                  f"{jobs} at a time ({threads} thread(s) each)")
    # spawn: a forked child would inherit PyTorch's thread pools and the parent's open stores.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(_run_point, cfg, state.out, *point, threads) for point in points]:
            future.result()
        for wave in (first, rest):
            for future in [pool.submit(_run_part, cfg, state.out, part, threads) for part in wave]:
                state.failures.extend(future.result())


def run_study(cfg: StudyConfig, out: str | Path, progress: bool = True, console: Console | None = None,
              only: CellFilter | None = None, prepare_only: bool = False, jobs: int = 1,
              threads: int | None = None, prepared: bool = False, executor: Executor = LOCAL) -> StudyState:
    """Run (or resume) the study into ``out``; returns its state. Failed cells are listed, not fatal.

    ``prepare_only``: generate the stores and pretrain the backbones, train no cell. ``only``: train just
    that part of the grid (its failures go to ``failures-<part>.json``; the report reads every such file).
    ``jobs``: train the parts of the grid (task x strategy) in this many processes at once, each with
    ``threads`` PyTorch threads (default: the available cores shared out). ``prepared``: the stores and
    backbones are known to be there (a parallel part): skip generation and load the backbones silently.
    ``executor``: a Dask executor runs the generation's shards and the grid's parts as tasks of its cluster (the
    same runs and results; without a scheduler or cluster file, a local cluster of ``jobs`` workers).
    """
    if jobs < 1:
        raise HepfmError(f"the number of parallel jobs must be positive, got {jobs}")
    with session(executor, max(jobs, cfg.workers)):  # one cluster for the generation and the training
        return _run_study(cfg, out, progress, console, only, prepare_only, jobs, threads, prepared, executor)


def _run_study(cfg: StudyConfig, out: str | Path, progress: bool, console: Console | None, only: CellFilter | None,
               prepare_only: bool, jobs: int, threads: int | None, prepared: bool, executor: Executor) -> StudyState:
    if only is not None:
        only.check(cfg)
    console = console or Console()
    state = StudyState(out=Path(out))
    try:
        state.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, state.out) or HepfmError(f"{state.out}: cannot create the study folder "
                                                       f"({exc.strerror or exc})") from None
    t0 = time.perf_counter()
    if prepared:  # a worker process of a parallel study: its parent holds the study folder's lock
        pretrain_backbones(cfg, state, Console(quiet=True), progress)
        return state if prepare_only else _train_grid(cfg, state, only, jobs, threads, progress, console, t0,
                                                      executor)
    with exclusive_lock(state.out, "study folder"):
        generate_stores(cfg, state.out, console, progress, executor)
        pretrain_backbones(cfg, state, console, progress)
        if prepare_only:
            return state
        if only in (None, CellFilter()):
            return _train_grid(cfg, state, only, jobs, threads, progress, console, t0, executor)
    # A part of the grid (--task/--size/--strategy) may train beside other parts in other processes, as the
    # CLI documents: it holds the study folder while preparing only; each of its runs locks its run folder.
    return _train_grid(cfg, state, only, jobs, threads, progress, console, t0, executor)


def _train_grid(cfg: StudyConfig, state: StudyState, only: CellFilter | None, jobs: int, threads: int | None,
                progress: bool, console: Console, t0: float, executor: Executor = LOCAL) -> StudyState:
    """Train the selected cells of the grid (the stores and backbones are ready)."""
    if jobs > 1 or executor.is_dask:
        _run_parts(cfg, state, only or CellFilter(), jobs, threads, console, executor)
        _write_json(state.layout.timing(None if only in (None, CellFilter()) else only.tag()),
                    {"pretrain_time_s": state.pretrain_time_s, "study_wall_time_s": time.perf_counter() - t0})
        return state  # each part wrote its own failures file
    n_cells = len(cfg.tasks) * len(cfg.sizes) * len(cfg.strategies) * cfg.seeds
    k = 0
    only = only or CellFilter()
    for task in cfg.tasks:
        if only.tasks and task.name not in only.tasks:
            k += len(cfg.sizes) * len(cfg.strategies) * cfg.seeds
            continue
        test_sets = TestSets(cfg, task, state.out)
        pool = _pool_size(cfg, task, state.out)
        for size in cfg.sizes:
            disjoint = disjoint_seeds(cfg, size, pool)
            if not disjoint:
                console.print(f"[yellow]{task.name} size {size}: {pool} events per class cannot give {cfg.seeds} seeds "
                              f"disjoint training events (need {cfg.test_size} + {cfg.seeds} x "
                              f"{block_events(size)}); seeds draw random, overlapping subsets[/]")
            for strategy in cfg.strategies:
                if (only.sizes and size not in only.sizes) or (only.strategies and strategy not in only.strategies):
                    k += cfg.seeds
                    continue
                for seed in range(cfg.seeds):
                    k += 1
                    if only.seeds and seed not in only.seeds:
                        continue
                    folder = state.layout.cell(task.name, size, strategy, seed)
                    label = f"[{k}/{n_cells}] {task.name} size {size} {strategy} seed {seed}"
                    if (folder / StudyLayout.RESULT).exists():
                        done = json.loads((folder / StudyLayout.RESULT).read_text())
                        try:
                            _check_finished(state.out / done["run"], cfg.finetune.for_cell(size, strategy), seed,
                                            done["lr"])
                            if "tuning" in done:
                                check_grid(cfg, task.name, size, strategy, {**done["tuning"], "tuned": done["tuned"]},
                                           folder / StudyLayout.RESULT)
                        except HepfmError as exc:
                            state.failures.append({"cell": label, "key": [task.name, size, strategy, seed],
                                                   "error": str(exc), "trace": ""})
                            console.print(f"{label}: [red]FAILED[/] {exc}")
                        continue
                    started = time.perf_counter()
                    try:
                        r = run_cell(cfg, state, task, size, strategy, seed, test_sets, disjoint, False, console)
                    except (HepfmError, RuntimeError, ValueError) as exc:
                        state.failures.append({"cell": label, "key": [task.name, size, strategy, seed],
                                               "error": str(exc), "trace": traceback.format_exc()})
                        console.print(f"{label}: [red]FAILED[/] {exc}")
                        continue
                    flag = " [red]COLLAPSED[/]" if r["collapsed"] else ""
                    console.print(f"{label}: {r['chosen']}, accuracy {r['accuracy']:.4f} ± {r['accuracy_err']:.4f}, "
                                  f"AUC {r['auc']:.4f}, {r['epochs_run']} epochs"
                                  f"{' (cap)' if r['epoch_cap_hit'] else ''}, {time.perf_counter() - started:.0f} s"
                                  f"{flag}")
    part = None if only == CellFilter() else only.tag()
    _write_json(state.layout.failures(part), state.failures)
    _write_json(state.layout.timing(part), {"pretrain_time_s": state.pretrain_time_s,
                                          "study_wall_time_s": time.perf_counter() - t0})
    return state
