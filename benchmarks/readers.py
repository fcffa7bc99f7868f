"""Every reader on the shared files, next to simulation: objects per event by type and b-tags per jet, and
each reader's conversion rate (events/s) against uproot's bare read of the same branches.

    python benchmarks/readers.py [--data ../shared/data] [--sim STORE] [--copies 20] [--large 20000]

``--sim``: a generated store with ``ttbar`` and ``zjets`` (e.g. ``hepfm generate ttbar zjets -n 500 -o
STORE -j 2``, about a minute); without it the simulation columns are left out. Rates: each file is
converted ``--copies`` times in one call (copies are symbolic links, so the reader sees that many files),
wall time of the whole call (opening, planning, reading, selecting, writing shards), against opening the
same copies with uproot and reading the branches the reader's plan names (``tree.arrays``), alternated
over ``--repeats`` and the median taken. Small files make both rates overhead-bound (opening a PHYSLITE
file's 1,500 branches, or parsing the NanoAOD RNTuple's 1,300 fields, costs more than reading its events);
``--large N`` also times one file of about N events per reader (the shared file's events repeated, written
as a NanoAOD TTree and as a PHYSLITE RNTuple), where the per-event cost shows.
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


def _large_file(path: Path, tree_name: str, plan, copies: int, rntuple: bool, dst: Path) -> Path:
    """One file holding the plan's branches of ``path``, its events repeated ``copies`` times: a TTree in
    NanoAOD's layout (``nX`` counters), or an RNTuple with ATLAS's ``Container:var`` field names."""
    import awkward as ak
    import uproot

    tree = plan.tree
    # PHYSLITE's planning also reads the simulation bit
    names = [*plan.branches, *(["EventInfoAuxDyn.eventTypeBitmask"] if tree_name == "CollectionTree" else [])]
    if isinstance(tree, uproot.TTree):
        arrays = tree.arrays(names, library="ak")
    else:
        arrays = tree.ntuple.arrays([tree.stored_name(b) for b in names])
        arrays = ak.zip({b: arrays[tree.stored_name(b)] for b in names}, depth_limit=1)
    arrays = ak.concatenate([arrays] * copies)
    with uproot.recreate(dst) as f:
        if rntuple:
            fields = {}
            for name in names:
                if name.endswith(".m_persIndex"):  # an ElementLink: a record of key and index
                    index = ak.values_astype(arrays[name], np.uint32)
                    fields[name.rsplit(".", 1)[0].replace(".", ":", 1)] = ak.zip(
                        {"m_persKey": index * 0, "m_persIndex": index})
                else:
                    fields[name.replace(".", ":", 1)] = arrays[name]
            f.mkrntuple(tree_name, ak.Array(fields))
        else:
            columns, groups = {}, {}
            for name in names:
                if arrays[name].ndim > 1:
                    prefix, field = name.split("_", 1)
                    groups.setdefault(prefix, {})[field] = arrays[name]
                else:
                    columns[name] = arrays[name]
            columns.update({prefix: ak.zip(fields) for prefix, fields in groups.items()})
            f.mktree(tree_name, {k: v.type.content for k, v in columns.items()})
            f[tree_name].extend(columns)
    return dst


def large_file_rates(data: Path, tmp: Path, events: int, repeats: int) -> list[tuple[str, int, float, float]]:
    """(description, events, reader events/s, bare uproot events/s) on one large file per reader."""
    from hepfm.io import nanoaod, physlite
    from hepfm.physics.detector import DetectorConfig

    cfg = DetectorConfig()
    cases = [("nanoaod TTree (ttbar 2015 x k)", data / "nanoAOD_2015_CMS_Open_Data_ttbar.root", "Events", False,
              lambda p: nanoaod.plan_files([p], cfg)[1][0],
              lambda paths, out: nanoaod.convert_nanoaod(paths, out, "x", progress=False)),
             ("physlite RNTuple (Z->ee x k)", data / "physlite_example.root", "CollectionTree", True,
              lambda p: physlite.plan_files([p], cfg)[1][0],
              lambda paths, out: physlite.convert_physlite(paths, out, "x", progress=False))]
    rows = []
    for label, path, tree_name, rntuple, plan, convert in cases:
        p = plan(path)
        big = _large_file(path, tree_name, p, max(1, events // p.tree.num_entries), rntuple, tmp / f"large-{path.name}")
        reader, bare = _rates(big, tree_name, convert, plan, 1, repeats, tmp)
        rows.append((label, plan(big).tree.num_entries, reader, bare))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--sim", type=Path, default=None, help="generated store with ttbar and zjets")
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", type=int, default=0, help="also time one file of about this many events per "
                        "reader (the shared file's events repeated)")
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
        large = large_file_rates(args.data.resolve(), tmp, args.large, args.repeats) if args.large else []
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
    for label, n, reader, bare in large:
        print(f"large file: {label:<32} {n:>7} events  reader {reader:>9,.0f} ev/s  uproot {bare:>9,.0f} ev/s  "
              f"ratio {reader / bare:.2f}")


if __name__ == "__main__":
    main()
