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
from hepfm.train import defaults

#: Downstream tasks: name -> (signal process, background process). The paper's five, then seed 003's
#: X -> HH -> 4b against QCD multijet.
TASKS: dict[str, tuple[str, str]] = {
    "wh_vs_zh": ("wh", "zh"),
    "stop_vs_tth": ("stop_t2t1h", "tth"),
    "fcnc_vs_tth": ("fcnc_thq", "tth"),
    "hplus_vs_ttbar": ("hplus_tb", "ttbar"),
    "zprime_vs_ttbar": ("zprime_tt", "ttbar"),
    "hh4b_vs_qcd": ("x_hh_4b", "qcd"),
}

#: Study strategies: name -> (pretraining task it starts from or None, training strategy).
STRATEGIES: dict[str, tuple[str | None, str]] = {
    "scratch": (None, "scratch"),
    "finetune_multiclass": ("multiclass", "finetune"),
    "finetune_multilabel": ("multilabel", "finetune"),
    "frozen_multiclass": ("multiclass", "frozen"),
    "frozen_multilabel": ("multilabel", "frozen"),
    "finetune_masked": ("masked", "finetune"),
    "frozen_masked": ("masked", "frozen"),
    # The hierarchical event model (jet constituents -> jet backbone -> event backbone, seed 003): its jet
    # backbone pretrained on jet tagging and fine-tuned or frozen, or trained from scratch with the event model.
    "hierarchical_finetune": ("jet-tagging", "finetune"),
    "hierarchical_frozen": ("jet-tagging", "frozen"),
    "hierarchical_scratch": (None, "scratch"),
}
#: Strategies whose model reads the jets' constituents (stores generated with constituents).
HIERARCHICAL = ("hierarchical_finetune", "hierarchical_frozen", "hierarchical_scratch")
#: Pretraining tasks, in the order a study pretrains them.
PRETRAINING_TASKS = ("multiclass", "multilabel", "masked", "jet-tagging")
BASELINE = "scratch"
LR_GRID = (1e-4, 3e-4, 1e-3)  # the rates every strategy chooses from (head rate for fine-tuning)
BACKBONE_RATIOS = (0.1, 1.0)  # backbone / head rate for fine-tuning: the paper's 10:1 first, then equal
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
    """Training hyper-parameters of one kind of run (pretraining or the grid's cells).

    ``lr`` None (the default for the cells) means: tune it. Each strategy then chooses its rate(s) by
    validation loss from ``lr_grid`` (head, or every layer for scratch); fine-tuning first pairs each head rate
    with a backbone rate ``backbone_ratios[0]`` x lower, then tries the other ratios at the best head rate.
    A given ``lr`` fixes the rate (no grid); ``backbone_lr`` then defaults to ``lr x backbone_ratios[0]``.
    ``frozen_lr_grid``, when given, replaces ``lr_grid`` where only a head trains on a frozen backbone: a head on
    fixed features learns more slowly, and at the scratch grid's rates it may still be improving at the
    epoch cap (then its best rate lies beyond the grid).
    """

    epochs: int = defaults.EPOCHS
    batch_size: int = defaults.BATCH_SIZE
    lr: float | None = None
    backbone_lr: float | None = None
    patience: int = defaults.PATIENCE
    optimizer: str = "adam"
    lr_grid: tuple[float, ...] = LR_GRID
    backbone_ratios: tuple[float, ...] = BACKBONE_RATIOS
    frozen_lr_grid: tuple[float, ...] | None = None
    by_size: dict[int, dict] = field(default_factory=dict)

    def for_size(self, size: int) -> TrainSpec:
        """These settings with the overrides for training size ``size`` applied."""
        return self.with_overrides(self.by_size.get(size, {}))

    def with_overrides(self, extra: dict) -> TrainSpec:
        """These settings with some replaced."""
        return TrainSpec(**{**{k: getattr(self, k) for k in _SPEC_KEYS}, **extra})

    @property
    def tuned(self) -> bool:
        """Whether the learning rate is chosen from the grid (no ``lr`` given)."""
        return self.lr is None

    def first_points(self, how: str, head_only: bool = False) -> list[tuple[float, float | None]]:
        """(lr, backbone_lr) points tried first for training strategy ``how`` (scratch, finetune, frozen);
        ``head_only``: only a head trains, on a frozen backbone (``frozen_lr_grid`` applies)."""
        grid = self.frozen_lr_grid if head_only and self.frozen_lr_grid else self.lr_grid
        heads = list(grid) if self.lr is None else [self.lr]
        if how != "finetune":
            return [(h, None) for h in heads]
        if self.backbone_lr is not None:
            return [(h, self.backbone_lr) for h in heads]
        return [(h, h * self.backbone_ratios[0]) for h in heads]

    def second_points(self, how: str, best_head: float) -> list[tuple[float, float | None]]:
        """Fine-tuning's other backbone ratios at the best head rate (none when the rates are fixed)."""
        if how != "finetune" or self.lr is not None or self.backbone_lr is not None:
            return []
        return [(best_head, best_head * r) for r in self.backbone_ratios[1:]]


