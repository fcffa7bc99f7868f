"""Command-line options shared by the training, study and inference commands.

The trainer's options are not written here: :func:`train_options` gives a command one option per
:class:`~hepfm.config.TrainConfig` field, named after it, with the field's help and default, so a new trainer
setting reaches ``hepfm pretrain`` and ``hepfm finetune`` by being declared once. :func:`resolved` merges a
``--config`` run file (the tree of :class:`~hepfm.config.RunConfig`) under the options given on the command line.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Optional

import typer

from hepfm.config import RunConfig, TrainConfig, cli_fields, field_types, run_config
from hepfm.errors import ConfigurationError

_DEVICE = typer.Option("auto", help="auto, cpu, cuda or cuda:N.")
_OVERWRITE = typer.Option(False, "--overwrite", help="Replace a finished model in --out.")
_PROGRESS = typer.Option(True, help="Show progress bars.")
_MAX_EVENTS = typer.Option(None, help="Read at most this many events per process.")
_ALLOW_OVERLAP = typer.Option(False, "--allow-overlap", help="Go on (with a warning; the result is marked "
                              "overlap: true) when validation or test events were in the pretraining data.")
_CONFIG = typer.Option(None, "--config", help="A run file (YAML: sections train, model, data; e.g. the run.yaml "
                       "of an earlier run): its settings replace the defaults, options given here replace its.")
_EXECUTOR = typer.Option("local", help="Where the jobs run: local (this machine's processes) or dask (tasks of a "
                         "Dask cluster: --scheduler, --cluster, or else a local cluster; needs hepfm[cluster]).")
_SCHEDULER = typer.Option(None, help="With --executor dask: the address of a running Dask scheduler, e.g. "
                          "tcp://head-node:8786 (its workers must see the output folder).")
_CLUSTER = typer.Option(None, help="With --executor dask: a cluster file (YAML: kind slurm|htcondor|pbs|lsf|sge|"
                        "local, jobs, options) from which dask-jobqueue starts the workers as batch jobs.")


def executor_from_options(kind: str, scheduler: Optional[str], cluster: Optional[Path]):
    """The :class:`hepfm.executors.Executor` of the --executor, --scheduler and --cluster options (Dask is not
    imported here)."""
    from hepfm.executors import Executor

    return Executor(kind, scheduler, None if cluster is None else str(cluster))


def _option_type(annotation):
    """The type typer parses a field's option as (a tuple field is a repeatable option)."""
    if typing.get_origin(annotation) is tuple:
        return Optional[list[str]]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) < len(typing.get_args(annotation)):  # X | None
        return Optional[args[0]]
    return annotation


def train_options(command):
    """Append to ``command``'s signature one option per command-line field of TrainConfig; typer passes their
    values in the command's ``**train``."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    types = field_types(TrainConfig)
    added = []
    for f in cli_fields(TrainConfig):
        default = None if f.default is dataclasses.MISSING else f.default
        option = typer.Option(default, *f.metadata["flags"], help=f.metadata["help"])
        added.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                       annotation=_option_type(types[f.name])))
    command.__signature__ = signature.replace(parameters=own + added)
    return command


#: Where a training command's options live in the run tree: option -> (section, key); None: the top level.
#: TrainConfig's options are section ``train``, under their own names.
TREE = {"task": (None, "task"), "regress": (None, "regress"), "heads": (None, "heads"), "strategy": (None, "strategy"),
        "frozen_part": (None, "frozen_part"), "lr": (None, "lr"), "backbone_lr": (None, "backbone_lr"),
        "out": (None, "out"), "device": (None, "device"), "overwrite": (None, "overwrite"),
        "allow_overlap": (None, "allow_overlap"), "model": ("model", "name"), "model_option": ("model", "options"),
        "init_from": ("model", "init_from"), "data": ("data", "path"), "signal": ("data", "signal"),
        "background": ("data", "background"), "split_seed": ("data", "split_seed"),
        "max_events": ("data", "max_events"), "stream": ("data", "stream"), "train_size": ("data", "train_size"),
        "test_size": ("data", "test_size"), "classes": ("data", "classes")}
_TRAIN = {f.name for f in cli_fields(TrainConfig)}


def _place(name: str) -> tuple[str | None, str]:
    return ("train", name) if name in _TRAIN else TREE[name]


def _from_file(path: Path, command: str, options) -> dict:
    """The options a run file sets, by option name; a key this command has no option for is refused."""
    from hepfm.study.config import safe_yaml

    raw = safe_yaml(path, "run configuration")
    if raw is None:
        return {}
    where = str(path)
    run_config(raw, where)  # every section and value checked against the tree's types
    if raw.get("command", command) != command:
        raise ConfigurationError(f"{where}: a run file for hepfm {raw['command']}, not hepfm {command}")
    by_place = {_place(name): name for name in options if name in _TRAIN or name in TREE}
    out = {}
    for key, value in raw.items():
        if key == "command":
            continue
        for sub, item in (value.items() if isinstance(value, dict) and key in ("train", "model", "data")
                          else [(None, value)]):
            place = (key, sub) if sub is not None else (None, key)
            if place not in by_place:
                shown = key if sub is None else f"{key}.{sub}"
                raise ConfigurationError(f"{where}: unknown key {shown!r} for hepfm {command}")
            out[by_place[place]] = item
    return out


def resolved(ctx: typer.Context, config: Path | None) -> dict:
    """The command's option values: given on the command line, else set in the ``config`` run file, else the
    option's default."""
    values = dict(ctx.params)
    values.pop("config", None)
    if config is None:
        return values
    for name, value in _from_file(config, ctx.info_name, values).items():
        source = ctx.get_parameter_source(name)  # by name: typer may bring its own copy of click
        if getattr(source, "name", None) not in ("COMMANDLINE", "ENVIRONMENT"):
            values[name] = value
    return values


def train_values(values: dict) -> dict:
    """The TrainConfig fields among a command's option values (augment as a tuple)."""
    out = {k: v for k, v in values.items() if k in _TRAIN}
    out["augment"] = tuple(out.get("augment") or ())
    return out


def run_tree(command: str, values: dict, cfg: TrainConfig, **resolved_values) -> dict:
    """The resolved tree of a run (what its run.yaml records): every option of the command in its section, the
    trainer's settings as resolved, and ``resolved_values`` (e.g. the learning rates) replacing given ones."""
    tree = RunConfig(command=command).to_dict()
    keep = {"command", "train", "model", "data"}
    for name, value in {**values, **resolved_values}.items():
        if name in _TRAIN:
            continue
        section, key = TREE[name]
        if isinstance(value, Path):
            value = str(value)
        if section is None:
            tree[key] = value
            keep.add(key)
        else:
            tree[section][key] = value
    tree["train"] = {k: v for k, v in RunConfig(train=cfg).to_dict()["train"].items() if k in _TRAIN}
    used = {TREE[n] for n in values if n in TREE}
    for section in ("model", "data"):
        tree[section] = {k: v for k, v in tree[section].items() if (section, k) in used}
    return {k: v for k, v in tree.items() if k in keep}
