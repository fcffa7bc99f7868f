"""hepfm models, pretrain, finetune, evaluate: backbones and their training."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from hepfm.cli.app import app, console
from hepfm.cli.options import (
    _ALLOW_OVERLAP,
    _CONFIG,
    _DEVICE,
    _MAX_EVENTS,
    _OVERWRITE,
    resolved,
    run_tree,
    train_options,
    train_values,
)
from hepfm.config import RunConfig, config_fields
from hepfm.errors import HepfmError
from hepfm.train import defaults


def _model_options(options: Optional[list[str]] | dict) -> dict:
    """Backbone options from repeated key=value options (a run file gives them as a mapping)."""
    import json

    if isinstance(options, dict):
        return dict(options)
    out = {}
    for item in options or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise HepfmError(f"--model-option must look like key=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value.strip()
    return out


def _print_summary(out: Path, summary: dict) -> None:
    test = ", ".join(f"{k} {v:.4f}" for k, v in summary["test"].items())
    console.print(f"best epoch {summary['best_epoch']} of {summary['epochs_run']}"
                  f"{' (early stop)' if summary['stopped_early'] else ''}; {summary['train_time_s']:.1f} s training; "
                  f"{summary['parameters']:,} parameters; held-out test: {test}")
    console.print(f"model saved to {out} (load with hepfm.load({str(out)!r}))")



@app.command("models")
def models_cmd(
    outputs: int = typer.Option(12, help="Output width to count parameters for (12 = the pretraining processes)."),
) -> None:
    """List the registered backbones with their parameter counts and default options."""
    from hepfm.models.base import count_parameters
    from hepfm.models.registry import MODELS, PRESETS, create_model

    table = Table(title=f"hepfm backbones (parameters with {outputs} outputs)")
    longest = max(len(n) for n in [*MODELS, *PRESETS])
    table.add_column("model", no_wrap=True, min_width=longest)  # the name to type: never cut
    table.add_column("variant", overflow="fold")
    table.add_column("parameters", no_wrap=True)
    table.add_column("options", overflow="fold")
    variants = {"graphnet": [("default: mean aggregation, residual blocks", {}),
                             ("as published (aggregation=sum residual=false)",
                              {"aggregation": "sum", "residual": False}),
                             ("shared block (share_blocks=true)", {"share_blocks": True})]}
    for name in sorted(MODELS):
        for label, options in variants.get(name, [("default", {})]):
            model = create_model(name, outputs, **options)
            table.add_row(name, label, f"{count_parameters(model):,}", escape(str(model.config)))
    for name, (backbone, options) in sorted(PRESETS.items()):
        model = create_model(name, outputs)
        table.add_row(name, f"named configuration of {backbone}", f"{count_parameters(model):,}",
                      escape(str(options)))
    console.print(table)
    from rich.console import Console

    from hepfm.models.pretrained import describe_shipped, search_path

    shipped = describe_shipped()
    if not shipped:
        console.print(f"pretrained models by name: none installed (searched {', '.join(map(str, search_path()))})")
        return
    # Plain lines, not a table: a name or a path is never cut to fit the terminal (soft wrap: the terminal
    # folds a long line, nothing is inserted into it).
    console.print("pretrained models (use the name wherever a model folder is accepted):", highlight=False)
    for row in shipped:
        if row["error"]:
            console.print(f"  {escape(row['name'])}  [bold red]unreadable[/]: {escape(row['error'])}",
                          highlight=False, soft_wrap=True)
            Console(stderr=True).print(f"hepfm: warning: skipped model {escape(row['name'])}: "
                                       f"{escape(' '.join(row['error'].split()))}", highlight=False, soft_wrap=True)
            continue
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in row["test"].items() if isinstance(v, float))
        console.print(f"  {escape(row['name'])}", highlight=False, soft_wrap=True)
        console.print(f"    {escape(str(row['model']))}, {escape(str(row['task']))} task, {len(row['classes'])} "
                      f"classes; held-out: {escape(metrics or '-')}", highlight=False, soft_wrap=True)
        console.print(f"    model card: {escape(str(row['card'] or '-'))}", highlight=False, soft_wrap=True)


@app.command()
def publish(
    run: Path = typer.Argument(..., help="A pretraining run folder (multiclass or multilabel)."),
    name: str = typer.Option(..., help="The name users load it by, e.g. graphnet-pythia12-multiclass."),
    dest: Path = typer.Option(..., help="Folder of named models (e.g. one in HEPFM_MODEL_PATH)."),
    notes: Optional[Path] = typer.Option(None, help="Markdown for the card's 'How it was made' (commands, times)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a model of that name in --dest."),
) -> None:
    """Publish a pretrained model under a name, with a model card written from its own record.

    Example: hepfm publish runs/pretrain --name my-graphnet --dest /shared/hepfm-models
    (then HEPFM_MODEL_PATH=/shared/hepfm-models hepfm finetune --from my-graphnet ...)
    """
    from hepfm.models.card import publish as run_publish

    text = ""
    if notes is not None:
        try:
            text = notes.read_text()
        except OSError as exc:
            raise HepfmError(f"{notes}: cannot read the notes ({exc.strerror})") from None
    target = run_publish(run, name, dest, notes=text, overwrite=overwrite)
    console.print(f"published {escape(str(run))} as {name} in {escape(str(target))}")


def _required(values: dict, *names: str) -> None:
    for name in names:
        if values[name] is None:
            raise HepfmError(f"--{name.replace('_', '-')} is required (on the command line or in the --config file)")


def _record(out: Path, tree: dict) -> None:
    """Write the run's resolved tree to its folder's run.yaml (rank 0; rerun it with --config)."""
    import yaml

    from hepfm.io.atomic import atomic_write_text
    from hepfm.train.distributed import rank

    if rank() == 0:
        atomic_write_text(out / RUN_FILE, yaml.safe_dump(tree, sort_keys=False))


#: The resolved settings of a run from the command line, in its folder (``--config`` reads it back).
RUN_FILE = "run.yaml"


@app.command()
@train_options
def pretrain(
    ctx: typer.Context,
    data: Optional[Path] = typer.Option(None, help="Event store with the pretraining processes (and truth labels)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder: model, history, checkpoints."),
    task: str = typer.Option("multiclass", help="multiclass (process), multilabel (41 truth labels), masked "
                             "(self-supervised: predict the type of a hidden object; any store, labels ignored), "
                             "jet-tagging (jet flavours; a store made with generate --constituents) or multi "
                             "(several weighted heads: --heads)."),
    regress: bool = typer.Option(False, "--regress", help="masked: also regress the hidden object's kinematics "
                                 "(5 more outputs)."),
    heads: Optional[str] = typer.Option(None, help=config_fields(RunConfig)["heads"].metadata["help"]),
    model: Optional[str] = typer.Option(None, help="Backbone: graphnet (default), transformer or transformer-kek "
                                        "(the KEK study's size, ~11M parameters); for jet-tagging jet_transformer "
                                        "(default) or deepsets."),
    model_option: Optional[list[str]] = typer.Option(None, help="Backbone option key=value, e.g. share_blocks=true."),
    classes: Optional[list[str]] = typer.Option(None, "--class", help="jet-tagging: train on these flavours only "
                                                "(repeat: --class b --class light); default every flavour present."),
    init_from: Optional[Path] = typer.Option(None, "--from", help="Continue from a model pretrained on the same task."),
    lr: Optional[float] = typer.Option(None, help=f"Learning rate (default {defaults.LR}; 1e-2 with sgd-cosine)."),
    split_seed: int = typer.Option(0, help="Seed of the train/validation/test split (80/10/10)."),
    max_events: Optional[int] = _MAX_EVENTS, device: str = _DEVICE, overwrite: bool = _OVERWRITE,
    stream: Optional[bool] = typer.Option(
        None, "--stream/--no-stream",
        help="Stream the training split from disk (default: when the store does not fit in memory)."),
    config: Optional[Path] = _CONFIG,
    **train,
) -> None:
    """Pretrain a backbone on an event store. Rerun the same command to resume a stopped run.

    --task masked needs no labels: pretrain on converted real data (hepfm convert nanoaod ...) as on
    generated events. --task multi --heads multiclass=1,origin=0.5,heavy=0.2: one backbone, several heads.
    Several processes or GPUs: torchrun --nproc-per-node 4 -m hepfm pretrain ...
    The run folder's run.yaml records every setting; hepfm pretrain --config run.yaml repeats the run.

    Jet tagging: hepfm generate ttbar qcd -n 20000 --constituents 32 -o jets;
    hepfm pretrain --data jets --task jet-tagging --model jet_transformer -o runs/jets
    """
    from hepfm.config import TrainConfig, learning_rates, parse_heads
    from hepfm.data.pretraining import JET_PRETRAINING_TASKS
    from hepfm.train.workflows import pretrain as run
    from hepfm.train.workflows import pretrain_jets

    v = resolved(ctx, config)
    _required(v, "data", "out")
    cfg = TrainConfig(**train_values(v))
    lr = learning_rates(cfg.optimizer, v["lr"])[0]
    jets = v["task"] in JET_PRETRAINING_TASKS
    model_name = v["model"] or ("jet_transformer" if jets else "graphnet")
    options = _model_options(v["model_option"])
    data, out = Path(v["data"]), Path(v["out"])
    init_from = None if v["init_from"] is None else Path(v["init_from"])
    common = {"model": model_name, "model_config": options, "cfg": cfg, "lr": lr, "init_from": init_from,
              "split_seed": v["split_seed"], "max_events": v["max_events"], "device": v["device"],
              "overwrite": v["overwrite"]}
    heads = parse_heads(v["heads"], "--heads")
    tree = run_tree("pretrain", v, cfg, lr=lr, model=model_name, model_option=options, heads=heads)
    if jets:
        if v["stream"]:
            raise HepfmError("--stream: jet tagging holds its jets in memory")
        summary = pretrain_jets(data, out, **common, classes=v["classes"] or None)
        _record(out, tree)
        _print_summary(out, summary)
        _print_tagging(summary)
        return
    if v["classes"]:
        raise HepfmError("--class is for --task jet-tagging")
    summary = run(data, out, task=v["task"], **common, stream=v["stream"], regress=v["regress"], heads=heads)
    _record(out, tree)
    _print_summary(out, summary)


def _print_tagging(summary: dict) -> None:
    """Jets per split, padding, and the held-out rejections at fixed signal efficiency with their errors."""
    from hepfm.eval.metrics import accuracy_error, tagging_rejections

    jets = summary["jets"]
    pad = summary["padding_per_real_constituent"]
    acc = summary["test"]["accuracy"]
    console.print(f"jets: {jets['train']} train, {jets['val']} validation, {jets['test']} test; padded slots per "
                  f"real constituent {pad['bucketed']:.3f} bucketed ({pad['unsorted']:.3f} unsorted); "
                  f"test accuracy {acc:.4f} ± {accuracy_error(acc, jets['test']):.4f}")
    t = summary["test_outputs"]
    for row in tagging_rejections(t["scores"], t["y"], t["names"]):
        console.print(f"  {row['signal']} vs {row['background']} at {row['signal_efficiency']:.0%} {row['signal']} "
                      f"efficiency: rejection {row['rejection']:.2f} ± {row['rejection_error']:.2f} "
                      f"(AUC {row['auc']:.4f}; {row['n_signal']} {row['signal']}, {row['n_background']} "
                      f"{row['background']} test jets)")


@app.command()
@train_options
def finetune(
    ctx: typer.Context,
    signal: Optional[Path] = typer.Option(None, help="Signal events: a store or one process folder of a store "
                                          "(DIR/wh)."),
    background: Optional[Path] = typer.Option(None, help="Background events: a store or one process folder of a "
                                              "store."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder: model, history, checkpoints."),
    strategy: str = typer.Option("finetune", help="finetune, frozen or scratch."),
    init_from: Optional[Path] = typer.Option(None, "--from", help="Pretrained model folder or name (finetune, "
                                             "frozen): multiclass, multilabel or masked, its head replaced; a "
                                             "jet-tagging run builds the hierarchical model around its jet backbone."),
    model: str = typer.Option("graphnet", help="Backbone for --strategy scratch without --from; with a jet-tagging "
                              "--from, the event backbone (graphnet or transformer); 'hierarchical' for a "
                              "hierarchical model from scratch (--model-option jet_model=deepsets ...)."),
    model_option: Optional[list[str]] = typer.Option(None, help="Backbone option key=value (scratch)."),
    train_size: Optional[int] = typer.Option(None, help="Training events per class (default: all available)."),
    test_size: Optional[int] = typer.Option(None, help="Test events per class (default: 20% of the smaller class)."),
    lr: Optional[float] = typer.Option(None, help=f"Learning rate of the new output layer (and of everything for "
                                       f"scratch); default {defaults.LR}, 1e-2 with sgd-cosine."),
    backbone_lr: Optional[float] = typer.Option(None, help=f"Learning rate of the pretrained layers (finetune); "
                                                f"default {defaults.BACKBONE_LR}, --lr/10 with sgd-cosine."),
    frozen_part: str = typer.Option("head", help="frozen: retrain the 'head' only or the 'decoder' + head."),
    split_seed: int = typer.Option(0, help="Seed of the fixed test/validation split."),
    max_events: Optional[int] = _MAX_EVENTS, device: str = _DEVICE,
    overwrite: bool = _OVERWRITE, allow_overlap: bool = _ALLOW_OVERLAP,
    config: Optional[Path] = _CONFIG,
    **train,
) -> None:
    """Train a signal-vs-background classifier: fine-tune a pretrained model, train on it frozen, or from scratch.

    Example: hepfm finetune --signal events/wh --background events/zh --from runs/pretrain --train-size 1000 -o runs/wh

    Hierarchical (stores made with --constituents): hepfm finetune --signal ev/x_hh_4b --background ev/qcd
    --from runs/jet-tagging --strategy frozen --model transformer -o runs/hh
    (the run folder's run.yaml records every setting; --config run.yaml repeats the run)
    """
    from hepfm.config import TrainConfig, learning_rates
    from hepfm.data.datasets import BinarySplitPlan
    from hepfm.train.workflows import finetune as run

    v = resolved(ctx, config)
    _required(v, "signal", "background", "out")
    cfg = TrainConfig(**train_values(v))
    lr, backbone_lr = learning_rates(cfg.optimizer, v["lr"], v["backbone_lr"])
    for name in ("train_size", "test_size"):
        if v[name] is not None and v[name] < 1:
            raise HepfmError(f"--{name.replace('_', '-')} must be positive, got {v[name]}")
    plan = BinarySplitPlan(train_size=v["train_size"], test_size=v["test_size"], split_seed=v["split_seed"],
                           seed=cfg.seed)
    options, out = _model_options(v["model_option"]), Path(v["out"])
    init_from = None if v["init_from"] is None else Path(v["init_from"])
    summary = run(Path(v["signal"]), Path(v["background"]), out, strategy=v["strategy"], init_from=init_from,
                  model=v["model"], model_config=options, plan=plan, cfg=cfg, lr=lr, backbone_lr=backbone_lr,
                  frozen_part=v["frozen_part"], max_events=v["max_events"], device=v["device"],
                  overwrite=v["overwrite"], allow_overlap=v["allow_overlap"])
    _record(out, run_tree("finetune", v, cfg, lr=lr, backbone_lr=backbone_lr, model_option=options))
    _print_summary(out, summary)


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="A fine-tuned (binary) model folder."),
    signal: Path = typer.Option(..., help="Signal events (the store the model was trained on, for a held-out test)."),
    background: Path = typer.Option(..., help="Background events."),
    plots: Optional[Path] = typer.Option(None, help="Write the ROC curve (PNG) to this folder."),
    device: str = _DEVICE, allow_overlap: bool = _ALLOW_OVERLAP,
) -> None:
    """Accuracy (threshold 0.5) and ROC AUC on the held-out test split; optionally the ROC curve."""
    from hepfm.train.workflows import evaluate_run

    res = evaluate_run(run, signal, background, device=device, allow_overlap=allow_overlap)
    note = ""
    if res["overlap"]:
        note = " (OVERLAP: some test events were in the training data; not a held-out result)"
    elif not res["held_out"]:
        note = " (not the stores it was trained on: not a held-out split)"
    console.print(f"{run}: accuracy {res['accuracy']:.4f}, ROC AUC {res['auc']:.4f} on {res['n_test']} test events"
                  + note)
    if plots is not None:
        from hepfm.eval.plots import roc_plot

        path = plots / "roc.png"
        roc_plot({f"{run.name} ({res['strategy']})": (res["fpr"], res["tpr"], res["auc"])}, path,
                 title=f"{Path(str(signal)).name} vs {Path(str(background)).name}")
        console.print(f"wrote {path}")
