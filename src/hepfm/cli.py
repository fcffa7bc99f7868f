"""The ``hepfm`` command line. Each subcommand is a thin typed function over the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hepfm.errors import HepfmError
from hepfm.interrupts import interrupt_on_sigterm
from hepfm.train import defaults

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="hepfm: pretrained foundation models for collider event classification.")
console = Console()
if not console.is_terminal:  # logs and pipes: do not squeeze tables into 80 columns
    console = Console(width=max(console.width, 120))


@app.command()
def processes(
    role: Optional[str] = typer.Option(None, help="Only 'pretrain' or 'downstream' processes."),
    settings: bool = typer.Option(True, help="Show each process's Pythia settings."),
) -> None:
    """List the process catalog: canonical names, descriptions and Pythia settings."""
    from hepfm.physics.processes import PROCESSES

    if role not in (None, "pretrain", "downstream"):
        raise HepfmError(f"--role must be 'pretrain' or 'downstream', got {role!r}")
    table = Table(title="hepfm processes (Pythia 8, pp at 13 TeV)", show_lines=settings)
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("role")
    table.add_column("description")
    if settings:
        table.add_column("Pythia settings", style="dim")
    for p in PROCESSES.values():
        if role and p.role != role:
            continue
        row = [p.name, p.role, p.description + (f" ({p.notes})" if p.notes else "")]
        if settings:
            extra = [f"SLHA:file = <hepfm>/physics/slha/{p.slha}"] if p.slha else []
            row.append("\n".join(list(p.settings) + extra))
        table.add_row(*row)
    console.print(table)
    console.print("Processes Pythia cannot make (ttW, ttt, tttt, tHq, tt+yy, CP-odd ttH) enter through "
                  "LHE files: hepfm generate --lhe FILE --label NAME")


@app.command()
def generate(
    process: Optional[list[str]] = typer.Argument(
        None, help="Catalog process names (see `hepfm processes`), or the groups pretrain, downstream, all."),
    out: Path = typer.Option(..., "--out", "-o", help="Output event-store folder."),
    events: Optional[int] = typer.Option(None, "--events", "-n", help="Events per process (LHE: default all)."),
    seed: int = typer.Option(1, help="Base seed; each shard's seed derives from (seed, process, shard)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Parallel worker processes (one shard each)."),
    shard_size: int = typer.Option(50_000, help="Events per shard."),
    num_shards: Optional[int] = typer.Option(None, help="Split each process into this many shards."),
    shard_index: Optional[int] = typer.Option(None, help="Produce only this shard (batch systems)."),
    lhe: Optional[Path] = typer.Option(None, help="Shower an external LHE file instead of catalog processes."),
    label: Optional[str] = typer.Option(None, help="Process name for the --lhe sample."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Extra Pythia setting, e.g. 'PartonLevel:MPI = off'."),
    detector_config: Optional[Path] = typer.Option(None, help="JSON/TOML file overriding detector parameters."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Generate events (Pythia 8 -> detector -> truth labels) into a sharded HDF5 event store.

    Examples:

      hepfm generate ttbar tth zjets -n 10000 -o events -j 2

      hepfm generate pretrain -n 100000 --shard-size 25000 -o pretrain -j 16   (the 12 pretraining processes)

      hepfm generate ttbar -n 1000000 --num-shards 20 --shard-index 7 -o /data/pretrain   (one batch job)

      hepfm generate --lhe ttw.lhe --label ttw -o events
    """
    from hepfm.io.generate import catalog_source, lhe_source, plan_shards
    from hepfm.io.generate import generate as run
    from hepfm.physics.detector import DetectorConfig
    from hepfm.physics.processes import expand_names

    extra = tuple(set_ or ())
    if lhe is not None:
        if process:
            raise HepfmError("give either catalog process names or --lhe FILE, not both")
        if not label:
            raise HepfmError("--lhe needs --label NAME (the process name for this sample)")
        sources = [lhe_source(lhe, label, extra)]
    else:
        if not process:
            raise HepfmError("name at least one process (see `hepfm processes`) or give --lhe FILE")
        if events is None:
            raise HepfmError("give the number of events per process with --events N")
        sources = [catalog_source(p, extra) for p in expand_names(process)]
    detector = DetectorConfig.from_file(detector_config) if detector_config else None
    n_shards = len(plan_shards(sources, events, out, seed, shard_size, num_shards, shard_index, detector))
    if workers > n_shards:
        console.print(f"note: only {n_shards} shard(s) to make, so at most {n_shards} of the {workers} workers "
                      "will be busy; a smaller --shard-size or --num-shards splits the work further")
    try:
        report = run(sources, out, events, seed=seed, workers=workers, shard_size=shard_size,
                     num_shards=num_shards, shard_index=shard_index, detector=detector, progress=progress)
    except KeyboardInterrupt:
        Console(stderr=True).print("hepfm: interrupted; complete shards are kept, partial ones were removed")
        raise typer.Exit(130) from None
    console.print(f"wrote {len(report.written)} shard(s), {report.n_events} events "
                  f"({report.events_per_second:,.0f} events/s); skipped {len(report.skipped)} complete shard(s); "
                  f"store: {out}")


