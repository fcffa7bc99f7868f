"""hepfm predict, export: scores written out for an analysis, and ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hepfm.cli.app import app, console


@app.command()
def predict(
    model: str = typer.Argument(..., help="A model folder, or the name of a shipped model (hepfm models)."),
    data: list[str] = typer.Option(..., "--data", help="An event store folder, or ROOT files / glob patterns "
                                                        "(hierarchical models: a store with constituents, or "
                                                        "Delphes files whose jets keep them)."),
    out: Path = typer.Option(..., help="Output file: .parquet, .h5 or .root (TTree 'Events')."),
    input_format: Optional[str] = typer.Option(None, "--format", help="ROOT input format: nanoaod (default), "
                                                                      "physlite, ntuple (with --mapping) or delphes."),
    mapping: Optional[str] = typer.Option(None, help="--format ntuple: the YAML mapping of the ntuple's branches "
                                          "(a file or a shipped name, as for hepfm convert ntuple)."),
    batch_size: int = typer.Option(8192, help="Events per forward pass."),
    chunk_size: Optional[int] = typer.Option(None, help="Events read and written at a time (bounds memory; default "
                                                         "65,536, fewer for hierarchical models' wider rows)."),
    detector_config: Optional[Path] = typer.Option(None, help="Detector configuration for ROOT inputs' selection."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file (never an input)."),
) -> None:
    """Score every event with a model and write one row per event: its identity and score_<class> columns."""
    from hepfm.inference.predict import predict_file
    from hepfm.physics.detector import DetectorConfig

    det = DetectorConfig.from_file(detector_config) if detector_config else None
    rep = predict_file(model, data, out, input_format=input_format, batch_size=batch_size, chunk_size=chunk_size,
                       device=device, detector=det, progress=progress, overwrite=overwrite, mapping=mapping)
    skipped = f", {rep.n_skipped} skipped (non-finite inputs or event-quality cuts)" if rep.n_skipped else ""
    console.print(f"wrote {rep.out}: {rep.n_events:,} events{skipped}, columns {', '.join(rep.columns)}; "
                  f"{rep.events_per_second:,.0f} events/s")


@app.command()
def export(
    model: str = typer.Argument(..., help="A model folder, or the name of a shipped model (hepfm models)."),
    onnx: Path = typer.Option(..., "--onnx", help="Output ONNX file (.onnx)."),
    opset: int = typer.Option(18, help="ONNX opset version."),
) -> None:
    """Export a model to ONNX: inputs objects (batch x n x 7; a hierarchical model's rows carry their K
    constituents too, 7 + 6K) and mask (batch x n), both sizes free."""
    from hepfm.inference.export import export_onnx

    path = export_onnx(model, onnx, opset=opset)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): inputs objects [batch, n_objects, 7] float32 "
                  "(a hierarchical model's: 7 + 6K, each row's K constituents appended) and mask [batch, n_objects] "
                  "bool; outputs logits and scores")
