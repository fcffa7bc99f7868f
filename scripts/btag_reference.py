"""Simulated b-tag reference numbers behind the readers' default working points.

Generates tt̄ and W + jets events with hepfm's Pythia chain and the default detector, and prints per
process: the jets' flavour fractions (b, c, light by the detector's own quark matching, the numbers in
``hepfm.io.btag_levels.FLAVOUR_MIX``), the simulated b-tags per jet and per event, and for every CMS era's
discriminant and every PHYSLITE tagger the expected b-tags per jet and per event at each level (from the
tagger's published efficiencies), the distance of the rule and the level it chooses.

With ``--real DIR`` it also converts the shared real files of DIR (CMS NanoAOD tt̄ and Drell-Yan, the
ATLAS PHYSLITE Z -> ee + jets file) at every level of their tagger and prints their b-tags per jet and
per event, the default level marked.

    python scripts/btag_reference.py [--events 4000] [--seed 1] [--real ../shared/data]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from hepfm.io import btag_levels as bl
from hepfm.io import cms_eras, physlite
from hepfm.io.nanoaod import convert_nanoaod
from hepfm.io.physlite import convert_physlite
from hepfm.io.schema import FEATURE_INDEX, TYPE_CODES
from hepfm.io.store import EventStore
from hepfm.physics.detector import DetectorConfig


def store_tags(store: Path) -> tuple[int, int, int]:
    """(events, jets, b-tagged jets) of an event store."""
    objects = EventStore(store).arrays()["objects"]
    jets = objects[:, :, FEATURE_INDEX["type"]] == TYPE_CODES["jet"]
    return len(objects), int(jets.sum()), int((jets & (objects[:, :, FEATURE_INDEX["btag"]] > 0.5)).sum())


def real_tables(folder: Path) -> None:
    """b-tags per jet and per event of the shared real files at every level of their tagger."""
    cfg = DetectorConfig()
    nano = {"nanoAOD_2015_CMS_Open_Data_ttbar.root": "tt̄", "nano_dy.root": "Drell-Yan"}
    for name, what in nano.items():
        with tempfile.TemporaryDirectory() as tmp:
            info = convert_nanoaod([folder / name], Path(tmp) / "default", "d", progress=False).source_info
            info = next(iter(info.values()))
            branch, era = info["btag_branch"], cms_eras.ERAS[info["era"]]
            chosen = cms_eras.default_level(branch, cfg)
            for level, cut in zip(cms_eras.LEVELS, era.btag[branch], strict=True):
                convert_nanoaod([folder / name], Path(tmp) / level, "d", btag_cut=cut, progress=False)
                n, jets, tags = store_tags(Path(tmp) / level)
                print(f"{name} ({what}, era {era.name}, {branch}) {level:>6} > {cut:g}: {n} events, {jets} jets, "
                      f"{tags / jets:.3f} b-tags/jet, {tags / n:.3f}/event"
                      + ("  <- default" if level == chosen else ""))
    name = "physlite_example.root"
    with tempfile.TemporaryDirectory() as tmp:
        report = convert_physlite([folder / name], Path(tmp) / "default", "d", progress=False)
        info = next(iter(report.source_info.values()))
        tagger = physlite.TAGGERS[info["btag_tagger"]]
        chosen = physlite.default_working_point(tagger, cfg)
        for eff, cut in tagger.working_points.items():
            label = f"wp{round(eff * 100)}"
            convert_physlite([folder / name], Path(tmp) / label, "d", btag_cut=cut, progress=False)
            n, jets, tags = store_tags(Path(tmp) / label)
            print(f"{name} (Z -> ee + jets, {tagger.name}) {eff:.0%} > {cut:g}: {n} events, {jets} jets, "
                  f"{tags / jets:.3f} b-tags/jet, {tags / n:.3f}/event" + ("  <- default" if eff == chosen else ""))


def main() -> None:
    """Print the flavour mix, the simulated multiplicities and each candidate level's expectation."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--real", type=Path, default=None, help="folder of the shared real files")
    args = ap.parse_args()
    if args.real is not None:
        real_tables(args.real)
    cfg = DetectorConfig()
    jets_per_event = {}
    for i, process in enumerate(bl.FLAVOUR_MIX):
        sim = bl.simulate_tags(process, args.events, args.seed + i, cfg)
        total = sim.jets_per_event.sum()
        frac = sim.flavour_mix
        err = np.sqrt(frac * (1 - frac) / total)
        jets_per_event[process] = sim.jets_per_event.mean()
        print(f"{process}: {sim.events} events, {total} jets, {sim.jets_per_event.mean():.3f} jets/event; flavour "
              f"b {frac[0]:.4f}±{err[0]:.4f} c {frac[1]:.4f}±{err[1]:.4f} light {frac[2]:.4f}±{err[2]:.4f} "
              f"(in FLAVOUR_MIX: {bl.FLAVOUR_MIX[process]})")
        print(f"  simulated b-tags per jet {sim.tags_per_event.sum() / total:.4f} (expected from the mix "
              f"{bl.tags_per_jet(frac, bl.simulated_efficiency(cfg)):.4f}), per event {sim.tags_per_event.mean():.4f}")

    def table(name: str, candidates: dict) -> None:
        chosen = bl.best_level(candidates, cfg)
        print(name)
        for level, eff in candidates.items():
            cols = "  ".join(f"{p} {bl.tags_per_jet(m, eff):.4f}/jet {bl.tags_per_jet(m, eff) * jets_per_event[p]:.3f}"
                             f"/event" for p, m in bl.FLAVOUR_MIX.items())
            print(f"  {level!s:>7} eff(b,c,l)={eff}  {cols}  distance {bl.level_distance(eff, cfg):.4f}"
                  + ("  <- chosen" if level == chosen else ""))

    for branch, tagger in cms_eras.TAGGERS.items():
        eras = [e.name for e in cms_eras.ERAS.values() if branch in e.btag]
        table(f"CMS {tagger} ({branch}; eras {', '.join(eras)})", cms_eras.level_efficiencies(branch))
    for tagger in physlite.TAGGERS.values():
        table(f"PHYSLITE {tagger.name}", tagger.efficiencies)


if __name__ == "__main__":
    main()