@app.command("detector-config")
def detector_config_cmd(
    source: Optional[Path] = typer.Argument(None, help="An event-store folder: print the configuration it used."),
) -> None:
    """Print a detector configuration as JSON: the default, or the one an event store was made with.

    Save it, edit any parameter, and pass the file to `hepfm generate --detector-config`.
    """
    import json

    from hepfm.physics.detector import DetectorConfig

    if source is None:
        values = DetectorConfig().to_dict()
    else:
        from hepfm.io.store import EventStore

        values = EventStore(source).attrs()["detector"]
    typer.echo(json.dumps(values, indent=2, sort_keys=True))


@app.command()
def inspect(
    store: Path = typer.Argument(..., help="Event-store folder."),
    plots: Optional[Path] = typer.Option(None, help="Write validation plots (PNG) to this folder."),
    max_events: int = typer.Option(200_000, help="Read at most this many events per process."),
) -> None:
    """Summarise an event store per process and optionally draw validation plots."""
    from hepfm.io.store import EventStore
    from hepfm.physics import validation as val

    es = EventStore(store)
    objects = {name: es.head(max_events, [name], ("objects",))["objects"] for name in es.process_names}
    table = Table(title=f"{store} ({len(es)} events)")
    table.add_column("process", no_wrap=True)
    for col in ("events", "σ (pb)", "jets", "e", "μ", "γ", "τ", "b-tags", "MET (GeV)"):
        table.add_column(col, justify="right", no_wrap=True)
    counts = es.counts()
    for name, obj in objects.items():
        s = val.summarize(obj)
        sigma = es.attrs(name).get("sigma_pb")  # absent for converted real data
        sigma_text = "-" if sigma is None else f"{sigma:.3g}"
        table.add_row(name, f"{counts[name]}", sigma_text, f"{s['mean_n_jet']:.2f}", f"{s['mean_n_electron']:.2f}",
                      f"{s['mean_n_muon']:.2f}", f"{s['mean_n_photon']:.2f}", f"{s['mean_n_tau']:.2f}",
                      f"{s['mean_n_btag']:.2f}", f"{s['mean_met']:.1f}")
    console.print(table)
    console.print("jets, e, μ, γ, τ (with tau tagging on), b-tags and MET are means per event; "
                  "σ is Pythia's generated cross section (- for converted real data)")
    if plots is not None:
        from hepfm.eval.plots import validation_plots

        written = validation_plots(objects, plots)
        console.print(f"wrote {len(written)} plots to {plots}")


