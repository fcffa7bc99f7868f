"""hepfm convert nanoaod|physlite|delphes: real-experiment ROOT files (TTree or RNTuple) into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from hepfm.cli.app import app, console
from hepfm.errors import HepfmError

convert_app = typer.Typer(no_args_is_help=True, help="Convert real-experiment ROOT files (CMS NanoAOD, ATLAS "
                          "PHYSLITE, Delphes, analysis ntuples) into an event store (objects only, no truth labels).")
app.add_typer(convert_app, name="convert")


_OUT = typer.Option(..., "--out", "-o", help="Output event-store folder.")
_LABEL = typer.Option(None, help="Process name in the store (default: the first file's name).")
_REQUIRE_IDS = typer.Option(True, help="Refuse files missing an object ID's branches (--no-require-ids: convert them "
                            "and record the ID as not applied).")
_DETECTOR_CONFIG = typer.Option(None, help="JSON/TOML file overriding the object cuts.")
_SHARD_SIZE = typer.Option(50_000, help="Events per shard.")
_PROGRESS = typer.Option(True, help="Show a progress bar.")
_PRESELECT = typer.Option(None, help="Event pre-selection on the converted objects: kek (the KEK study's: >= 1 lepton, "
                          ">= 2 jets, >= 1 b-jet) or none.")


def _print_conversion(report, plans_info: dict | None = None) -> None:
    removed = "".join(f", {n} removed by {cut}" for cut, n in report.n_removed.items())
    pre = (f", {report.n_preselection_failed} failed the pre-selection {report.preselection['name']!r}"
           if report.preselection else "")
    console.print(f"converted {len(report.files)} file(s): {report.n_read} events read, {report.n_written} written, "
                  f"{report.n_nonfinite} dropped (NaN/inf){removed}{pre}; {len(report.shards)} shard(s), "
                  f"{report.events_per_second:,.0f} events/s; b-tag: {'; '.join(report.btag)}; "
                  f"store: {report.out} (process {report.label!r})")
    refs = [c for c in report.counts.values() if "constituent_references" in c]
    if refs:
        total = sum(c["constituent_references"] for c in refs)
        resolved = sum(c["constituent_references_resolved"] for c in refs)
        console.print(f"jet constituents: {resolved} of {total} references resolved"
                      + (f" ({100 * resolved / total:.1f}%)" if total else ""))
    groups: dict[str, list[str]] = {}  # files with the same choices share one line
    for path, info in (plans_info or {}).items():
        line = (f"era {info['era']} ({info['era_rule']}); b-tag {info['btag']}, {info['btag_level_reason']}; "
                f"jet ID {info.get('jet_id')}; muon ID {info.get('muon_id')}; pileup jet ID {info['pileup_jet_id']}; "
                f"event quality {info['event_quality']}")
        groups.setdefault(line, []).append(path)
    for line, paths in groups.items():
        who = paths[0] if len(paths) == 1 else f"{len(paths)} files ({paths[0]}, ...)"
        console.print(f"  {who}: {line}")


def _preselection(name: str | None):
    """The named pre-selection; an unknown name is reported with the option's name."""
    from hepfm.io.convert import preselection

    try:
        return preselection(name)
    except HepfmError as exc:
        raise HepfmError(f"--preselect: {exc}") from None


