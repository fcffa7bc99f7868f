"""Study configuration: the grid of downstream tasks x training sizes x strategies x seeds (YAML).

Everything is checked when the file is read — unknown tasks or strategies, bad sizes, sizes larger
than the events that will be available, unreadable pretrained models — so a study fails in seconds,
not after an hour of generation. See ``configs/study-cpu.yaml`` for a commented example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hepfm.errors import HepfmError
from hepfm.physics.processes import PRETRAINING, PROCESSES

#: The paper's downstream tasks: name -> (signal process, background process).
TASKS: dict[str, tuple[str, str]] = {
    "wh_vs_zh": ("wh", "zh"),
    "stop_vs_tth": ("stop_t2t1h", "tth"),
    "fcnc_vs_tth": ("fcnc_thq", "tth"),
    "hplus_vs_ttbar": ("hplus_tb", "ttbar"),
    "zprime_vs_ttbar": ("zprime_tt", "ttbar"),
}

#: Study strategies: name -> (pretraining task it starts from or None, training strategy).
STRATEGIES: dict[str, tuple[str | None, str]] = {
    "scratch": (None, "scratch"),
    "finetune_multiclass": ("multiclass", "finetune"),
    "finetune_multilabel": ("multilabel", "finetune"),
    "frozen_multiclass": ("multiclass", "frozen"),
    "frozen_multilabel": ("multilabel", "frozen"),
}
BASELINE = "scratch"
VAL_FRACTION = 0.25  # validation events per class, as a fraction of the training size (BinarySplitPlan)


@dataclass
class TaskSpec:
    """One downstream task: where its signal and background events are (or will be generated)."""

    name: str
    signal: str  # catalog process name, or a store / process folder when ``external``
    background: str
    external: bool = False


@dataclass
class TrainSpec:
    """Training hyper-parameters of one kind of run (pretraining or the grid's cells)."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-4
    backbone_lr: float = 1e-5
    patience: int = 5
    optimizer: str = "adam"
    by_size: dict[int, dict] = field(default_factory=dict)

    def for_size(self, size: int) -> TrainSpec:
        """These settings with the overrides for training size ``size`` applied."""
        return self.with_overrides(self.by_size.get(size, {}))

    def with_overrides(self, extra: dict) -> TrainSpec:
        """These settings with some replaced."""
        return TrainSpec(**{**{k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "backbone_lr", "patience",
                                                             "optimizer")}, **extra})


@dataclass
class StudyConfig:
    """A parsed, validated study configuration."""

    tasks: list[TaskSpec]
    sizes: list[int]
    strategies: list[str]
    seeds: int = 5
    test_size: int = 5000
    generation_seed: int = 7
    pretrain_events: int = 5000
    downstream_events: int = 20000
    workers: int = 2
    model: str = "graphnet"
    model_options: dict = field(default_factory=dict)
    pretrain: TrainSpec = field(default_factory=lambda: TrainSpec(epochs=10, batch_size=512, lr=1e-4, patience=3))
    pretrain_by_task: dict[str, dict] = field(default_factory=dict)  # e.g. {"multilabel": {"lr": 1e-3}}
    pretrain_max_events: int | None = None
    pretrained: dict[str, str] = field(default_factory=dict)  # task -> existing model folder
    pretrain_data: str | None = None  # an existing pretraining store instead of generating one
    finetune: TrainSpec = field(default_factory=TrainSpec)
    cka_events: int = 2000
    cka_size: int | None = None
    source: str = "<dict>"

    @property
    def pretraining_tasks(self) -> list[str]:
        """The pretraining tasks the chosen strategies need, in a fixed order."""
        needed = {STRATEGIES[s][0] for s in self.strategies} - {None}
        return [t for t in ("multiclass", "multilabel") if t in needed]

    @property
    def downstream_processes(self) -> list[str]:
        """Catalog processes the (non-external) tasks need."""
        names = [p for t in self.tasks if not t.external for p in (t.signal, t.background)]
        return list(dict.fromkeys(names))