convert_app = typer.Typer(no_args_is_help=True, help="Convert real-experiment ROOT files (CMS NanoAOD, Delphes) "
                          "into an event store (objects only, no truth labels).")
app.add_typer(convert_app, name="convert")


def _print_conversion(report) -> None:
    console.print(f"converted {len(report.files)} file(s): {report.n_read} events read, {report.n_written} written, "
                  f"{report.n_nonfinite} dropped (NaN/inf); {len(report.shards)} shard(s), "
                  f"{report.events_per_second:,.0f} events/s; b-tag: {'; '.join(report.btag)}; "
                  f"store: {report.out} (process {report.label!r})")


@convert_app.command("nanoaod")
def convert_nanoaod_cmd(
    files: list[str] = typer.Argument(..., help="NanoAOD ROOT files or glob patterns (tree 'Events')."),
    out: Path = typer.Option(..., "--out", "-o", help="Output event-store folder."),
    label: Optional[str] = typer.Option(None, help="Process name in the store (default: the first file's name)."),
    btag_branch: Optional[str] = typer.Option(None, help="Jet b-tag discriminant branch (default: the first filled "
                                              "of Jet_btagDeepFlavB, Jet_btagDeepB, Jet_btagCSVV2)."),
    btag_cut: Optional[float] = typer.Option(None, help="b-tag working point (default: CMS 2017 medium)."),
    detector_config: Optional[Path] = typer.Option(None, help="JSON/TOML file overriding the object cuts."),
    shard_size: int = typer.Option(50_000, help="Events per shard."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Convert CMS NanoAOD files into an event store, with the detector configuration's object selection.

    Example: hepfm convert nanoaod 'data/*.root' --out opendata --label ttbar_2015
    """
    from hepfm.io.nanoaod import convert_nanoaod
    from hepfm.physics.detector import DetectorConfig

    detector = DetectorConfig.from_file(detector_config) if detector_config else None
    try:
        report = convert_nanoaod(files, out, label, btag_branch=btag_branch, btag_cut=btag_cut, detector=detector,
                                 shard_size=shard_size, progress=progress)
    except KeyboardInterrupt:
        Console(stderr=True).print("hepfm: interrupted; the shards of this conversion were removed")
        raise typer.Exit(130) from None
    _print_conversion(report)


@convert_app.command("delphes")
def convert_delphes_cmd(
    files: list[str] = typer.Argument(..., help="Delphes ROOT files or glob patterns (tree 'Delphes')."),
    out: Path = typer.Option(..., "--out", "-o", help="Output event-store folder."),
    label: Optional[str] = typer.Option(None, help="Process name in the store (default: the first file's name)."),
    btag_bit: int = typer.Option(0, help="Bit of Jet.BTag that marks a b-tagged jet (the card's working point)."),
    detector_config: Optional[Path] = typer.Option(None, help="JSON/TOML file overriding the object cuts."),
    shard_size: int = typer.Option(50_000, help="Events per shard."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Convert Delphes output files into an event store, with the detector configuration's kinematic cuts.

    Example: hepfm convert delphes delphes_*.root --out events --label zprime_delphes
    """
    from hepfm.io.delphes import convert_delphes
    from hepfm.physics.detector import DetectorConfig

    detector = DetectorConfig.from_file(detector_config) if detector_config else None
    try:
        report = convert_delphes(files, out, label, btag_bit=btag_bit, detector=detector, shard_size=shard_size,
                                 progress=progress)
    except KeyboardInterrupt:
        Console(stderr=True).print("hepfm: interrupted; the shards of this conversion were removed")
        raise typer.Exit(130) from None
    _print_conversion(report)


def _train_config(epochs, batch_size, seed, patience, optimizer, schedule, augment, bf16, compile_, checkpoint_every,
                  progress):
    from hepfm.train.trainer import TrainConfig

    try:
        return TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, patience=patience, optimizer=optimizer,
                           schedule=schedule, augment=tuple(augment or ()), bf16=bf16, compile=compile_,
                           checkpoint_every=checkpoint_every, progress=progress)
    except ValueError as exc:
        raise HepfmError(str(exc)) from None


def _model_options(options: Optional[list[str]]) -> dict:
    import json

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


_EPOCHS = typer.Option(defaults.EPOCHS, help="Maximum number of epochs (early stopping may end sooner).")
_BATCH = typer.Option(defaults.BATCH_SIZE, help="Global batch size (split over torchrun processes).")
_PATIENCE = typer.Option(defaults.PATIENCE, help="Stop after this many epochs without a better validation loss.")
_OPTIMIZER = typer.Option("adam", help="adam, adamw or sgd.")
_SCHEDULE = typer.Option("exponential", help="exponential (LR x 0.99 per epoch), cosine or constant.")
_AUGMENT = typer.Option(None, "--augment", help="Augmentation: phi, eta_flip or boost (repeatable).")
_BF16 = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default: on for CUDA, off on the CPU).")
_COMPILE = typer.Option(False, "--compile", help="torch.compile the model (GPU).")
_CKPT = typer.Option(0, help="Also checkpoint every N batches (0: at the end of each epoch only).")
_DEVICE = typer.Option("auto", help="auto, cpu, cuda or cuda:N.")
_OVERWRITE = typer.Option(False, "--overwrite", help="Replace a finished model in --out.")
_PROGRESS = typer.Option(True, help="Show progress bars.")
_MAX_EVENTS = typer.Option(None, help="Read at most this many events per process.")
_ALLOW_OVERLAP = typer.Option(False, "--allow-overlap", help="Go on (with a warning; the result is marked "
                              "overlap: true) when validation or test events were in the pretraining data.")