_SPEC_KEYS = ("epochs", "batch_size", "lr", "backbone_lr", "patience", "optimizer", "lr_grid", "backbone_ratios",
              "frozen_lr_grid")


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
    pretrain_processes: list[str] = field(default_factory=lambda: list(PRETRAINING))  # the generated mix
    downstream_events: int = 20000
    workers: int = 2
    model: str = "graphnet"
    model_options: dict = field(default_factory=dict)
    jet_model: str = "jet_transformer"  # the hierarchical strategies' jet backbone (pretrained on jet tagging)
    constituents: int = 0  # K constituents per jet kept in the generated stores (hierarchical strategies)
    pretrain: TrainSpec = field(default_factory=lambda: TrainSpec(lr=defaults.LR))
    pretrain_by_task: dict[str, dict] = field(default_factory=dict)  # e.g. {"multilabel": {"lr": 1e-3}}
    pretrain_max_events: int | None = None
    pretrained: dict[str, str] = field(default_factory=dict)  # task -> existing model folder
    pretrain_data: str | None = None  # an existing pretraining store instead of generating one
    masked: dict = field(default_factory=lambda: {"regress": False, "augment": []})  # masked pretraining options
    finetune: TrainSpec = field(default_factory=TrainSpec)
    cka_events: int = 2000
    cka_size: int | None = None
    source: str = "<dict>"
    # Where the study runs, not what it measures: set from the command line, never from the YAML file.
    device: str = "auto"
    bf16: bool | None = None  # None: the trainer's default (on for CUDA)

    @property
    def pretraining_tasks(self) -> list[str]:
        """The pretraining tasks the chosen strategies need, in a fixed order."""
        needed = {STRATEGIES[s][0] for s in self.strategies} - {None}
        return [t for t in PRETRAINING_TASKS if t in needed]

    @property
    def hierarchical(self) -> bool:
        """Whether any strategy needs the jets' constituents."""
        return any(s in HIERARCHICAL for s in self.strategies)

    @property
    def downstream_processes(self) -> list[str]:
        """Catalog processes the (non-external) tasks need."""
        names = [p for t in self.tasks if not t.external for p in (t.signal, t.background)]
        return list(dict.fromkeys(names))


def _fail(source: str, message: str):
    raise HepfmError(f"{source}: {message}")


