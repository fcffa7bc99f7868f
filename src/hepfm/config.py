"""The typed configuration tree of a training run: one source for every setting, its default, check and help.

A run is described by nested dataclasses:

* :class:`TrainConfig` (section ``train``): the trainer's settings, read by :func:`hepfm.train.trainer.fit`;
* :class:`ModelConfig` (section ``model``): the backbone, its options and the model it starts from;
* :class:`DataConfig` (section ``data``): the events, their split and how they are read;
* :class:`RunConfig`: the tree of one ``hepfm pretrain`` or ``hepfm finetune`` run (the sections above plus
  the task or strategy, the learning rates and where the run goes), as written to a run folder's ``run.yaml``
  and read by ``--config``;
* the study's configuration (:mod:`hepfm.study.config`) is the fourth section: its ``pretrain`` and
  ``finetune`` settings may set any :class:`TrainConfig` field, checked by :func:`check_fields`.

Each field's ``metadata["help"]`` is its documentation and the help of its command-line option (the CLI's
training options are generated from :class:`TrainConfig`, :func:`cli_fields`). Defaults that depend on another
setting are resolved here, once, for the library, the command line and the study alike: ``sgd-cosine`` trains
at batch 512 (:attr:`TrainConfig.batch_size` left unset) and at rates 1e-2 (head) and 1e-2 / 10 (pretrained
layers) unless given (:func:`learning_rates`).

This module imports nothing else from hepfm but its errors, so every layer may import it.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

from hepfm.errors import ConfigurationError

#: The paper's defaults (arXiv:2412.10665): 1e-4 for a model trained from scratch and for a new output layer,
#: 10x lower for pretrained layers; the study tunes the rates unless a configuration fixes them.
LR = 1e-4
BACKBONE_LR = 1e-5
EPOCHS = 50
PATIENCE = 5
BATCH_SIZE = 1024

OPTIMIZERS = ("adam", "adamw", "sgd", "sgd-cosine")
#: The KEK study's recipe: SGD with the learning rate annealed from 1e-2 to 1e-4 (cosine), batch 512.
SGD_COSINE = {"lr": 1e-2, "min_lr": 1e-4, "batch_size": 512}
#: With ``sgd-cosine``, pretrained layers train this many times slower than the new output layer.
SGD_COSINE_BACKBONE_RATIO = 0.1
SCHEDULES = ("exponential", "cosine", "constant")
LR_SCALINGS = ("none", "linear")
#: Learning rates above this diverge for every model here; a typo such as 1e30 is refused, not trained.
MAX_LR = 10.0


def setting(default=dataclasses.MISSING, help: str = "", *, flags: tuple[str, ...] = (), cli: bool = True,
            factory=dataclasses.MISSING):
    """A dataclass field with its documentation (``help``), its command-line ``flags`` (default: from the name)
    and whether the command line offers it (``cli``)."""
    return field(default=default, default_factory=factory, metadata={"help": help, "flags": flags, "cli": cli})


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (all settable from the command line, a run.yaml or a study config)."""

    epochs: int = setting(EPOCHS, "Maximum number of epochs (early stopping may end sooner).")
    batch_size: int | None = setting(None, f"Global batch size (split over torchrun processes); default "
                                     f"{BATCH_SIZE}, {SGD_COSINE['batch_size']} with --optimizer sgd-cosine.")
    optimizer: str = setting("adam", "adam, adamw, sgd, or sgd-cosine (the KEK study's recipe: SGD, the rate "
                             "annealed by a cosine from --lr, default 1e-2, to --lr/100 over --epochs; batch 512; "
                             "ignores --schedule).")
    weight_decay: float = setting(0.0, "Weight decay of every parameter group (decoupled with adamw).")
    momentum: float = setting(0.9, "Momentum (sgd, sgd-cosine).")
    schedule: str = setting("exponential", "exponential (LR x --lr-decay per epoch), cosine (annealed to 0 over "
                            "--epochs) or constant.")
    lr_decay: float = setting(0.99, "Learning-rate factor per epoch of the exponential schedule.")
    patience: int = setting(PATIENCE, "Stop after this many epochs without a better validation loss.")
    min_delta: float = setting(0.0, "Smallest decrease of the validation loss that counts as better.")
    seed: int = setting(0, "Seed of the initialisation, the batch order, the masks (masked pretraining) and the "
                        "training subset (fine-tuning).")
    bf16: bool | None = setting(None, "bf16 autocast (default: on for CUDA, off on the CPU).",
                                flags=("--bf16/--no-bf16",))
    compile: bool = setting(False, "torch.compile the model (GPU).", flags=("--compile",))
    warmup_steps: int = setting(0, "Optimiser steps of linear learning-rate warm-up (0: none).")
    lr_scaling: str = setting("none", "none, or linear: learning rates x batch size / --lr-reference-batch "
                              "(large batches).")
    lr_reference_batch: int = setting(BATCH_SIZE, "The batch size the given learning rates are for "
                                      "(--lr-scaling linear).")
    read_ahead: int = setting(2, "Batches a streamed store reads ahead in a background thread (0: none).")
    augment: tuple[str, ...] = setting(help="Augmentation: phi, eta_flip or boost (repeatable).",
                                       flags=("--augment",), factory=tuple)
    checkpoint_every: int = setting(0, "Also checkpoint every N batches (0: at the end of each epoch only).")
    eval_batch_size: int = setting(8192, "Events per batch when evaluating (the results do not depend on it).")
    cache_frozen: bool = setting(True, "Compute what a frozen part computes once per event (the same steps, "
                                 "faster).")
    progress: bool = setting(True, "Show progress bars.")
    tensorboard: bool = setting(True, "Write TensorBoard logs (when tensorboard is installed).")
    stop_after_batches: int | None = setting(None, "Tests: stop after this many batches, as if killed.", cli=False)
    ema_decay: float = setting(0.0, "Keep an exponential moving average of the weights, updated after every "
                               "optimiser step with this decay (e.g. 0.999); it is validated, restored and saved "
                               "as the trained model (0: off).")
    layer_decay: float = setting(1.0, "Layer-wise learning-rate decay when fine-tuning: the pretrained backbone's "
                                 "top layer trains at the backbone rate and each layer below it at this factor "
                                 "times the rate of the layer above (1: every pretrained layer at the backbone "
                                 "rate).")
    linear_probe: bool = setting(False, "LP-FT when fine-tuning: first train the new output layer alone on the "
                                 "frozen backbone (a 'linear probe', kept in the run folder's probe/), then "
                                 "fine-tune every layer starting from it.")
    max_train_time_s: float = setting(0.0, "Stop at the end of the first epoch whose cumulative training time "
                                      "(wall seconds, validation excluded, summed over resumes) reaches this; "
                                      "the best validation epoch is kept as usual. For comparing models at "
                                      "equal compute (0: no limit).")

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ConfigurationError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigurationError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.lr_scaling not in LR_SCALINGS:
            raise ConfigurationError(f"unknown learning-rate scaling {self.lr_scaling!r}; choose from "
                                     f"{', '.join(LR_SCALINGS)}")
        if self.batch_size is None:  # the optimizer's batch size
            self.batch_size = SGD_COSINE["batch_size"] if self.optimizer == "sgd-cosine" else BATCH_SIZE
        for name, low in (("epochs", 1), ("batch_size", 1), ("patience", 1), ("lr_reference_batch", 1),
                          ("eval_batch_size", 1), ("warmup_steps", 0), ("read_ahead", 0), ("checkpoint_every", 0),
                          ("seed", 0)):
            check_count(getattr(self, name), name, low)
        for name, low, high in (("weight_decay", 0.0, 1.0), ("momentum", 0.0, 1.0), ("lr_decay", 1e-6, 1.0),
                                ("min_delta", 0.0, 1e6)):
            check_number(getattr(self, name), name, low, high)
        check_number(self.ema_decay, "ema_decay", 0.0, 1.0, high_open=True)
        check_number(self.layer_decay, "layer_decay", 0.0, 1.0, low_open=True)
        check_number(self.max_train_time_s, "max_train_time_s", 0.0, 1e9)
        if not isinstance(self.linear_probe, bool):
            raise ConfigurationError(f"linear_probe must be true or false, got {self.linear_probe!r}")
        self.augment = tuple(self.augment)