@app.command("models")
def models_cmd(
    outputs: int = typer.Option(12, help="Output width to count parameters for (12 = the pretraining processes)."),
) -> None:
    """List the registered backbones with their parameter counts and default options."""
    from hepfm.models.base import count_parameters
    from hepfm.models.registry import MODELS, create_model

    table = Table(title=f"hepfm backbones (parameters with {outputs} outputs)")
    for col in ("model", "variant", "parameters", "options"):
        table.add_column(col)
    variants = {"graphnet": [("default: mean aggregation, residual blocks", {}),
                             ("as published (aggregation=sum residual=false)",
                              {"aggregation": "sum", "residual": False}),
                             ("shared block (share_blocks=true)", {"share_blocks": True})]}
    for name in sorted(MODELS):
        for label, options in variants.get(name, [("default", {})]):
            model = create_model(name, outputs, **options)
            table.add_row(name, label, f"{count_parameters(model):,}", escape(str(model.config)))
    console.print(table)
    from hepfm.models.pretrained import describe_shipped, search_path

    shipped = describe_shipped()
    if not shipped:
        console.print(f"pretrained models by name: none installed (searched {', '.join(map(str, search_path()))})")
        return
    table = Table(title="pretrained models (use the name wherever a model folder is accepted)")
    for col in ("name", "model", "task", "classes", "held-out metrics", "model card"):
        table.add_column(col)
    for row in shipped:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in row["test"].items() if isinstance(v, float))
        table.add_row(row["name"], row["model"], str(row["task"]), str(len(row["classes"])), metrics,
                      escape(str(row["card"] or "-")))
    console.print(table)