def _positive_list(value, source: str, where: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value):
        _fail(source, f"'{where}' must be a non-empty list of positive numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _train_spec(raw, source: str, section: str, default: TrainSpec) -> TrainSpec:
    raw = dict(raw or {})
    allowed = set(_SPEC_KEYS) | {"by_size"}
    unknown = set(raw) - allowed
    if unknown:
        _fail(source, f"unknown key(s) {sorted(unknown)} in '{section}' (allowed: {sorted(allowed)})")
    by_size = {int(k): dict(v) for k, v in (raw.pop("by_size", None) or {}).items()}
    for size, extra in [(None, raw), *by_size.items()]:
        where = section if size is None else f"{section}.by_size.{size}"
        if set(extra) - set(_SPEC_KEYS):
            _fail(source, f"unknown key(s) in '{where}': {sorted(set(extra) - set(_SPEC_KEYS))}")
        for key in ("lr_grid", "backbone_ratios", "frozen_lr_grid"):
            if key in extra:
                extra[key] = _positive_list(extra[key], source, f"{where}.{key}")
        for key in ("lr", "backbone_lr"):
            if extra.get(key) is not None and not (isinstance(extra[key], (int, float)) and extra[key] > 0):
                _fail(source, f"'{where}.{key}' must be a positive number, got {extra[key]!r}")
    spec = TrainSpec(**{**{k: getattr(default, k) for k in _SPEC_KEYS}, **raw}, by_size=by_size)
    if spec.epochs < 1 or spec.batch_size < 1 or spec.patience < 1:
        _fail(source, f"'{section}' needs positive epochs, batch_size and patience")
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
    from hepfm.models.registry import model_names
    from hepfm.models.saving import read_config

    if not isinstance(raw, dict):
        _fail(source, "a study configuration must be a mapping")
    allowed = {"tasks", "sizes", "strategies", "seeds", "test_size", "generation", "pretrain", "finetune", "cka",
               "model", "model_options", "jet_model"}
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
    # pretrain.<task>: an existing model folder (or shipped name) for that task, as a string; the masked
    # task's section may instead be a mapping of its own options (``regress``, ``augment``, ``model``).
    masked_options = pre.pop("masked") if isinstance(pre.get("masked"), dict) else {}
    pretrained = {t: str(pre.pop(t)) for t in PRETRAINING_TASKS if pre.get(t)}
    for t in PRETRAINING_TASKS:
        pre.pop(t, None)
    masked_options = dict(masked_options)
    if "model" in masked_options:
        pretrained["masked"] = str(masked_options.pop("model"))
    bad = set(masked_options) - {"regress", "augment"}
    if bad:
        _fail(source, f"pretrain.masked: unknown key(s) {sorted(bad)} (allowed: model, regress, augment)")
    from hepfm.data.augment import AUGMENTATIONS

    augment = list(masked_options.get("augment") or [])
    if set(augment) - set(AUGMENTATIONS):
        _fail(source, f"pretrain.masked.augment: unknown augmentation(s) {sorted(set(augment) - set(AUGMENTATIONS))}"
              f" (choose from {', '.join(AUGMENTATIONS)})")
    masked_options = {"regress": bool(masked_options.get("regress", False)), "augment": augment}
    pre_max = pre.pop("max_events", None)
    pre_data = pre.pop("data", None)
    by_task = {str(k): dict(v) for k, v in (pre.pop("by_task", None) or {}).items()}
    for task, extra in by_task.items():
        if task not in PRETRAINING_TASKS:
            _fail(source, f"pretrain.by_task: unknown pretraining task {task!r}")
        if set(extra) - {"epochs", "batch_size", "lr", "patience", "optimizer"}:
            _fail(source, f"pretrain.by_task.{task}: unknown key(s) {sorted(extra)}")
    if pre_data is not None and not Path(pre_data).exists():
        _fail(source, f"pretrain.data: no such event store {pre_data!r}")
    pre_processes = gen.get("pretrain_processes", list(PRETRAINING))
    if not pre_processes or not isinstance(pre_processes, list) or set(pre_processes) - set(PROCESSES):
        _fail(source, f"generation.pretrain_processes must be a list of catalog processes, got {pre_processes!r}")
    cka = dict(raw.get("cka") or {})
    cfg = StudyConfig(
        tasks=tasks, sizes=sorted(sizes), strategies=list(strategies), seeds=int(raw.get("seeds", 5)),
        test_size=int(raw.get("test_size", 5000)), generation_seed=int(gen.get("seed", 7)),
        pretrain_events=int(gen.get("pretrain_events", 5000)), pretrain_processes=list(dict.fromkeys(pre_processes)),
        downstream_events=int(gen.get("downstream_events", 20000)),
        workers=int(gen.get("workers", 2)), model=str(raw.get("model", "graphnet")),
        model_options=dict(raw.get("model_options") or {}), jet_model=str(raw.get("jet_model", "jet_transformer")),
        constituents=int(gen.get("constituents", 0)),
        pretrain=_train_spec(pre, source, "pretrain", TrainSpec(lr=defaults.LR)),
        pretrain_by_task=by_task,
        pretrain_max_events=pre_max, pretrained=pretrained, pretrain_data=pre_data, masked=masked_options,
        finetune=_train_spec(raw.get("finetune"), source, "finetune", TrainSpec()),
        cka_events=int(cka.get("events", 2000)), cka_size=cka.get("size"), source=source)
    if cfg.pretrain.lr is None:
        _fail(source, "'pretrain.lr' must be given (pretraining is not tuned)")
    if cfg.seeds < 1 or cfg.test_size < 1:
        _fail(source, "'seeds' and 'test_size' must be positive")
    if cfg.model not in model_names():
        _fail(source, f"unknown model {cfg.model!r}; choose from {', '.join(model_names())}")
    _check_hierarchical(cfg)
    if cfg.cka_size is not None and cfg.cka_size not in cfg.sizes:
        _fail(source, f"cka.size {cfg.cka_size} is not one of the sizes {cfg.sizes}")
    from hepfm.models.pretrained import resolve

    for task, path in cfg.pretrained.items():
        try:
            meta = read_config(resolve(path))  # a model folder or a shipped model's name
        except HepfmError as exc:
            _fail(source, f"pretrain.{task}: {exc}")
        if meta.get("task") != task:
            _fail(source, f"pretrain.{task}: {path} was pretrained for {meta.get('task')!r}, not {task!r}")
    need = block_events(max(cfg.sizes)) + cfg.test_size
    if any(not t.external for t in tasks) and need > cfg.downstream_events:
        _fail(source, f"size {max(cfg.sizes)} per class needs {need} events per process (training + "
              f"{VAL_FRACTION:.0%} validation + {cfg.test_size} test), but generation.downstream_events is "
              f"{cfg.downstream_events}")
    _check_external_sizes(cfg, need)
    return cfg


def _check_hierarchical(cfg: StudyConfig) -> None:
    """The hierarchical strategies need an event model, a jet backbone and stores that keep constituents."""
    from hepfm.data.datasets import stored_constituents
    from hepfm.models.registry import MODELS

    if cfg.constituents < 0:
        _fail(cfg.source, f"generation.constituents must be >= 0, got {cfg.constituents}")
    if cfg.jet_model not in MODELS or MODELS[cfg.jet_model].inputs != "constituents":
        _fail(cfg.source, f"jet_model must be a jet backbone (jet_transformer, deepsets), got {cfg.jet_model!r}")
    if not cfg.hierarchical:
        return
    if MODELS[cfg.model].inputs != "objects":
        _fail(cfg.source, f"the hierarchical strategies use 'model' as their event backbone (graphnet or "
                          f"transformer), got {cfg.model!r}")
    generated = [t.name for t in cfg.tasks if not t.external]
    if generated and cfg.constituents < 1:
        _fail(cfg.source, f"the hierarchical strategies read jet constituents: set generation.constituents (K per "
                          f"jet, e.g. 32) so that the stores of {', '.join(generated)} keep them")
    for t in cfg.tasks:
        for path in (t.signal, t.background) if t.external else ():
            try:
                stored_constituents(path)
            except HepfmError as exc:
                _fail(cfg.source, f"task {t.name!r}: {exc}")
    if "jet-tagging" in cfg.pretraining_tasks and "jet-tagging" not in cfg.pretrained:
        if cfg.pretrain_data is not None:
            try:
                stored_constituents(cfg.pretrain_data)
            except HepfmError as exc:
                _fail(cfg.source, f"pretrain.data (jet tagging): {exc}")
        elif cfg.constituents < 1:
            _fail(cfg.source, "jet-tagging pretraining reads jet constituents: set generation.constituents")


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


def block_events(size: int) -> int:
    """Training + validation events per class of one seed at training size ``size``."""
    return size + max(1, math.ceil(size * VAL_FRACTION))


def disjoint_seeds(cfg: StudyConfig, size: int, available: int) -> bool:
    """Whether ``available`` events per class hold the test set and a disjoint block for every seed."""
    return cfg.test_size + cfg.seeds * block_events(size) <= available


def read_yaml(path: str | Path):
    """The parsed content of a study YAML file, with a clear error for a missing or malformed one."""
    path = Path(path)
    if not path.is_file():
        raise HepfmError(f"{path}: no such study configuration file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HepfmError(f"{path}: not valid YAML ({exc})") from None


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML file."""
    return parse_config(read_yaml(path), str(path))