def _fail(source: str, message: str):
    raise HepfmError(f"{source}: {message}")


def _train_spec(raw, source: str, section: str, default: TrainSpec) -> TrainSpec:
    raw = dict(raw or {})
    allowed = {"epochs", "batch_size", "lr", "backbone_lr", "patience", "optimizer", "by_size"}
    unknown = set(raw) - allowed
    if unknown:
        _fail(source, f"unknown key(s) {sorted(unknown)} in '{section}' (allowed: {sorted(allowed)})")
    by_size = {int(k): dict(v) for k, v in (raw.pop("by_size", None) or {}).items()}
    for size, extra in by_size.items():
        if set(extra) - (allowed - {"by_size"}):
            _fail(source, f"unknown key(s) in '{section}.by_size.{size}': {sorted(set(extra) - allowed)}")
    spec = TrainSpec(**{**{k: getattr(default, k) for k in allowed - {"by_size"}}, **raw}, by_size=by_size)
    if spec.epochs < 1 or spec.batch_size < 1 or spec.lr <= 0:
        _fail(source, f"'{section}' needs positive epochs, batch_size and lr")
    return spec


def _tasks(raw, source: str) -> list[TaskSpec]:
    if not raw:
        _fail(source, "'tasks' is empty")
    out = []
    items = raw.items() if isinstance(raw, dict) else ((name, None) for name in raw)
    for name, spec in items:
        if spec is None:
            if name not in TASKS:
                _fail(source, f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (or give "
                      "{signal: STORE, background: STORE})")
            out.append(TaskSpec(name, *TASKS[name]))
            continue
        if not isinstance(spec, dict) or set(spec) != {"signal", "background"}:
            _fail(source, f"task {name!r} must be a known task name or have exactly 'signal' and 'background'")
        for role in ("signal", "background"):
            value = str(spec[role])
            if value in PROCESSES:
                continue
            if not Path(value).exists():
                _fail(source, f"task {name!r}: {role} {value!r} is neither a catalog process nor an existing store")
        external = not (spec["signal"] in PROCESSES and spec["background"] in PROCESSES)
        out.append(TaskSpec(name, str(spec["signal"]), str(spec["background"]), external))
    return out


def parse_config(raw: dict, source: str = "<dict>") -> StudyConfig:
    """Validate a study configuration dict (as read from YAML) and return a :class:`StudyConfig`."""
    from hepfm.models.registry import MODELS
    from hepfm.models.saving import read_config

    if not isinstance(raw, dict):
        _fail(source, "a study configuration must be a mapping")
    allowed = {"tasks", "sizes", "strategies", "seeds", "test_size", "generation", "pretrain", "finetune", "cka",
               "model", "model_options"}
    unknown = set(raw) - allowed
    if unknown:
        _fail(source, f"unknown key(s) {sorted(unknown)} (allowed: {sorted(allowed)})")
    tasks = _tasks(raw.get("tasks"), source)
    sizes = raw.get("sizes") or []
    if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        _fail(source, f"'sizes' must be a list of positive integers (events per class), got {sizes!r}")
    strategies = raw.get("strategies") or [BASELINE, "finetune_multiclass"]
    for s in strategies:
        if s not in STRATEGIES:
            _fail(source, f"unknown strategy {s!r}; choose from {', '.join(STRATEGIES)}")
    if BASELINE not in strategies:
        _fail(source, f"'strategies' must include the baseline {BASELINE!r}; gains are measured against it")
    gen = dict(raw.get("generation") or {})
    pre = dict(raw.get("pretrain") or {})
    pretrained = {t: str(pre.pop(t)) for t in ("multiclass", "multilabel") if pre.get(t)}
    pre.pop("multiclass", None), pre.pop("multilabel", None)
    pre_max = pre.pop("max_events", None)
    pre_data = pre.pop("data", None)
    by_task = {str(k): dict(v) for k, v in (pre.pop("by_task", None) or {}).items()}
    for task, extra in by_task.items():
        if task not in ("multiclass", "multilabel"):
            _fail(source, f"pretrain.by_task: unknown pretraining task {task!r}")
        if set(extra) - {"epochs", "batch_size", "lr", "patience", "optimizer"}:
            _fail(source, f"pretrain.by_task.{task}: unknown key(s) {sorted(extra)}")
    if pre_data is not None and not Path(pre_data).exists():
        _fail(source, f"pretrain.data: no such event store {pre_data!r}")
    cka = dict(raw.get("cka") or {})
    cfg = StudyConfig(
        tasks=tasks, sizes=sorted(sizes), strategies=list(strategies), seeds=int(raw.get("seeds", 5)),
        test_size=int(raw.get("test_size", 5000)), generation_seed=int(gen.get("seed", 7)),
        pretrain_events=int(gen.get("pretrain_events", 5000)), downstream_events=int(gen.get("downstream_events",
                                                                                               20000)),
        workers=int(gen.get("workers", 2)), model=str(raw.get("model", "graphnet")),
        model_options=dict(raw.get("model_options") or {}),
        pretrain=_train_spec(pre, source, "pretrain", TrainSpec(epochs=10, batch_size=512, lr=1e-4, patience=3)),
        pretrain_by_task=by_task,
        pretrain_max_events=pre_max, pretrained=pretrained, pretrain_data=pre_data,
        finetune=_train_spec(raw.get("finetune"), source, "finetune", TrainSpec()),
        cka_events=int(cka.get("events", 2000)), cka_size=cka.get("size"), source=source)
    if cfg.seeds < 1 or cfg.test_size < 1:
        _fail(source, "'seeds' and 'test_size' must be positive")
    if cfg.model not in MODELS:
        _fail(source, f"unknown model {cfg.model!r}; choose from {', '.join(sorted(MODELS))}")
    if cfg.cka_size is not None and cfg.cka_size not in cfg.sizes:
        _fail(source, f"cka.size {cfg.cka_size} is not one of the sizes {cfg.sizes}")
    for task, path in cfg.pretrained.items():
        try:
            meta = read_config(path)
        except HepfmError as exc:
            _fail(source, f"pretrain.{task}: {exc}")
        if meta.get("task") != task:
            _fail(source, f"pretrain.{task}: {path} was pretrained for {meta.get('task')!r}, not {task!r}")
    need = max(cfg.sizes) + math.ceil(max(cfg.sizes) * VAL_FRACTION) + cfg.test_size
    if any(not t.external for t in tasks) and need > cfg.downstream_events:
        _fail(source, f"size {max(cfg.sizes)} per class needs {need} events per process (training + "
              f"{VAL_FRACTION:.0%} validation + {cfg.test_size} test), but generation.downstream_events is "
              f"{cfg.downstream_events}")
    _check_external_sizes(cfg, need)
    return cfg


def _check_external_sizes(cfg: StudyConfig, need: int) -> None:
    from hepfm.data.datasets import open_source

    for t in cfg.tasks:
        if not t.external:
            continue
        for role, path in (("signal", t.signal), ("background", t.background)):
            store, processes = open_source(path)
            counts = store.counts()
            have = sum(counts[p] for p in (processes or store.process_names))
            if have < need:
                _fail(cfg.source, f"task {t.name!r}: {role} {path} has {have} events, but size {max(cfg.sizes)} "
                      f"needs {need} (training + validation + {cfg.test_size} test)")


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML file."""
    path = Path(path)
    if not path.is_file():
        raise HepfmError(f"{path}: no such study configuration file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HepfmError(f"{path}: not valid YAML ({exc})") from None
    return parse_config(raw, str(path))


def pretraining_processes() -> list[str]:
    """The processes of the pretraining store (DESIGN.md §2)."""
    return list(PRETRAINING)