@app.command()
def pretrain(
    data: Path = typer.Option(..., help="Event store with the pretraining processes (and truth labels)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: model, history, checkpoints."),
    task: str = typer.Option("multiclass", help="multiclass (process) or multilabel (41 truth labels)."),
    model: str = typer.Option("graphnet", help="Backbone: graphnet or transformer."),
    model_option: Optional[list[str]] = typer.Option(None, help="Backbone option key=value, e.g. share_blocks=true."),
    init_from: Optional[Path] = typer.Option(None, "--from", help="Continue from a model pretrained on the same task."),
    epochs: int = _EPOCHS, batch_size: int = _BATCH,
    lr: float = typer.Option(defaults.LR, help="Learning rate."),
    seed: int = typer.Option(0, help="Seed of the initialisation and the batch order."),
    split_seed: int = typer.Option(0, help="Seed of the train/validation/test split (80/10/10)."),
    patience: int = _PATIENCE, optimizer: str = _OPTIMIZER, schedule: str = _SCHEDULE,
    augment: Optional[list[str]] = _AUGMENT, bf16: Optional[bool] = _BF16, compile_: bool = _COMPILE,
    checkpoint_every: int = _CKPT, max_events: Optional[int] = _MAX_EVENTS, device: str = _DEVICE,
    overwrite: bool = _OVERWRITE, progress: bool = _PROGRESS,
    stream: Optional[bool] = typer.Option(
        None, "--stream/--no-stream",
        help="Stream the training split from disk (default: when the store does not fit in memory)."),
) -> None:
    """Pretrain a backbone on a generated event store. Rerun the same command to resume a stopped run.

    Several processes or GPUs: torchrun --nproc-per-node 4 -m hepfm pretrain ...
    """
    from hepfm.train.workflows import pretrain as run

    cfg = _train_config(epochs, batch_size, seed, patience, optimizer, schedule, augment, bf16, compile_,
                        checkpoint_every, progress)
    try:
        summary = run(data, out, task=task, model=model, model_config=_model_options(model_option), cfg=cfg, lr=lr,
                      init_from=init_from, split_seed=split_seed, max_events=max_events, device=device,
                      overwrite=overwrite, stream=stream)
    except ValueError as exc:
        raise HepfmError(str(exc)) from None
    _print_summary(out, summary)