def learning_rates(optimizer: str, lr: float | None = None, backbone_lr: float | None = None) -> tuple[float, float]:
    """(rate of the new or every layer, rate of pretrained layers) with unset ones filled in: the KEK recipe's
    1e-2 and 1e-2 / 10 (the given ``lr`` / 10) for ``sgd-cosine``, else :data:`LR` and :data:`BACKBONE_LR`."""
    cosine = optimizer == "sgd-cosine"
    lr = lr if lr is not None else (SGD_COSINE["lr"] if cosine else LR)
    if backbone_lr is None:
        backbone_lr = lr * SGD_COSINE_BACKBONE_RATIO if cosine else BACKBONE_LR
    return lr, backbone_lr


@dataclass
class ModelConfig:
    """Section ``model`` of a run: which backbone, with which options, starting from which model."""

    name: str | None = setting(None, "Backbone (default: graphnet; jet_transformer for jet tagging).")
    options: dict = setting(help="Backbone options (key: value), e.g. share_blocks: true.", factory=dict)  # noqa: RUF009 (a dataclasses.field)
    init_from: str | None = setting(None, "Model folder or shipped name to start from.")


@dataclass
class DataConfig:
    """Section ``data`` of a run: the events, their split and how they are read."""

    path: str | None = setting(None, "Event store (pretraining).")
    signal: str | None = setting(None, "Signal events: a store or one process folder of a store (fine-tuning).")
    background: str | None = setting(None, "Background events (fine-tuning).")
    split_seed: int = setting(0, "Seed of the train/validation/test split.")
    max_events: int | None = setting(None, "Read at most this many events per process.")
    stream: bool | None = setting(None, "Stream the training split from disk (pretraining; default: when the "
                                  "store does not fit in memory).")
    train_size: int | None = setting(None, "Training events per class (fine-tuning; default: all available).")
    test_size: int | None = setting(None, "Test events per class (fine-tuning; default: 20% of the smaller class).")
    classes: list | None = setting(None, "Jet tagging: train on these flavours only.")  # noqa: RUF009 (a dataclasses.field)


