"""hepfm study, demo, cka: the study of pretraining gains, in full or in miniature."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from hepfm.cli.app import app, console
from hepfm.cli.options import (
    _CLUSTER,
    _EXECUTOR,
    _PROGRESS,
    _SCHEDULER,
    executor_from_options,
)
from hepfm.errors import HepfmError


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
    jobs: int = typer.Option(1, help="Train this many runs at once (tuning points, then seeds), in separate "
                             "processes sharing the cores (or one GPU)."),
    progress: bool = _PROGRESS,
    executor: str = _EXECUTOR,
    scheduler: Optional[str] = _SCHEDULER,
    cluster: Optional[Path] = _CLUSTER,
) -> None:
    """Run the grid task x training size x strategy x seed and write Table I, efficiency, CKA and report.md.

    A rerun resumes: finished cells, stores and pretrained models are reused; failed cells are retried.
    --prepare-only, then parts of the grid (--task/--size/--strategy) in parallel processes or batch jobs,
    then --report-only runs the same study in pieces. --executor dask runs the generation's shards, the tuning
    points and the parts of the grid as tasks of a Dask cluster instead (the same results).
    """
    import dataclasses

    from hepfm.study.config import load_config
    from hepfm.study.run import CellFilter

    where = executor_from_options(executor, scheduler, cluster)
    cfg = dataclasses.replace(load_config(config), device=device, bf16=bf16)
    if workers is not None:
        if workers < 1:
            raise HepfmError(f"--workers must be positive, got {workers}")
        cfg = dataclasses.replace(cfg, workers=workers)
    only = CellFilter(task or None, size or None, strategy or None)
    _run_study(cfg, out, report_only, progress, only=only, prepare_only=prepare_only, jobs=jobs, executor=where)


def _run_study(cfg, out: Path, report_only: bool, progress: bool, only=None, prepare_only: bool = False,
               jobs: int = 1, executor=None) -> list[dict]:
    from hepfm.study.layout import StudyLayout
    from hepfm.study.report import collect, table_markdown, table_one, write_report
    from hepfm.study.run import CellFilter, run_study

    if jobs < 1:
        raise HepfmError(f"--jobs must be positive, got {jobs}")
    if report_only and not Path(out).is_dir():
        raise HepfmError(f"{out}: no such study folder; run the study first (without --report-only)")
    failures = []
    partial = prepare_only or (only is not None and only != CellFilter())
    if not report_only:
        try:
            failures = run_study(cfg, out, progress=progress, console=console, only=only,
                                 prepare_only=prepare_only, jobs=jobs,
                                 **({} if executor is None else {"executor": executor})).failures
        except KeyboardInterrupt:
            Console(stderr=True).print("hepfm: interrupted; finished cells are kept, rerun to resume")
            raise typer.Exit(130) from None
    if partial:
        if failures:
            raise HepfmError(f"{len(failures)} cell(s) failed; rerun to retry them")
        console.print("part done; hepfm study CONFIG --out DIR --report-only writes the tables and report")
        return []
    from hepfm.io.locking import exclusive_lock

    with exclusive_lock(out, "study folder"):
        report = write_report(cfg, out)
    rows = collect(cfg, out)
    for metric in ("accuracy", "auc"):
        console.print(f"\nTable I ({metric})\n" + table_markdown(cfg, table_one(cfg, rows, metric, out), metric))
    console.print(f"\nreport: {report}")
    if failures:
        raise HepfmError(f"{len(failures)} cell(s) failed (listed in {out / StudyLayout.REPORT}); rerun to retry them")
    return rows


@app.command()
def scaling(
    config: Path = typer.Argument(..., help="Study configuration (YAML) with pretrain.data, e.g. "
                                  "configs/scaling-masked.yaml."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder: one study per pretraining size, scaling.csv/md/png."),
    pretrain_events: list[int] = typer.Option(..., "--pretrain-events", help="Pretraining events in all (repeatable), "
                                              "taken evenly from the processes of pretrain.data."),
    pretrain_data: Optional[Path] = typer.Option(None, help="Pretraining store (replaces pretrain.data); labels are "
                                                 "used by multiclass strategies only."),
    device: str = typer.Option("auto", help="Training device: auto, cpu or cuda."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default: on for CUDA)."),
    progress: bool = _PROGRESS,
) -> None:
    """Downstream gain against pretraining size: the configuration's study once per --pretrain-events.

    Example: hepfm scaling configs/scaling-masked.yaml -o runs/scaling --pretrain-events 10000
    --pretrain-events 100000 --pretrain-events 1000000. A rerun resumes.
    """

    from hepfm.study.config import read_yaml
    from hepfm.study.scaling import SCALING_MD, run_scaling

    raw = read_yaml(config)
    try:
        run_scaling(raw, out, pretrain_events, source=str(config), pretrain_data=pretrain_data, device=device,
                    bf16=bf16, progress=progress, console=console)
    except KeyboardInterrupt:
        Console(stderr=True).print("hepfm: interrupted; finished cells are kept, rerun to resume")
        raise typer.Exit(130) from None
    console.print((out / SCALING_MD).read_text())


@app.command()
def demo(
    out: Path = typer.Option(Path("hepfm-demo"), "--out", "-o", help="Folder for everything the demo makes."),
    jobs: Optional[int] = typer.Option(None, help="Strategies trained at once in separate processes (default: 2 "
                                       "when 2 cores are available, else 1)."),
    progress: bool = _PROGRESS,
) -> None:
    """The quick-start job: H+ vs tt from scratch and fine-tuned from the shipped graphnet-pythia12-multiclass.

    Each strategy's learning rate is tuned on validation data first. About 2 minutes on 2 CPU cores. Prints
    accuracy and AUC of both with their test-sample errors, the chosen rates and the gain; writes cells.csv,
    a ROC curve and report.md.
    """
    from hepfm.study.demo import demo_config
    from hepfm.study.layout import StudyLayout
    from hepfm.study.report import table_one
    from hepfm.study.run import available_cores

    cfg = demo_config()
    # Scratch and fine-tuning train side by side, one process each, when there are two cores.
    rows = _run_study(cfg, out, False, progress, jobs=min(2, available_cores()) if jobs is None else jobs)
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
    console.print(f"cells: {out / StudyLayout.CELLS_CSV}")


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
    named = _cka_groups(models)
    import numpy as np
    import torch

    from hepfm.data.datasets import EventData, read_events
    from hepfm.models.batched import encode
    from hepfm.models.pretrained import load as load_pretrained_or_folder

    arrays = read_events(data, ("objects", "n_objects"), events)[0]
    subset = EventData(torch.from_numpy(arrays["objects"][:events]), torch.from_numpy(arrays["n_objects"][:events]
                                                                                      .astype(np.int64)),
                       torch.zeros(min(events, len(arrays["objects"]))))
    groups: dict[str, list] = {}
    for name, paths in named.items():
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

        written: list[Path] = []
        try:
            for k, (mean, std, _) in results.items():
                path = plot if len(kernels) == 1 else plot.with_name(f"{plot.stem}_{k}{plot.suffix}")
                cka_heatmap(mean, std, names, path, f"{k} CKA")
                written.append(path)
        except BaseException:  # one plot of two is a partial output
            for path in written:
                path.unlink(missing_ok=True)
            raise
        for path in written:
            console.print(f"wrote {path}")


def _cka_groups(models: list[str]) -> dict[str, list[str]]:
    """Group label -> model folders or names: NAME=RUN[,RUN...] or one RUN per group, labelled by its folder
    name, or by as many parent folders as tell two same-named folders apart (runs/a/model, runs/b/model)."""
    explicit, single = {}, []
    for item in models:
        name, sep, runs = item.partition("=")
        if sep:
            paths = [p for p in runs.split(",") if p]
            if not name or not paths:
                raise HepfmError(f"{item!r}: a model group looks like NAME=RUN[,RUN...]")
            if name in explicit:
                raise HepfmError(f"two model groups are named {name!r} ({explicit[name][0]}, {paths[0]}): "
                                 "give each group its own name")
            explicit[name] = paths
        elif item in single:
            raise HepfmError(f"{item}: given twice; compare a model with itself by naming two groups (A={item} "
                             f"B={item})")
        else:
            single.append(item)
    labels = {}
    for item in single:
        parts = Path(item).parts or (item,)
        depth = 1
        while depth < len(parts) and any(Path(o).parts[-depth:] == parts[-depth:] for o in single if o != item):
            depth += 1
        labels[item] = "/".join(parts[-depth:])
    groups = dict(explicit)
    for item, label in labels.items():
        if label in groups:
            first = groups[label][0]
            raise HepfmError(f"{first} and {item} would both be labelled {label!r} in the CKA table: name the "
                             "groups (NAME=RUN)")
        groups[label] = [item]
    return groups
