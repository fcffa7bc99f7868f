"""Study configuration: the grid of downstream tasks x training sizes x strategies x seeds (YAML).

Everything is checked when the file is read — unknown tasks or strategies, bad sizes, sizes larger
than the events that will be available, unreadable pretrained models — so a study fails in seconds,
not after an hour of generation. See ``configs/study-cpu.yaml`` for a commented example.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from hepfm.config import TrainConfig, config_fields, field_problem, parse_heads
from hepfm.data.pretraining import HEADS, MULTI_TASK, PRETRAINING_TASKS
from hepfm.errors import ConfigurationError, HepfmError
from hepfm.files import safe_yaml
from hepfm.names import check_name
from hepfm.physics.processes import GROUPS, PRETRAINING, PROCESSES, expand_names
from hepfm.train import defaults

#: Downstream tasks: name -> (signal process, background process). The paper's five, then the hierarchical
#: backbones study's (arXiv:2401.13536) X -> HH -> 4b against QCD multijet.
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
    # A backbone pretrained on several heads at once (``pretrain.multi.heads``, or a given ``pretrain.multi``).
    "finetune_multi": ("multi", "finetune"),
    "frozen_multi": ("multi", "frozen"),
    # The hierarchical event model (jet constituents -> jet backbone -> event backbone, arXiv:2401.13536): its jet
    # backbone pretrained on jet tagging and fine-tuned or frozen, or trained from scratch with the event model.
    "hierarchical_finetune": ("jet-tagging", "finetune"),
    "hierarchical_frozen": ("jet-tagging", "frozen"),
    "hierarchical_scratch": (None, "scratch"),
}
#: Strategies whose model reads the jets' constituents (stores generated with constituents).
HIERARCHICAL = ("hierarchical_finetune", "hierarchical_frozen", "hierarchical_scratch")
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


#: TrainConfig fields the study sets itself: the seed per cell, the rest from its command line.
STUDY_SET = ("seed", "progress", "bf16", "stop_after_batches")
#: TrainConfig fields a configuration may set in ``pretrain``, ``finetune`` and their per-task, per-size and
#: per-strategy sections (the rest of a section's keys choose the learning rates).
TRAIN_KEYS = tuple(name for name in config_fields(TrainConfig) if name not in STUDY_SET)
_TUNING_KEYS = ("lr", "backbone_lr", "lr_grid", "backbone_ratios", "frozen_lr_grid", "recipe")
#: Most values one recipe axis may list (each is a training run per task, size and strategy).
MAX_RECIPE_VALUES = 10


@dataclass
class TrainSpec:
    """Training settings of one kind of run (pretraining or the grid's cells): learning rates and any
    :class:`~hepfm.config.TrainConfig` setting.

    ``lr`` None (the default for the cells) means: tune it. Each strategy then chooses its rate(s) by
    validation loss from ``lr_grid`` (head, or every layer for scratch); fine-tuning first pairs each head rate
    with a backbone rate ``backbone_ratios[0]`` x lower, then tries the other ratios at the best head rate.
    A given ``lr`` fixes the rate (no grid); ``backbone_lr`` then defaults to ``lr x backbone_ratios[0]``.
    ``frozen_lr_grid``, when given, replaces ``lr_grid`` where only a head trains on a frozen backbone: a head on
    fixed features learns more slowly, and at the scratch grid's rates it may still be improving at the
    epoch cap (then its best rate lies beyond the grid).
    ``recipe``: axes of other TrainConfig settings tuned the same way, one axis at a time in the given order
    (not their product): each axis tries its values at the best point found so far and keeps the best by
    validation loss (e.g. ``{"weight_decay": [0, 0.01], "ema_decay": [0, 0.999], "linear_probe": [false, true]}``);
    axes of fine-tuning-only settings (:data:`~hepfm.train.strategies.FINETUNE_ONLY`) are skipped for other
    strategies. A value equal to the current point's is not trained again.
    ``train``: the TrainConfig settings the configuration gives (the others keep TrainConfig's defaults);
    ``by_strategy`` and then ``by_size`` replace some of these settings for one strategy or training size.
    """

    lr: float | None = None
    backbone_lr: float | None = None
    lr_grid: tuple[float, ...] = LR_GRID
    backbone_ratios: tuple[float, ...] = BACKBONE_RATIOS
    frozen_lr_grid: tuple[float, ...] | None = None
    recipe: dict[str, tuple] = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    by_size: dict[int, dict] = field(default_factory=dict)
    by_strategy: dict[str, dict] = field(default_factory=dict)

    def for_size(self, size: int) -> TrainSpec:
        """These settings with the overrides for training size ``size`` applied."""
        return self.with_overrides(self.by_size.get(size, {}))

    def for_cell(self, size: int, strategy: str) -> TrainSpec:
        """These settings for one strategy at one training size (``by_strategy``, then ``by_size``, applied)."""
        return self.with_overrides(self.by_strategy.get(strategy, {})).for_size(size)

    def with_overrides(self, extra: dict) -> TrainSpec:
        """These settings with some replaced (learning-rate keys and TrainConfig fields alike)."""
        rates = {k: v for k, v in extra.items() if k in _TUNING_KEYS}
        train = {k: v for k, v in extra.items() if k not in _TUNING_KEYS}
        return dataclasses.replace(self, **rates, train={**self.train, **train})

    def train_config(self, **fixed) -> TrainConfig:
        """The TrainConfig these settings give, with ``fixed`` (the study's own: seed, progress...) applied."""
        return TrainConfig(**{**self.train, **fixed})

    @property
    def epochs(self) -> int:
        """The epoch cap."""
        return self.train_config().epochs

    @property
    def batch_size(self) -> int:
        """The batch size (resolved: the optimizer's default when not given)."""
        return self.train_config().batch_size

    @property
    def patience(self) -> int:
        """Epochs without improvement before early stopping."""
        return self.train_config().patience

    @property
    def optimizer(self) -> str:
        """The optimizer."""
        return self.train_config().optimizer

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

    def recipe_axes(self, how: str) -> list[tuple[str, tuple]]:
        """(setting, values) of the recipe axes that apply to training strategy ``how``, in tuning order."""
        from hepfm.train.strategies import FINETUNE_ONLY

        return [(k, v) for k, v in self.recipe.items() if how == "finetune" or k not in FINETUNE_ONLY]

    def second_points(self, how: str, best_head: float) -> list[tuple[float, float | None]]:
        """Fine-tuning's other backbone ratios at the best head rate (none when the rates are fixed)."""
        if how != "finetune" or self.lr is not None or self.backbone_lr is not None:
            return []
        return [(best_head, best_head * r) for r in self.backbone_ratios[1:]]


_SPEC_KEYS = _TUNING_KEYS + TRAIN_KEYS


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
    multi_heads: dict[str, float] | None = None  # multi-task pretraining: head -> loss weight
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
        return [t for t in (*PRETRAINING_TASKS, MULTI_TASK) if t in needed]

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
    raise ConfigurationError(f"{source}: {message}")


def show(value, limit: int = 200) -> str:
    """A bounded excerpt of a configuration value for an error message (a hostile file cannot flood it)."""
    text = repr(value) if not isinstance(value, (dict, list, tuple)) or len(value) <= 1000 else \
        f"<{type(value).__name__} of {len(value)} items>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value, source: str, where: str, minimum: int = 1, maximum: int | None = None) -> int:
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        bound = f" and at most {maximum:,}" if maximum is not None else ""
        _fail(source, f"'{where}' must be an integer >= {minimum}{bound}, got {show(value)}")
    return value


def _mapping(value, source: str, where: str) -> dict:
    """A mapping section (None: empty) whose keys are strings."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(source, f"'{where}' must be a mapping, got {type(value).__name__} {show(value)}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        _fail(source, f"'{where}' has a key that is not a name: {show(bad[0])}")
    return dict(value)


def _known_keys(value: dict, allowed, source: str, where: str) -> None:
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        _fail(source, f"unknown key(s) {show(unknown)} in '{where}' (allowed: {', '.join(sorted(allowed))})")


def _string(value, source: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(source, f"'{where}' must be a non-empty string, got {show(value)}")
    return value


def _positive_list(value, source: str, where: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not value or len(value) > 100 or not all(
            _is_number(v) and v > 0 for v in value):
        _fail(source, f"'{where}' must be a non-empty list of (at most 100) positive numbers, got {show(value)}")
    return tuple(float(v) for v in value)


#: Most seeds a study may ask for (each is a full set of trainings; a typo must not allocate billions).
MAX_SEEDS = 1000


def _spec_values(extra: dict, source: str, where: str, allowed=_SPEC_KEYS) -> dict:
    """Type- and range-check the training settings of one section (returned with lists as tuples)."""
    from hepfm.data.augment import AUGMENTATIONS
    from hepfm.train.trainer import OPTIMIZERS

    _known_keys(extra, allowed, source, where)
    out = dict(extra)
    for key in ("epochs", "batch_size", "patience"):
        if key in out:
            out[key] = _int(out[key], source, f"{where}.{key}")
    for key in ("lr_grid", "backbone_ratios", "frozen_lr_grid"):
        if key in out and not (key == "frozen_lr_grid" and out[key] is None):
            out[key] = _positive_list(out[key], source, f"{where}.{key}")
    if "recipe" in out:
        out["recipe"] = _recipe_axes(out["recipe"], source, f"{where}.recipe")
    for key in ("lr", "backbone_lr"):
        if out.get(key) is not None and not (_is_number(out[key]) and out[key] > 0):
            _fail(source, f"'{where}.{key}' must be a positive number, got {show(out[key])}")
    if "optimizer" in out and out["optimizer"] not in OPTIMIZERS:
        _fail(source, f"'{where}.optimizer' must be one of {', '.join(OPTIMIZERS)}, got {show(out['optimizer'])}")
    train = {k: v for k, v in out.items() if k in TRAIN_KEYS}
    for key, value in train.items():
        problem = field_problem(TrainConfig, key, value)
        if problem:
            _fail(source, f"'{where}.{key}' {problem}")
    if "augment" in train:
        unknown = sorted(set(train["augment"]) - set(AUGMENTATIONS))
        if unknown:
            _fail(source, f"'{where}.augment': unknown augmentation(s) {show(unknown)} (choose from "
                  f"{', '.join(AUGMENTATIONS)})")
        out["augment"] = tuple(train["augment"])
    try:
        TrainConfig(**train)  # ranges and choices, as the trainer checks them
    except ConfigurationError as exc:
        _fail(source, f"'{where}': {exc}")
    return out


def _recipe_axes(value, source: str, where: str) -> dict[str, tuple]:
    """Check the recipe axes: TrainConfig settings, each with a non-empty list of distinct single values."""
    axes = _mapping(value, source, where)
    _known_keys(axes, TRAIN_KEYS, source, where)
    out = {}
    for key, values in axes.items():
        if (not isinstance(values, list) or not values or len(values) > MAX_RECIPE_VALUES
                or any(isinstance(v, (list, dict)) for v in values)):
            _fail(source, f"'{where}.{key}' must be a list of 1 to {MAX_RECIPE_VALUES} single values, got "
                  f"{show(values)}")
        for v in values:
            problem = field_problem(TrainConfig, key, v)
            if problem:
                _fail(source, f"'{where}.{key}' value {problem}")
            try:
                TrainConfig(**{key: v})
            except ConfigurationError as exc:
                _fail(source, f"'{where}.{key}': {exc}")
        if len(set(map(repr, values))) != len(values):
            _fail(source, f"'{where}.{key}' lists a value twice: {show(values)}")
        out[key] = tuple(values)
    return out


def _train_spec(raw, source: str, section: str, default: TrainSpec) -> TrainSpec:
    raw = _mapping(raw, source, section)
    _known_keys(raw, set(_SPEC_KEYS) | {"by_size", "by_strategy"}, source, section)
    by_size = {}
    for k, v in _by_size_items(raw.pop("by_size", None), source, f"{section}.by_size"):
        by_size[k] = _spec_values(_mapping(v, source, f"{section}.by_size.{k}"), source, f"{section}.by_size.{k}")
    by_strategy = {}
    for k, v in _mapping(raw.pop("by_strategy", None), source, f"{section}.by_strategy").items():
        if k not in STRATEGIES:
            _fail(source, f"{section}.by_strategy: unknown strategy {show(k)}; choose from {', '.join(STRATEGIES)}")
        by_strategy[k] = _spec_values(_mapping(v, source, f"{section}.by_strategy.{k}"), source,
                                      f"{section}.by_strategy.{k}")
    raw = _spec_values(raw, source, section)
    spec = default.with_overrides(raw)
    return dataclasses.replace(spec, by_size=by_size, by_strategy=by_strategy)


def _by_size_items(value, source: str, where: str):
    if value is None:
        return []
    if not isinstance(value, dict):
        _fail(source, f"'{where}' must be a mapping of training sizes to settings, got {show(value)}")
    for k in value:
        if not _is_int(k) or k < 1:
            _fail(source, f"'{where}': {show(k)} is not a training size (a positive integer)")
    return list(value.items())


def _tasks(raw, source: str) -> list[TaskSpec]:
    if not raw:
        _fail(source, "'tasks' is empty")
    if isinstance(raw, dict):
        items = list(_mapping(raw, source, "tasks").items())
    elif isinstance(raw, list):
        items = [(name, None) for name in raw]
    else:
        _fail(source, f"'tasks' must be a list of task names or a mapping of task names, got {show(raw)}")
    out = []
    for name, spec in items:
        try:
            check_name(name, "task name")
        except ConfigurationError as exc:
            _fail(source, f"tasks: {exc}")
        if spec is None:
            if name not in TASKS:
                _fail(source, f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (or give "
                      "{signal: STORE, background: STORE})")
            out.append(TaskSpec(name, *TASKS[name]))
            continue
        if not isinstance(spec, dict) or set(spec) != {"signal", "background"}:
            _fail(source, f"task {name!r} must be a known task name or have exactly 'signal' and 'background'")
        for role in ("signal", "background"):
            value = _string(spec[role], source, f"tasks.{name}.{role}")
            if value in PROCESSES:
                continue
            if not Path(value).exists():
                _fail(source, f"task {name!r}: {role} {show(value)} is neither a catalog process nor an existing "
                      "store")
        external = not (spec["signal"] in PROCESSES and spec["background"] in PROCESSES)
        out.append(TaskSpec(name, str(spec["signal"]), str(spec["background"]), external))
    return out


_GENERATION_KEYS = ("seed", "pretrain_events", "downstream_events", "workers", "constituents", "pretrain_processes")
_BY_TASK_KEYS = ("lr", *TRAIN_KEYS)


def parse_config(raw: dict, source: str = "<dict>") -> StudyConfig:
    """Validate a study configuration dict (as read from YAML) and return a :class:`StudyConfig`.

    Every field is type- and range-checked; an error is one line naming ``source`` and the key.
    """
    from hepfm.models.record import known
    from hepfm.models.registry import model_names
    from hepfm.models.saving import read_record

    if not isinstance(raw, dict):
        _fail(source, f"a study configuration must be a mapping, got {type(raw).__name__}")
    raw = _mapping(raw, source, "(top level)")
    allowed = {"tasks", "sizes", "strategies", "seeds", "test_size", "generation", "pretrain", "finetune", "cka",
               "model", "model_options", "jet_model"}
    _known_keys(raw, allowed, source, "(top level)")
    tasks = _tasks(raw.get("tasks"), source)
    sizes = raw.get("sizes") or []
    if not isinstance(sizes, list) or not sizes or len(sizes) > 1000 or not all(
            _is_int(s) and s > 0 for s in sizes):
        _fail(source, f"'sizes' must be a list of positive integers (events per class), got {show(sizes)}")
    strategies = raw.get("strategies") or [BASELINE, "finetune_multiclass"]
    if not isinstance(strategies, list):
        _fail(source, f"'strategies' must be a list of strategy names, got {show(strategies)}")
    for s in strategies:
        if not isinstance(s, str) or s not in STRATEGIES:
            _fail(source, f"unknown strategy {show(s)}; choose from {', '.join(STRATEGIES)}")
        check_name(s, "strategy", source)
    if BASELINE not in strategies:
        _fail(source, f"'strategies' must include the baseline {BASELINE!r}; gains are measured against it")
    seeds = _int(raw.get("seeds", 5), source, "seeds", maximum=MAX_SEEDS)
    test_size = _int(raw.get("test_size", 5000), source, "test_size")
    gen = _mapping(raw.get("generation"), source, "generation")
    _known_keys(gen, _GENERATION_KEYS, source, "generation")
    for key in ("seed", "constituents"):
        if key in gen:
            _int(gen[key], source, f"generation.{key}", minimum=0)
    for key in ("pretrain_events", "downstream_events", "workers"):
        if key in gen:
            _int(gen[key], source, f"generation.{key}")
    pre = _mapping(raw.get("pretrain"), source, "pretrain")
    # pretrain.<task>: an existing model folder (or shipped name) for that task, as a string; the masked
    # task's section may instead be a mapping of its own options (``regress``, ``augment``, ``model``).
    masked_options = pre.pop("masked") if isinstance(pre.get("masked"), dict) else {}
    multi_heads, multi = None, pre.pop(MULTI_TASK, None)
    if isinstance(multi, dict):
        _known_keys(multi, ("heads", "model"), source, f"pretrain.{MULTI_TASK}")
        if multi.get("heads") is not None:
            try:
                multi_heads = parse_heads(multi["heads"], f"pretrain.{MULTI_TASK}.heads")
            except ConfigurationError as exc:
                _fail(source, str(exc))
            unknown = sorted(set(multi_heads) - set(HEADS))
            if unknown:
                _fail(source, f"pretrain.{MULTI_TASK}.heads: unknown head(s) {show(unknown)} (choose from "
                      f"{', '.join(HEADS)})")
        multi = multi.get("model")
    masked_options = _mapping(masked_options, source, "pretrain.masked")
    pretrained = {}
    for t in PRETRAINING_TASKS:
        if pre.get(t) is not None:
            pretrained[t] = _string(pre[t], source, f"pretrain.{t}")
        pre.pop(t, None)
    if multi is not None:
        pretrained[MULTI_TASK] = _string(multi, source, f"pretrain.{MULTI_TASK}")
    if "model" in masked_options:
        pretrained["masked"] = _string(masked_options.pop("model"), source, "pretrain.masked.model")
    bad = set(masked_options) - {"regress", "augment"}
    if bad:
        _fail(source, f"pretrain.masked: unknown key(s) {show(sorted(bad))} (allowed: model, regress, augment)")
    from hepfm.data.augment import AUGMENTATIONS

    augment = masked_options.get("augment") or []
    if not isinstance(augment, list) or not all(isinstance(a, str) for a in augment):
        _fail(source, f"pretrain.masked.augment must be a list of augmentation names, got {show(augment)}")
    if set(augment) - set(AUGMENTATIONS):
        unknown = sorted(set(augment) - set(AUGMENTATIONS))
        _fail(source, f"pretrain.masked.augment: unknown augmentation(s) {show(unknown)} (choose from "
              f"{', '.join(AUGMENTATIONS)})")
    regress = masked_options.get("regress", False)
    if not isinstance(regress, bool):
        _fail(source, f"pretrain.masked.regress must be true or false, got {show(regress)}")
    masked_options = {"regress": regress, "augment": list(augment)}
    pre_max = pre.pop("max_events", None)
    if pre_max is not None:
        _int(pre_max, source, "pretrain.max_events")
    pre_data = pre.pop("data", None)
    if pre_data is not None:
        pre_data = _string(pre_data, source, "pretrain.data")
    by_task = {}
    for task, extra in _mapping(pre.pop("by_task", None), source, "pretrain.by_task").items():
        if task not in (*PRETRAINING_TASKS, MULTI_TASK):
            _fail(source, f"pretrain.by_task: unknown pretraining task {show(task)}")
        by_task[task] = _spec_values(_mapping(extra, source, f"pretrain.by_task.{task}"), source,
                                     f"pretrain.by_task.{task}", _BY_TASK_KEYS)
    if pre_data is not None and not Path(pre_data).exists():
        _fail(source, f"pretrain.data: no such event store {show(pre_data)}")
    pre_processes = gen.get("pretrain_processes", list(PRETRAINING))
    if (not pre_processes or not isinstance(pre_processes, list)
            or not all(isinstance(p, str) and (p in PROCESSES or p in GROUPS) for p in pre_processes)):
        _fail(source, "generation.pretrain_processes must be a list of catalog processes (or groups: "
              f"{', '.join(GROUPS)}), got {show(pre_processes)}")
    pre_processes = expand_names(pre_processes)  # a group stands for its processes
    cka = _mapping(raw.get("cka"), source, "cka")
    _known_keys(cka, ("events", "size"), source, "cka")
    cka_events = _int(cka.get("events", 2000), source, "cka.events")
    if cka.get("size") is not None:
        _int(cka["size"], source, "cka.size")
    model = _string(raw.get("model", "graphnet"), source, "model")
    jet_model = _string(raw.get("jet_model", "jet_transformer"), source, "jet_model")
    model_options = _mapping(raw.get("model_options"), source, "model_options")
    cfg = StudyConfig(
        tasks=tasks, sizes=sorted(sizes), strategies=list(strategies), seeds=seeds,
        test_size=test_size, generation_seed=gen.get("seed", 7),
        pretrain_events=gen.get("pretrain_events", 5000), pretrain_processes=pre_processes,
        downstream_events=gen.get("downstream_events", 20000),
        workers=gen.get("workers", 2), model=model,
        model_options=model_options, jet_model=jet_model,
        constituents=gen.get("constituents", 0),
        pretrain=_train_spec(pre, source, "pretrain", TrainSpec(lr=defaults.LR)),
        pretrain_by_task=by_task,
        pretrain_max_events=pre_max, pretrained=pretrained, pretrain_data=pre_data, masked=masked_options,
        multi_heads=multi_heads,
        finetune=_train_spec(raw.get("finetune"), source, "finetune", TrainSpec()),
        cka_events=cka_events, cka_size=cka.get("size"), source=source)
    if cfg.pretrain.lr is None:
        _fail(source, "'pretrain.lr' must be given (pretraining is not tuned)")
    if MULTI_TASK in cfg.pretraining_tasks and MULTI_TASK not in cfg.pretrained and not cfg.multi_heads:
        _fail(source, f"the {MULTI_TASK} strategies need pretrain.{MULTI_TASK}.heads (head: loss weight) or a "
              f"pretrained model as pretrain.{MULTI_TASK}")
    _check_combinations(cfg)
    if cfg.model not in model_names():
        _fail(source, f"unknown model {show(cfg.model)}; choose from {', '.join(model_names())}")
    _check_hierarchical(cfg)
    if cfg.cka_size is not None and cfg.cka_size not in cfg.sizes:
        _fail(source, f"cka.size {cfg.cka_size} is not one of the sizes {show(cfg.sizes)}")
    from hepfm.models.pretrained import resolve

    for task, path in cfg.pretrained.items():
        try:
            record = read_record(resolve(path))  # a model folder or a shipped model's name
        except HepfmError as exc:
            _fail(source, f"pretrain.{task}: {exc}")
        if known(record.task) != task:
            _fail(source, f"pretrain.{task}: {show(path)} was pretrained for {show(known(record.task))}, not {task!r}")
    need = block_events(max(cfg.sizes)) + cfg.test_size
    if any(not t.external for t in tasks) and need > cfg.downstream_events:
        _fail(source, f"size {max(cfg.sizes)} per class needs {need} events per process (training + "
              f"{VAL_FRACTION:.0%} validation + {cfg.test_size} test), but generation.downstream_events is "
              f"{cfg.downstream_events}")
    _check_external_sizes(cfg, need)
    return cfg


def _check_combinations(cfg: StudyConfig) -> None:
    """Every run's settings together (a per-size value may clash with a per-strategy one) make a TrainConfig."""
    specs = [("pretrain", cfg.pretrain), *((f"pretrain.by_task.{t}", cfg.pretrain.with_overrides(extra))
                                          for t, extra in cfg.pretrain_by_task.items())]
    specs += [(f"finetune ({strategy}, size {size})", cfg.finetune.for_cell(size, strategy))
              for strategy in cfg.strategies for size in cfg.sizes]
    for where, spec in specs:
        try:
            spec.train_config()
        except ConfigurationError as exc:
            _fail(cfg.source, f"{where}: {exc}")


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
    return safe_yaml(path, "study configuration")


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML file."""
    return parse_config(read_yaml(path), str(path))