@dataclass
class RunConfig:
    """The resolved tree of one ``hepfm pretrain`` or ``hepfm finetune`` run (a run folder's run.yaml)."""

    command: str = setting("pretrain", "pretrain or finetune.")
    task: str | None = setting(None, "Pretraining task (pretrain).")
    regress: bool = setting(False, "Masked task: also regress the hidden object's kinematics (pretrain).")
    heads: dict | None = setting(None, "Multi-task pretraining (task multi): each head's loss weight, e.g. "  # noqa: RUF009
                                 "multiclass=1,origin=0.5,heavy=0.2 (heads: multiclass, multilabel, origin, heavy, "
                                 "masked).")
    strategy: str | None = setting(None, "finetune, frozen or scratch (finetune).")
    frozen_part: str | None = setting(None, "frozen: 'head' or 'decoder' (finetune).")
    lr: float | None = setting(None, "Learning rate of the new output layer (of everything for scratch).")
    backbone_lr: float | None = setting(None, "Learning rate of the pretrained layers (finetune).")
    out: str | None = setting(None, "Run folder.")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    overwrite: bool = setting(False, "Replace a finished model in the run folder.")
    allow_overlap: bool = setting(False, "Go on when held-out events were in the pretraining data (finetune).")
    train: TrainConfig = setting(factory=TrainConfig, help="Trainer settings.")  # noqa: RUF009 (a dataclasses.field)
    model: ModelConfig = setting(factory=ModelConfig, help="Backbone.")  # noqa: RUF009 (a dataclasses.field)
    data: DataConfig = setting(factory=DataConfig, help="Events.")  # noqa: RUF009 (a dataclasses.field)

    def to_dict(self) -> dict:
        """The tree as plain data (YAML-ready: tuples as lists), sections last."""
        def plain(value):
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return {k: plain(v) for k, v in dataclasses.asdict(self).items()}


def parse_heads(value, where: str = "heads") -> dict[str, float] | None:
    """Multi-task heads and their loss weights from ``name=weight,name=weight`` or a mapping (None stays None);
    a weight must be a finite number >= 0. Which names exist is the workflow's check."""
    if value is None:
        return None
    if isinstance(value, str):
        pairs = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            name, sep, weight = part.partition("=")
            try:
                pairs[name.strip()] = float(weight) if sep else 1.0
            except ValueError:
                raise ConfigurationError(f"{where}: weight {weight!r} of head {name.strip()!r} is not a number "
                                         "(write name=weight,name=weight)") from None
        value = pairs
    if not isinstance(value, dict) or not value:
        raise ConfigurationError(f"{where}: give at least one head with its weight, e.g. multiclass=1,origin=0.5")
    out = {}
    for name, weight in value.items():
        ok = isinstance(weight, (int, float)) and not isinstance(weight, bool) and math.isfinite(weight)
        if not ok or weight < 0:
            raise ConfigurationError(f"{where}: the loss weight of head {name!r} must be a finite number >= 0, "
                                     f"got {weight!r}")
        out[str(name)] = float(weight)
    return out


SECTIONS = {"train": TrainConfig, "model": ModelConfig, "data": DataConfig}


def config_fields(cls) -> dict[str, dataclasses.Field]:
    """The fields of a configuration dataclass by name."""
    return {f.name: f for f in dataclasses.fields(cls)}