@app.command()
def finetune(
    signal: Path = typer.Option(..., help="Signal events: a store or one process folder of a store (DIR/wh)."),
    background: Path = typer.Option(..., help="Background events: a store or one process folder of a store."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: model, history, checkpoints."),
    strategy: str = typer.Option("finetune", help="finetune, frozen or scratch."),
    init_from: Optional[Path] = typer.Option(None, "--from", help="Pretrained model folder (finetune, frozen)."),
    model: str = typer.Option("graphnet", help="Backbone for --strategy scratch without --from."),
    model_option: Optional[list[str]] = typer.Option(None, help="Backbone option key=value (scratch)."),
    train_size: Optional[int] = typer.Option(None, help="Training events per class (default: all available)."),
    test_size: Optional[int] = typer.Option(None, help="Test events per class (default: 20% of the smaller class)."),
    epochs: int = _EPOCHS, batch_size: int = _BATCH,
    lr: float = typer.Option(defaults.LR,
                             help="Learning rate of the new output layer (and of everything for scratch)."),
    backbone_lr: float = typer.Option(defaults.BACKBONE_LR, help="Learning rate of the pretrained layers (finetune)."),
    frozen_part: str = typer.Option("head", help="frozen: retrain the 'head' only or the 'decoder' + head."),
    seed: int = typer.Option(0, help="Seed of the initialisation, the training subset and the batch order."),
    split_seed: int = typer.Option(0, help="Seed of the fixed test/validation split."),
    patience: int = _PATIENCE, optimizer: str = _OPTIMIZER, schedule: str = _SCHEDULE,
    augment: Optional[list[str]] = _AUGMENT, bf16: Optional[bool] = _BF16, compile_: bool = _COMPILE,
    checkpoint_every: int = _CKPT, max_events: Optional[int] = _MAX_EVENTS, device: str = _DEVICE,
    overwrite: bool = _OVERWRITE, progress: bool = _PROGRESS, allow_overlap: bool = _ALLOW_OVERLAP,
) -> None:
    """Train a signal-vs-background classifier: fine-tune a pretrained model, train on it frozen, or from scratch.

    Example: hepfm finetune --signal events/wh --background events/zh --from runs/pretrain --train-size 1000 -o runs/wh
    """
    from hepfm.data.datasets import BinarySplitPlan
    from hepfm.train.workflows import finetune as run

    cfg = _train_config(epochs, batch_size, seed, patience, optimizer, schedule, augment, bf16, compile_,
                        checkpoint_every, progress)
    if train_size is not None and train_size < 1:
        raise HepfmError(f"--train-size must be positive, got {train_size}")
    plan = BinarySplitPlan(train_size=train_size, test_size=test_size, split_seed=split_seed, seed=seed)
    try:
        summary = run(signal, background, out, strategy=strategy, init_from=init_from, model=model,
                      model_config=_model_options(model_option), plan=plan, cfg=cfg, lr=lr, backbone_lr=backbone_lr,
                      frozen_part=frozen_part, max_events=max_events, device=device, overwrite=overwrite,
                      allow_overlap=allow_overlap)
    except ValueError as exc:
        raise HepfmError(str(exc)) from None
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


@app.command()
def study(
    config: Path = typer.Argument(..., help="Study configuration (YAML), e.g. configs/study-cpu.yaml."),
    out: Path = typer.Option(..., "--out", "-o", help="Study folder: stores, pretrained models, cells, report."),
    report_only: bool = typer.Option(False, help="Only rebuild the tables, plots and report from finished cells."),
    device: str = typer.Option("auto", help="Training device: auto, cpu or cuda."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default: on for CUDA)."),
    workers: Optional[int] = typer.Option(None, help="Generation processes (overrides generation.workers)."),
    prepare_only: bool = typer.Option(False, help="Only generate the stores and pretrain the backbones."),
    task: Optional[list[str]] = typer.Option(None, help="Train only the cells of this task (repeatable)."),
    size: Optional[list[int]] = typer.Option(None, help="Train only the cells of this size (repeatable)."),
    strategy: Optional[list[str]] = typer.Option(None, help="Train only the cells of this strategy (repeatable)."),
    progress: bool = _PROGRESS,
) -> None:
    """Run the grid task x training size x strategy x seed and write Table I, efficiency, CKA and report.md.

    A rerun resumes: finished cells, stores and pretrained models are reused; failed cells are retried.
    --prepare-only, then parts of the grid (--task/--size/--strategy) in parallel processes or batch jobs,
    then --report-only runs the same study in pieces.
    """
    import dataclasses

    from hepfm.study.config import load_config
    from hepfm.study.run import CellFilter

    cfg = dataclasses.replace(load_config(config), device=device, bf16=bf16)
    if workers is not None:
        if workers < 1:
            raise HepfmError(f"--workers must be positive, got {workers}")
        cfg = dataclasses.replace(cfg, workers=workers)
    only = CellFilter(task or None, size or None, strategy or None)
    _run_study(cfg, out, report_only, progress, only=only, prepare_only=prepare_only)


def _run_study(cfg, out: Path, report_only: bool, progress: bool, only=None, prepare_only: bool = False) -> list[dict]:
    from hepfm.study.report import collect, table_markdown, table_one, write_report
    from hepfm.study.run import CellFilter, run_study

    failures = []
    partial = prepare_only or (only is not None and only != CellFilter())
    if not report_only:
        try:
            failures = run_study(cfg, out, progress=progress, console=console, only=only,
                                 prepare_only=prepare_only).failures
        except KeyboardInterrupt:
            Console(stderr=True).print("hepfm: interrupted; finished cells are kept, rerun to resume")
            raise typer.Exit(130) from None
    if partial:
        if failures:
            raise HepfmError(f"{len(failures)} cell(s) failed; rerun to retry them")
        console.print("part done; hepfm study CONFIG --out DIR --report-only writes the tables and report")
        return []
    report = write_report(cfg, out)
    rows = collect(cfg, out)
    for metric in ("accuracy", "auc"):
        console.print(f"\nTable I ({metric})\n" + table_markdown(cfg, table_one(cfg, rows, metric, out), metric))
    console.print(f"\nreport: {report}")
    if failures:
        raise HepfmError(f"{len(failures)} cell(s) failed (listed in {out / 'failures.json'}); rerun to retry them")
    return rows


@app.command()
def demo(
    out: Path = typer.Option(Path("hepfm-demo"), "--out", "-o", help="Folder for everything the demo makes."),
    progress: bool = _PROGRESS,
) -> None:
    """The quick-start job: small samples, a pretrained multiclass GraphNet, H+ vs tt fine-tuned vs scratch.

    Each strategy's learning rate is tuned on validation data first. About 5 minutes on 2 CPU cores. Prints
    accuracy and AUC of both with their test-sample errors, the chosen rates and the gain; writes cells.csv,
    a ROC curve and report.md.
    """
    from hepfm.study.demo import demo_config
    from hepfm.study.report import table_one

    cfg = demo_config()
    rows = _run_study(cfg, out, False, progress)
    table = Table(title="H+ -> tb vs tt, 1000 training events per class, 2000 test events per class")
    for col in ("strategy", "chosen learning rate(s)", "accuracy", "ROC AUC", "epochs", "training time (s)"):
        table.add_column(col)
    for r in rows:
        rates = f"{r['lr']:g}" + ("" if r["backbone_lr"] is None else f" (backbone {r['backbone_lr']:g})")
        flag = " COLLAPSED" if r.get("collapsed") else ""
        table.add_row(r["strategy"] + flag, rates, f"{r['accuracy']:.4f} ± {r['accuracy_err']:.4f}",
                      f"{r['auc']:.4f} ± {r['auc_err']:.4f}", f"{r['epochs_run']}", f"{r['train_time_s']:.0f}")
    console.print(table)
    for metric in ("accuracy", "auc"):
        for row in table_one(cfg, rows, metric, out):
            g, err = row.get("gain_finetune_multiclass"), row.get("gain_finetune_multiclass_err")
            if g is not None:
                console.print(f"gain from pretraining ({metric}): {100 * g:+.2f} ± {100 * err:.2f} points "
                              "(error: test-sample, paired bootstrap; one seed)")
    console.print(f"cells: {out / 'cells.csv'}")


@app.command()
def cka(
    models: Optional[list[str]] = typer.Argument(
        None, help="Model groups: NAME=RUN[,RUN...] (an ensemble) or a single RUN folder per group."),
    data: Optional[Path] = typer.Option(None, help="Events to compute latents on (a store or a process folder)."),
    events: int = typer.Option(2000, help="Number of events."),
    kernel: str = typer.Option("both", help="linear, rbf, or both (side by side)."),
    plot: Optional[Path] = typer.Option(None, help="Write a heatmap PNG here."),
    sanity: bool = typer.Option(False, "--sanity", help="Print the dummy-data sanity table (paper's Table II)."),
) -> None:
    """CKA similarity of models' 64-d latent spaces (Kornblith et al. 2019), or the dummy-data sanity table."""
    from hepfm.eval import cka as ckamod

    if sanity or not models:
        console.print(ckamod.format_markdown(ckamod.sanity_table()))
        if not models:
            return
    if data is None:
        raise HepfmError("give the events to compare the models on with --data STORE")
    if kernel not in ("linear", "rbf", "both"):
        raise HepfmError(f"--kernel must be linear, rbf or both, got {kernel!r}")
    import numpy as np
    import torch

    from hepfm.data.datasets import EventData, read_events
    from hepfm.models.pretrained import load as load_pretrained_or_folder
    from hepfm.train.trainer import encode

    arrays = read_events(data, ("objects", "n_objects"), events)[0]
    subset = EventData(torch.from_numpy(arrays["objects"][:events]), torch.from_numpy(arrays["n_objects"][:events]
                                                                                      .astype(np.int64)),
                       torch.zeros(min(events, len(arrays["objects"]))))
    groups: dict[str, list] = {}
    for item in models:
        name, sep, runs = item.partition("=")
        paths = runs.split(",") if sep else [item]
        name = name if sep else Path(item).name
        groups[name] = [encode(load_pretrained_or_folder(p), subset).numpy() for p in paths]
    kernels = ("linear", "rbf") if kernel == "both" else (kernel,)
    results = {k: ckamod.cross_model_cka(groups, kernel=k) for k in kernels}
    names = results[kernels[0]][2]
    table = Table(title=f"{' | '.join(kernels)} CKA on {len(subset)} events of {data}")
    table.add_column("")
    for n in names:
        table.add_column(n, justify="right")
    for i, n in enumerate(names):
        cells = []
        for j in range(len(names)):
            cells.append(" | ".join("n/a" if np.isnan(m[i, j]) else f"{m[i, j]:.3f} ± {sd[i, j]:.3f}"
                                    for m, sd, _ in results.values()))
        table.add_row(n, *cells)
    console.print(table)
    if plot is not None:
        from hepfm.eval.plots import cka_heatmap

        for k, (mean, std, _) in results.items():
            path = plot if len(kernels) == 1 else plot.with_name(f"{plot.stem}_{k}{plot.suffix}")
            cka_heatmap(mean, std, names, path, f"{k} CKA")
            console.print(f"wrote {path}")


@app.command()
def predict(
    model: str = typer.Argument(..., help="A model folder, or the name of a shipped model (hepfm models)."),
    data: list[str] = typer.Option(..., "--data", help="An event store folder, or ROOT files / glob patterns."),
    out: Path = typer.Option(..., help="Output file: .parquet, .h5 or .root (TTree 'Events')."),
    input_format: Optional[str] = typer.Option(None, "--format", help="ROOT input format: nanoaod (default) or "
                                                                      "delphes."),
    batch_size: int = typer.Option(8192, help="Events per forward pass."),
    chunk_size: int = typer.Option(65536, help="Events read and written at a time (bounds memory)."),
    detector_config: Optional[Path] = typer.Option(None, help="Detector configuration for ROOT inputs' selection."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Score every event with a model and write one row per event: its identity and score_<class> columns."""
    from hepfm.inference.predict import predict_file
    from hepfm.physics.detector import DetectorConfig

    det = DetectorConfig.from_file(detector_config) if detector_config else None
    rep = predict_file(model, data, out, input_format=input_format, batch_size=batch_size, chunk_size=chunk_size,
                       device=device, detector=det, progress=progress)
    skipped = f", {rep.n_skipped} skipped (non-finite inputs)" if rep.n_skipped else ""
    console.print(f"wrote {rep.out}: {rep.n_events:,} events{skipped}, columns {', '.join(rep.columns)}; "
                  f"{rep.events_per_second:,.0f} events/s")


@app.command()
def export(
    model: str = typer.Argument(..., help="A model folder, or the name of a shipped model (hepfm models)."),
    onnx: Path = typer.Option(..., "--onnx", help="Output ONNX file (.onnx)."),
    opset: int = typer.Option(18, help="ONNX opset version."),
) -> None:
    """Export a model to ONNX: inputs objects [batch, n, 7] and mask [batch, n] (both sizes free)."""
    from hepfm.inference.export import export_onnx

    path = export_onnx(model, onnx, opset=opset)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): inputs objects [batch, n_objects, 7] float32 "
                  "and mask [batch, n_objects] bool; outputs logits and scores")


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the typer app and turns HepfmError into a one-line message and exit code 2."""
    interrupt_on_sigterm()
    try:
        app(args=argv, prog_name="hepfm")
    except HepfmError as exc:
        Console(stderr=True).print(f"[bold red]hepfm: error:[/] {escape(str(exc))}", highlight=False,
                                   soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