@convert_app.command("nanoaod")
def convert_nanoaod_cmd(
    files: list[str] = typer.Argument(..., help="NanoAOD ROOT files or glob patterns (tree 'Events')."),
    out: Path = _OUT,
    label: Optional[str] = _LABEL,
    btag_branch: Optional[str] = typer.Option(None, help="Jet b-tag discriminant branch (default: the era's tagger, "
                                              "e.g. CSVv2 for 2015, DeepJet for Run 2, UParTAK4 for 2024)."),
    btag_cut: Optional[float] = typer.Option(None, help="b-tag cut (default: the era's working point closest to the "
                                             "simulated detector's efficiencies; medium by default)."),
    era: Optional[str] = typer.Option(None, help="CMS era of every file (e.g. 2017-UL, 2023BPix; default: from the "
                                      "run number, or the branch set for simulation)."),
    lumi_json: Optional[Path] = typer.Option(None, help="Certified-luminosity (golden) JSON: collision-data events "
                                             "outside it are not written."),
    require_ids: bool = _REQUIRE_IDS,
    detector_config: Optional[Path] = _DETECTOR_CONFIG,
    shard_size: int = _SHARD_SIZE,
    preselect: Optional[str] = _PRESELECT,
    progress: bool = _PROGRESS,
) -> None:
    """Convert CMS NanoAOD files into an event store, with the detector configuration's object selection.

    Files of different eras may be converted together: each gets its own era's choices, printed per file.

    Example: hepfm convert nanoaod 'data/*.root' --out opendata --label ttbar_2015 --preselect kek
    """
    from hepfm.io.convert import check_label, preselecting
    from hepfm.io.nanoaod import NanoAODSelection, convert_nanoaod
    from hepfm.physics.detector import DetectorConfig

    if label is not None:
        check_label(label)
    detector = DetectorConfig.from_file(detector_config) if detector_config else None
    selection = _preselection(preselect)
    try:
        with preselecting(selection):
            report = convert_nanoaod(files, out, label, btag_branch=btag_branch, btag_cut=btag_cut, era=era,
                                     lumi_json=lumi_json, detector=detector,
                                     selection=NanoAODSelection(require_ids=require_ids), shard_size=shard_size,
                                     progress=progress)
    except KeyboardInterrupt:
        Console(stderr=True).print("hepfm: interrupted; the shards of this conversion were removed")
        raise typer.Exit(130) from None
    _print_conversion(report, report.source_info)


@convert_app.command("delphes")
def convert_delphes_cmd(
    files: list[str] = typer.Argument(..., help="Delphes ROOT files or glob patterns (tree 'Delphes')."),
    out: Path = _OUT,
    label: Optional[str] = _LABEL,
    btag_bit: int = typer.Option(0, help="Bit of Jet.BTag that marks a b-tagged jet (the card's working point)."),
    detector_config: Optional[Path] = _DETECTOR_CONFIG,
    shard_size: int = _SHARD_SIZE,
    preselect: Optional[str] = _PRESELECT,
    constituents: int = typer.Option(0, help="Also store up to K constituents (pT-ordered) and the truth flavour "
                                     "(Jet.Flavor) of every jet, from the Jet.Constituents references."),
    progress: bool = _PROGRESS,
) -> None:
    """Convert Delphes output files into an event store, with the detector configuration's kinematic cuts.

    Example: hepfm convert delphes delphes_*.root --out events --label zprime_delphes
    (--constituents 32: jets with their EFlow constituents, for jet tagging and hierarchical models)
    """
    from hepfm.io.convert import check_label, preselecting
    from hepfm.io.delphes import convert_delphes
    from hepfm.physics.detector import DetectorConfig

    if label is not None:
        check_label(label)
    detector = DetectorConfig.from_file(detector_config) if detector_config else None
    selection = _preselection(preselect)
    try:
        with preselecting(selection):
            report = convert_delphes(files, out, label, btag_bit=btag_bit, detector=detector,
                                     shard_size=shard_size, progress=progress, constituents=constituents)
    except KeyboardInterrupt:
        Console(stderr=True).print("hepfm: interrupted; the shards of this conversion were removed")
        raise typer.Exit(130) from None
    _print_conversion(report)


def _print_counts(report) -> None:
    """Per file, the objects each cut removed (the reader's cut flow), one line per file."""
    for path, counts in report.counts.items():
        removed = ", ".join(f"{name} {n}" for name, n in counts.items())
        console.print(f"  {path}: objects removed by cut: {removed}")


