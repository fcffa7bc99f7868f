"""hepfm processes, generate, detector-config, inspect: simulated events into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from hepfm.cli.app import app, console
from hepfm.cli.options import _CLUSTER, _EXECUTOR, _SCHEDULER, executor_from_options
from hepfm.errors import HepfmError


@app.command()
def processes(
    role: Optional[str] = typer.Option(None, help="Only 'pretrain' (the 12), 'pretrain-extra' (the wide set's "
                                       "additions) or 'downstream' processes."),
    settings: bool = typer.Option(True, help="Show each process's Pythia settings."),
) -> None:
    """List the process catalog: canonical names, descriptions and Pythia settings."""
    from hepfm.physics.processes import PROCESSES

    if role not in (None, "pretrain", "pretrain-extra", "downstream"):
        raise HepfmError(f"--role must be 'pretrain', 'pretrain-extra' or 'downstream', got {role!r}")
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
        None, help="Catalog process names (see `hepfm processes`), or the groups pretrain, pretrain-wide, "
                   "downstream, all."),
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
    constituents: int = typer.Option(0, help="Also store up to K constituents (pT-ordered) and the truth flavour "
                                     "of every jet (0: none)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    executor: str = _EXECUTOR,
    scheduler: Optional[str] = _SCHEDULER,
    cluster: Optional[Path] = _CLUSTER,
) -> None:
    """Generate events (Pythia 8 -> detector -> truth labels) into a sharded HDF5 event store.

    Examples:

      hepfm generate ttbar tth zjets -n 10000 -o events -j 2

      hepfm generate pretrain -n 100000 --shard-size 25000 -o pretrain -j 16   (the 12 pretraining processes)

      hepfm generate pretrain-wide -n 100000 -o pretrain-wide -j 16   (the 12 and the 10 extra ones)

      hepfm generate ttbar -n 1000000 --num-shards 20 --shard-index 7 -o /data/pretrain   (one batch job)

      hepfm generate --lhe ttw.lhe --label ttw -o events

      hepfm generate ttbar qcd -n 20000 --constituents 32 -o jets   (jet constituents for jet tagging)

      hepfm generate pretrain -n 1000000 -o /shared/pretrain --executor dask --scheduler tcp://head:8786
    """
    from hepfm.io.generate import catalog_source, lhe_source, plan_shards
    from hepfm.io.generate import generate as run
    from hepfm.physics.detector import DetectorConfig
    from hepfm.physics.processes import expand_names

    where = executor_from_options(executor, scheduler, cluster)
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
    n_shards = len(plan_shards(sources, events, out, seed, shard_size, num_shards, shard_index, detector,
                               constituents))
    if workers > n_shards and not where.is_dask:
        console.print(f"note: only {n_shards} shard(s) to make, so at most {n_shards} of the {workers} workers "
                      "will be busy; a smaller --shard-size or --num-shards splits the work further")
    try:
        report = run(sources, out, events, seed=seed, workers=workers, shard_size=shard_size,
                     num_shards=num_shards, shard_index=shard_index, detector=detector, progress=progress,
                     constituents=constituents, executor=where)
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
    compare: Optional[Path] = typer.Option(None, help="Reference store (e.g. generated events of the same process): "
                                           "one table of means ± errors and their ratio to the reference."),
    pair: Optional[list[str]] = typer.Option(None, help="With --compare: PROCESS=REFERENCE_PROCESS to compare "
                                             "(repeatable; default: same name, else the reference's only process)."),
) -> None:
    """Summarise an event store per process and optionally draw validation plots; with --compare, set it next to a
    reference store.

    Example: hepfm inspect converted --compare generated --pair dy=zjets --plots cmp
    """
    from hepfm.io.store import EventStore
    from hepfm.physics import validation as val

    if compare is not None:
        _inspect_compare(store, compare, pair, plots, max_events)
        return
    if pair:
        raise HepfmError("--pair needs --compare REFERENCE_STORE")
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


def _cell(value: tuple[float, float], digits: int) -> str:
    mean, err = value
    if mean != mean:  # NaN: no events with that object
        return "-"
    return f"{mean:.{digits}f} ± {err:.{digits}f}" if err == err else f"{mean:.{digits}f}"


def _inspect_compare(store: Path, reference: Path, pair: Optional[list[str]], plots: Optional[Path],
                     max_events: int) -> None:
    """``hepfm inspect STORE --compare REFERENCE``: one table, each pair as store row, reference row, ratio row."""
    from hepfm.eval.compare import compare_stores
    from hepfm.physics.validation import COMPARISON_QUANTITIES

    pairs = None
    if pair:
        pairs = []
        for text in pair:
            a, sep, b = text.partition("=")
            if not sep or not a or not b:
                raise HepfmError(f"--pair {text!r}: expected PROCESS=REFERENCE_PROCESS")
            pairs.append((a, b))
    cmp = compare_stores(store, reference, max_events, pairs)
    digits = {"lead_jet_pt": 1, "lead_lepton_pt": 1, "met": 1, "btag_per_jet": 3}
    table = Table(title=f"{store} compared with reference {reference}")
    table.add_column("store", no_wrap=True)
    table.add_column("process", no_wrap=True)
    table.add_column("events", justify="right", no_wrap=True)
    for heading in COMPARISON_QUANTITIES.values():
        table.add_column(heading, justify="right", no_wrap=True)

    def add(label: str, row) -> None:
        table.add_row(label, row.process, f"{int(row.summary['events'][0])}",
                      *(_cell(row.summary[q], digits.get(q, 2)) for q in COMPARISON_QUANTITIES))

    shown = set()
    for a, b in cmp.pairs:
        add("store", cmp.row(a))
        add("reference", cmp.row(b, reference=True))
        ratios = cmp.ratios(a, b)
        table.add_row("ratio", f"{a} / {b}", "", *(_cell(ratios[q], 2) for q in COMPARISON_QUANTITIES),
                      end_section=True)
        shown |= {("store", a), ("reference", b)}
    for label, rows in (("store", cmp.rows), ("reference", cmp.reference_rows)):
        for row in rows:
            if (label, row.process) not in shown:
                add(label, row)
    console.print(table)
    console.print(f"store = {store}, reference = {reference}; means per event ± error on the mean (jets, e, μ, γ, τ "
                  "multiplicities, MET in GeV); leading pTs (GeV) over events with such an object; b-tags/jet = all "
                  "b-tags / all jets; ratio = store / reference with uncorrelated errors; - = no such object")
    if plots is not None:
        from hepfm.eval.plots import validation_plots

        written = []
        for a, b in cmp.pairs:
            samples = {f"store {a}": cmp.objects[("store", a)], f"reference {b}": cmp.objects[("reference", b)]}
            written += validation_plots(samples, plots / f"{a}_vs_{b}")
        console.print(f"wrote {len(written)} plots to {plots} (one folder per compared pair)")
