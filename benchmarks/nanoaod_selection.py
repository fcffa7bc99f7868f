"""NanoAOD reader selections before and after: b-tags per jet by hadron flavour, events removed by the
collision-data quality cuts, pileup-like jets at 25-50 GeV.

    python benchmarks/nanoaod_selection.py [--before REV] [--data ../shared/data]

"before" is the reader of git revision REV (default 9ecb9b3, the reader before issue 13), run from a
temporary export of that revision in a subprocess; "after" is the checkout's. Stored jets are matched
back to their NanoAOD jets (same event, pT and eta) to read ``Jet_hadronFlavour`` and ``Jet_genJetIdx``.
A pileup-like jet is a simulated jet with no generator-level jet matched to it (``Jet_genJetIdx < 0``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FILES = {"ttbar2015": "nanoAOD_2015_CMS_Open_Data_ttbar.root", "dy": "nano_dy.root", "dimuon": "nano_dimuon.root"}


def _jet_truth(path: Path, store_dir: Path) -> dict:
    """Stored jets with the flavour and GenJet index of the NanoAOD jet they come from."""
    import uproot

    from hepfm.io.store import EventStore

    a = uproot.open(path)["Events"].arrays(["event", "Jet_pt", "Jet_eta", "Jet_hadronFlavour", "Jet_genJetIdx"],
                                           library="np")
    entry = {int(e): i for i, e in enumerate(a["event"])}
    data = EventStore(store_dir).arrays()
    flav, gen, pt, btag = [], [], [], []
    for ev, objs in zip(data["event_id"], data["objects"], strict=True):
        i = entry[int(ev)]
        for row in objs[objs[:, 6] == 1]:
            k = np.flatnonzero(np.isclose(a["Jet_pt"][i], row[0], rtol=1e-5)
                               & np.isclose(a["Jet_eta"][i], row[1], atol=1e-5))
            if len(k) != 1:
                raise RuntimeError(f"jet of event {ev} not matched ({len(k)} candidates)")
            flav.append(int(a["Jet_hadronFlavour"][i][k[0]]))
            gen.append(int(a["Jet_genJetIdx"][i][k[0]]))
            pt.append(float(row[0]))
            btag.append(float(row[4]))
    return {"flavour": flav, "genjet": gen, "pt": pt, "btag": btag}


def measure(data_dir: Path) -> dict:
    """Convert each test file with this interpreter's hepfm and return the figures."""
    from hepfm.io.nanoaod import convert_nanoaod
    from hepfm.io.store import EventStore

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, name in FILES.items():
            store = Path(tmp) / label
            report = convert_nanoaod([data_dir / name], store, label, progress=False)
            entry = {"read": report.n_read, "written": report.n_written, "btag": report.btag,
                     "removed": getattr(report, "n_removed", {})}
            obj = EventStore(store).arrays()["objects"]
            entry["electrons"] = int((obj[:, :, 6] == 2).sum())
            entry["muons"] = int((obj[:, :, 6] == 3).sum())
            if label != "dimuon":
                entry["jets"] = _jet_truth(data_dir / name, store)
            out[label] = entry
    return out


def _rates(jets: dict) -> dict[str, str]:
    flav, btag = np.array(jets["flavour"]), np.array(jets["btag"])
    cells = {"all": f"{btag.mean():.3f} ({len(btag)} jets)"}
    for name, code in (("b", 5), ("c", 4), ("light", 0)):
        m = flav == code
        cells[name] = f"{btag[m].mean():.3f} ({int(btag[m].sum())}/{int(m.sum())})" if m.any() else "-"
    return cells


def _expected(jets: dict) -> str:
    """b-tags per jet if the simulated detector's per-flavour efficiencies were applied to these jets."""
    from hepfm.physics.detector import DetectorConfig

    cfg, flav = DetectorConfig(), np.array(jets["flavour"])
    eff = np.where(flav == 5, cfg.btag_efficiency_b, np.where(flav == 4, cfg.btag_efficiency_c,
                                                               cfg.btag_efficiency_light))
    return f"{eff.mean():.3f}"


def _pileup(jets: dict) -> str:
    pt, gen = np.array(jets["pt"]), np.array(jets["genjet"])
    soft = (pt >= 25) & (pt < 50)
    return f"{np.mean(gen[soft] < 0):.3f} ({int((gen[soft] < 0).sum())}/{int(soft.sum())})"


def _row(name: str, before, after) -> None:
    print(f"  {name:<34} {before!s:<38} {after}")


def report(before: dict, after: dict, rev: str) -> None:
    """Print the figures side by side."""
    print(f"{'':<36} {'before (' + rev + ')':<38} after (this checkout)")
    for label in ("ttbar2015", "dy"):
        print(f"{label}:")
        _row("b-tag rule", "; ".join(before[label]["btag"]), "; ".join(after[label]["btag"]))
        rb, ra = _rates(before[label]["jets"]), _rates(after[label]["jets"])
        for key in ("all", "b", "c", "light"):
            _row(f"b-tags per jet, {key}", rb[key], ra[key])
        _row("  simulated detector on these jets", _expected(before[label]["jets"]), _expected(after[label]["jets"]))
        _row("pileup-like jets at 25-50 GeV", _pileup(before[label]["jets"]), _pileup(after[label]["jets"]))
        _row("muons stored", before[label]["muons"], after[label]["muons"])
    print("dimuon (collision data):")
    b, a = before["dimuon"], after["dimuon"]
    _row("events read / written", f"{b['read']} / {b['written']}", f"{a['read']} / {a['written']}")
    for cut in a["removed"]:
        _row(f"events failing {cut}", b["removed"].get(cut, "not applied"), a["removed"][cut])
    _row("electrons stored (all cutBased=0)", b["electrons"], a["electrons"])
    _row("b-tag rule", "; ".join(b["btag"]), "; ".join(a["btag"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="9ecb9b3", help="git revision of the reader to compare with")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", action="store_true", help="measure this interpreter's hepfm only, print JSON")
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.data)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "src"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
        run = subprocess.run([sys.executable, __file__, "--json", "--data", str(args.data)], env=env, check=True,
                             capture_output=True, text=True)
        before = json.loads(run.stdout.strip().splitlines()[-1])
    after = measure(args.data)
    report(before, after, args.before)


if __name__ == "__main__":
    main()