def cli_fields(cls=TrainConfig) -> list[dataclasses.Field]:
    """The fields of ``cls`` that the command line offers as options, in declaration order."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def field_types(cls) -> dict[str, object]:
    """The resolved type annotation of each field of ``cls``."""
    return typing.get_type_hints(cls)


def _kind_ok(value, annotation) -> bool:
    """Whether a value read from a file has the type a field declares (bool is not a number here)."""
    args = typing.get_args(annotation)
    if type(None) in args:
        if value is None:
            return True
        rest = [a for a in args if a is not type(None)]
        return any(_kind_ok(value, a) for a in rest)
    origin = typing.get_origin(annotation) or annotation
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        return isinstance(value, (list, tuple)) and len(value) <= 100 and all(isinstance(v, str) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return dataclasses.is_dataclass(origin) and isinstance(value, dict)


def field_problem(cls, key: str, value) -> str | None:
    """What is wrong with ``value`` (as read from a file) for field ``key`` of ``cls`` ("must be an integer, got
    'x'"), or None when its type fits (ranges are checked by ``cls`` itself)."""
    annotation = field_types(cls)[key]
    return None if _kind_ok(value, annotation) else f"must be {_describe(annotation)}, got {_show(value)}"


def check_fields(cls, values: dict, where: str, allowed=None) -> dict:
    """``values`` (as read from a file) checked against the fields of ``cls``: a key that is not a field (or not in
    ``allowed``) or a value of the wrong type is a one-line ConfigurationError naming ``where`` and the key.
    Returns the values with lists as tuples where the field is a tuple; ranges are checked by ``cls`` itself."""
    if not isinstance(values, dict):
        raise ConfigurationError(f"{where}: must be a mapping, got {type(values).__name__}")
    names = set(config_fields(cls)) if allowed is None else set(allowed)
    unknown = sorted(str(k) for k in values if k not in names)
    if unknown:
        raise ConfigurationError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(names))})")
    types = field_types(cls)
    out = {}
    for key, value in values.items():
        problem = field_problem(cls, key, value)
        if problem:
            raise ConfigurationError(f"{where}: '{key}' {problem}")
        out[key] = tuple(value) if typing.get_origin(types[key]) is tuple else value
    return out


def _describe(annotation) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = typing.get_origin(annotation) or annotation
    if args and base not in (tuple, list, dict):
        base = typing.get_origin(args[0]) or args[0]
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             tuple: "a list of names", list: "a list of names", dict: "a mapping"}
    text = words.get(base, "a mapping")
    return text + (" or null" if type(None) in typing.get_args(annotation) else "")


def _show(value, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def train_config(values: dict, where: str = "train", allowed=None) -> TrainConfig:
    """A :class:`TrainConfig` from settings read from a file (``where`` names it in errors)."""
    values = check_fields(TrainConfig, values, where, allowed)
    try:
        return TrainConfig(**values)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def run_config(raw: dict, where: str) -> RunConfig:
    """A :class:`RunConfig` from a run.yaml's content; unknown keys and ill-typed values are refused, naming
    ``where`` (the file) and the key."""
    raw = check_fields(RunConfig, raw, where)
    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.pop(name, None) or {}
        sections[name] = (train_config(values, f"{where}: train") if cls is TrainConfig
                          else cls(**check_fields(cls, values, f"{where}: {name}")))
    return RunConfig(**raw, **sections)


_SPOKEN = {"warmup_steps": "warm-up steps"}  # where the field's name is not how the docs say it


def _option(name: str) -> str:
    return f"{_SPOKEN.get(name, name)} (--{name.replace('_', '-')})"


def check_count(value, name: str, low: int = 1, high: int = 2**62) -> None:
    """Refuse a count setting (epochs, batch size, patience...) that is not an integer in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{_option(name)} must be an integer of at least {low}"
                                 f"{'' if high == 2**62 else f' and at most {high}'}, got {value!r}")


def check_number(value, name: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    """Refuse a real setting that is not a finite number in [low, high] (``low_open``/``high_open``: that end
    excluded)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > high or value < low or (low_open and value == low) or (high_open and value == high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigurationError(f"{_option(name)} must be a finite number in {interval}, got {value!r}")


def check_learning_rate(value, name: str = "lr", allow_zero: bool = False) -> None:
    """Refuse a learning rate that is not a finite number in (0, 10] (``allow_zero``: [0, 10], a frozen group)."""
    check_number(value, name, 0.0, MAX_LR, low_open=not allow_zero)


def check_max_events(value, name: str = "max_events") -> None:
    """Refuse an event cap that is not None (all events) or a positive integer."""
    if value is not None:
        check_count(value, name, 1)