@convert_app.command("physlite")
def convert_physlite_cmd(
    files: list[str] = typer.Argument(..., help="ATLAS DAOD_PHYSLITE ROOT files or glob patterns (tree or RNTuple "
                                      "'CollectionTree')."),
    out: Path = _OUT,
    label: Optional[str] = _LABEL,
    tagger: Optional[str] = typer.Option(None, help="b-tagger: GN2v00 or DL1dv01 (default: GN2v00 where the file "
                                         "has it, else DL1dv01)."),
    btag_cut: Optional[float] = typer.Option(None, help="Cut on the tagger's discriminant (default: the fixed-cut "
                                             "working point closest to the simulated detector's b-efficiency)."),
    electron_id: str = typer.Option("Medium", help="Electron likelihood ID level: VeryLoose, Loose, LooseBL, Medium "
                                    "or Tight."),
    require_ids: bool = _REQUIRE_IDS,
    detector_config: Optional[Path] = _DETECTOR_CONFIG,
    shard_size: int = _SHARD_SIZE,
    preselect: Optional[str] = _PRESELECT,
    progress: bool = _PROGRESS,
) -> None:
    """Convert ATLAS DAOD_PHYSLITE files (MeV -> GeV) into an event store, with the detector configuration's
    object selection, b-tagging through the jets' links and MET rebuilt from the objects and the track soft term.

    Example: hepfm convert physlite 'DAOD_PHYSLITE.*.root' --out atlas --label zee
    """
    from hepfm.io.convert import check_label, preselecting
    from hepfm.io.physlite import PhysliteSelection, convert_physlite
    from hepfm.physics.detector import DetectorConfig

    if label is not None:
        check_label(label)
    detector = DetectorConfig.from_file(detector_config) if detector_config else None
    selection = _preselection(preselect)
    try:
        with preselecting(selection):
            report = convert_physlite(files, out, label, tagger=tagger, btag_cut=btag_cut, detector=detector,
                                      selection=PhysliteSelection(electron_id=electron_id, require_ids=require_ids),
                                      shard_size=shard_size, progress=progress)
    except KeyboardInterrupt:
        Console(stderr=True).print("hepfm: interrupted; the shards of this conversion were removed")
        raise typer.Exit(130) from None
    _print_conversion(report)
    for path, info in report.source_info.items():
        console.print(f"  {path}: {info['data']}; b-tag {info['btag']}, {info['btag_level_reason']}; "
                      f"electrons {info.get('electron_id')}, {info.get('electron_isolation')}; "
                      f"muons {info.get('muon_id')}, {info.get('muon_isolation')}; "
                      f"jets {info.get('jet_vertex_tagger')}; MET {info['met']}; event quality {info['event_quality']}")
    _print_counts(report)


@convert_app.command("ntuple")
def convert_ntuple_cmd(
    files: list[str] = typer.Argument(..., help="Analysis ntuple files or glob patterns "
                                      "(TTree, RNTuple, Parquet file or folder)."),
    mapping: str = typer.Option(..., "--mapping", "-m", help="YAML mapping of the ntuple's branches, or the name of a "
                                "shipped one: atlas_opendata_13tev, cms_nanoaod, delphes."),
    out: Path = _OUT,
    label: Optional[str] = _LABEL,
    detector_config: Optional[Path] = _DETECTOR_CONFIG,
    shard_size: int = _SHARD_SIZE,
    preselect: Optional[str] = _PRESELECT,
    progress: bool = _PROGRESS,
) -> None:
    """Convert flat analysis ntuples into an event store through a mapping of their branches (per collection:
    pT, eta, phi, energy or mass, charge, b-tag, ID requirements, units; the weight and identity branches).

    Example: hepfm convert ntuple 'mc_*.root' --mapping atlas_opendata_13tev --out opendata --label ttbar
    """
    from hepfm.io.convert import check_label, preselecting
    from hepfm.io.ntuple import convert_ntuple, load_mapping
    from hepfm.physics.detector import DetectorConfig

    if label is not None:
        check_label(label)
    detector = DetectorConfig.from_file(detector_config) if detector_config else None
    selection = _preselection(preselect)
    parsed = load_mapping(mapping)
    try:
        with preselecting(selection):
            report = convert_ntuple(files, out, parsed, label, detector=detector, shard_size=shard_size,
                                    progress=progress)
    except KeyboardInterrupt:
        Console(stderr=True).print("hepfm: interrupted; the shards of this conversion were removed")
        raise typer.Exit(130) from None
    _print_conversion(report)
    for path, info in report.source_info.items():
        parts = "; ".join(f"{name} ({', '.join(c['kinds'])}): {' and '.join(c['require'])}"
                          for name, c in info["collections"].items())
        console.print(f"  {path}: mapping {info['mapping']}; {parts}; b-tag {info['btag']}")
    _print_counts(report)
