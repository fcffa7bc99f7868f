"""Every reader on the shared files, next to simulation: objects per event by type and b-tags per jet, and
each reader's conversion rate (events/s) against uproot's bare read of the same branches.

    python benchmarks/readers.py [--data ../shared/data] [--sim STORE] [--copies 20]

``--sim``: a generated store with ``ttbar`` and ``zjets`` (e.g. ``hepfm generate ttbar zjets -n 500 -o
STORE -j 2``, about a minute); without it the simulation columns are left out. Rates: each file is
converted ``--copies`` times in one call (copies are symbolic links, so the reader sees that many files),
wall time of the whole call (opening, planning, reading, selecting, writing shards), against opening the
same copies with uproot and reading the branches the reader's plan names (``tree.arrays``), alternated
over ``--repeats`` and the median taken. Small files make both rates overhead-bound; compare the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"jet": 1, "electron": 2, "muon": 3, "photon": 4, "tau": 5}


def objects_figures(objects: np.ndarray) -> dict:
    """Objects per event by type and b-tags per jet of store objects [n, M, 7]."""
    kind = objects[..., 6]
    out = {name: float((kind == code).sum(axis=1).mean()) for name, code in KINDS.items()}
    jets = kind == KINDS["jet"]
    out["btag_per_jet"] = float(objects[..., 4][jets].mean()) if jets.any() else float("nan")
    out["events"] = len(objects)
    return out


def _store_objects(out: Path) -> np.ndarray:
    from hepfm.io.store import EventStore

    return EventStore(out).arrays()["objects"]


def _readers(data: Path, tmp: Path) -> list[tuple[str, str, Path, object, object]]:
    """(format, file label, path, convert(paths, out), plan(path) -> plan) for every reader and shared file."""
    from hepfm.io import nanoaod, ntuple, physlite
    from hepfm.physics.detector import DetectorConfig

    cfg = DetectorConfig()
    sys_path = str(ROOT / "tests")
    if sys_path not in sys.path:
        sys.path.insert(0, sys_path)
    from test_physlite import write_physlite_rntuple  # the test's writer: PHYSLITE fields in an RNTuple

    physlite_rntuple = write_physlite_rntuple(data / "physlite_example.root", tmp / "physlite_rntuple.root")
    nano = lambda paths, out: nanoaod.convert_nanoaod(paths, out, "x", progress=False)  # noqa: E731
    plite = lambda paths, out: physlite.convert_physlite(paths, out, "x", progress=False)  # noqa: E731
    cms = ntuple.load_mapping("cms_nanoaod")
    ntup = lambda paths, out: ntuple.convert_ntuple(paths, out, cms, "x", progress=False)  # noqa: E731
    nano_plan = lambda p: nanoaod.plan_files([p], cfg)[1][0]  # noqa: E731
    plite_plan = lambda p: physlite.plan_files([p], cfg)[1][0]  # noqa: E731
    ntup_plan = lambda p: ntuple.plan_files([p], cfg, cms)[1][0]  # noqa: E731
    return [
        ("nanoaod", "ttbar 2015 (TTree)", data / "nanoAOD_2015_CMS_Open_Data_ttbar.root", nano, nano_plan),
        ("nanoaod", "ttbar 2015 (RNTuple)", data / "nanoAOD_2015_ttbar_rntuple.root", nano, nano_plan),
        ("nanoaod", "DY 2018 (TTree)", data / "nano_dy.root", nano, nano_plan),
        ("nanoaod", "dimuon data 2018", data / "nano_dimuon.root", nano, nano_plan),
        ("physlite", "Z->ee Sherpa (TTree)", data / "physlite_example.root", plite, plite_plan),
        ("physlite", "Z->ee Sherpa (RNTuple)", physlite_rntuple, plite, plite_plan),
        ("ntuple cms_nanoaod", "DY 2018 (TTree)", data / "nano_dy.root", ntup, ntup_plan),
    ]


def _rates(path: Path, tree_name: str, convert, plan, copies: int, repeats: int, tmp: Path) -> tuple[float, float]:
    """(reader events/s, bare uproot events/s) over ``copies`` links to ``path``, median of ``repeats``."""
    import uproot

    folder = tmp / f"copies-{path.stem}"
    folder.mkdir(exist_ok=True)
    links = []
    for i in range(copies):
        link = folder / f"{i:03d}-{path.name}"
        if not link.exists():
            link.symlink_to(path.resolve())
        links.append(link)
    p = plan(path)
    n = p.tree.num_entries * copies
    reader, bare = [], []
    for _ in range(repeats):
        out = tmp / f"rate-{len(list(tmp.iterdir()))}"
        start = time.perf_counter()
        convert(links, out)
        reader.append(n / (time.perf_counter() - start))
        start = time.perf_counter()
        for link in links:
            tree = uproot.open(link)[tree_name]
            names = p.branches if isinstance(tree, uproot.TTree) else [p.tree.stored_name(b) for b in p.branches]
            tree.arrays(names, library="ak")
        bare.append(n / (time.perf_counter() - start))
    return statistics.median(reader), statistics.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--sim", type=Path, default=None, help="generated store with ttbar and zjets")
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for i, (fmt, label, path, convert, plan) in enumerate(_readers(args.data.resolve(), tmp)):
            out = tmp / f"store-{i}"
            report = convert([path], out)
            figures = objects_figures(_store_objects(out))
            info = next(iter(report.source_info.values()))
            tree_name = "CollectionTree" if fmt == "physlite" else "Events"
            reader, bare = _rates(path, tree_name, convert, plan, args.copies, args.repeats, tmp)
            rows.append((fmt, label, figures, info.get("btag", ""), reader, bare))
    sim = {}
    if args.sim is not None:
        from hepfm.io.store import EventStore

        store = EventStore(args.sim)
        for name in ("ttbar", "zjets"):
            if name in store.process_names:
                sim[name] = objects_figures(store.arrays(processes=[name])["objects"])

    head = f"{'format':<20} {'file':<24} {'events':>6} {'jets':>5} {'e':>5} {'mu':>5} {'gamma':>5} {'tau':>4} " \
           f"{'b/jet':>6}  {'reader ev/s':>11} {'uproot ev/s':>11} {'ratio':>6}  b-tag"
    print(head)
    print("-" * len(head))
    for fmt, label, f, btag, reader, bare in rows:
        print(f"{fmt:<20} {label:<24} {f['events']:>6} {f['jet']:>5.2f} {f['electron']:>5.2f} {f['muon']:>5.2f} "
              f"{f['photon']:>5.2f} {f['tau']:>4.2f} {f['btag_per_jet']:>6.3f}  {reader:>11,.0f} {bare:>11,.0f} "
              f"{reader / bare:>6.2f}  {btag}")
    for name, f in sim.items():
        print(f"{'simulation':<20} {name:<24} {f['events']:>6} {f['jet']:>5.2f} {f['electron']:>5.2f} "
              f"{f['muon']:>5.2f} {f['photon']:>5.2f} {f['tau']:>4.2f} {f['btag_per_jet']:>6.3f}  "
              f"{'':>11} {'':>11} {'':>6}  detector b/c/light efficiency 0.70/0.112/0.0033")


if __name__ == "__main__":
    main()
