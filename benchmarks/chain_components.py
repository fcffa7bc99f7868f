"""Where the time of the generation chain goes, per event, side by side in one run (one core).

    python benchmarks/chain_components.py [--process tth] [--events 1000]

Prints, in ms per event and as a fraction of Pythia's own ``next()``: reading the event record particle
by particle through the Python bindings (the approach hepfm avoids), the extra cost of ``nextBatch``
(columnar records), the detector response, the truth labels, and jet clustering of all visible particles
against clustering of those above ``jet_input_min_pt`` (what hepfm does).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from hepfm.io.generate import catalog_source, plan_shards
from hepfm.physics import detector as det
from hepfm.physics import kinematics as kin
from hepfm.physics.generation import make_pythia
from hepfm.physics.record import FlatRecord
from hepfm.physics.truth import truth_labels


def cpu_ms(fn, n_events: int) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) / n_events * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--process", default="tth")
    ap.add_argument("--events", type=int, default=1000)
    args = ap.parse_args()
    n = args.events
    (job,) = plan_shards([catalog_source(args.process)], n, Path("unused"), seed=1, shard_size=n)

    # Same settings and seed for both generators, so both see the same events.
    bare = make_pythia(job.pythia_settings(), "bare")
    batch_gen = make_pythia(job.pythia_settings(), "batch")
    t_next = cpu_ms(lambda: [bare.next() for _ in range(n)], n)
    batches = []
    t_batch = cpu_ms(lambda: batches.extend(batch_gen.nextBatch(250) for _ in range(n // 250)), n)

    def per_particle():
        for _ in range(100):
            bare.next()
            [(p.id(), p.px(), p.py(), p.pz(), p.e()) for p in bare.event if p.isFinal()]

    t_loop = cpu_ms(per_particle, 100) - t_next  # minus the generation inside the loop

    cfg = det.DetectorConfig()
    rng = np.random.default_rng(1)
    records = [FlatRecord.from_batch(b.prt) for b in batches]
    t_reco = cpu_ms(lambda: [det.reconstruct(r, cfg, rng) for r in records], n)
    t_truth = cpu_ms(lambda: [truth_labels(r) for r in records], n)

    leading: dict[float, list] = {}

    def cluster(min_pt):
        leading[min_pt] = []
        for r in records:
            fin = r.status > 0
            px, py, pz, e = r.px[fin], r.py[fin], r.pz[fin], r.e[fin]
            aid = np.abs(r.pid[fin])
            pt = kin.pt(px, py)
            keep = ~np.isin(aid, det.INVISIBLE_IDS) & (np.abs(kin.eta(px, py, pz)) < cfg.calo_eta_max)
            keep &= pt > min_pt
            objs = det._Objects(r.ev[fin][keep], pt[keep], pt[keep], pt[keep])
            jets = det._cluster_jets(objs, px[keep], py[keep], pz[keep], e[keep], cfg, r.n_events)
            lead = np.zeros(r.n_events)
            np.maximum.at(lead, jets.ev, jets.pt)
            leading[min_pt].append(lead)

    t_all = cpu_ms(lambda: cluster(0.0), n)
    t_cut = cpu_ms(lambda: cluster(cfg.jet_input_min_pt), n)

    print(f"process {args.process}, {n} events, one core, CPU ms per event (fraction of Pythia next())")
    rows = [
        ("Pythia next()", t_next),
        ("per-particle Python read of the record", t_loop),
        ("nextBatch extra cost over next()", t_batch - t_next),
        ("detector response (columnar)", t_reco),
        ("truth labels (columnar)", t_truth),
        ("jet clustering, all visible particles", t_all),
        (f"jet clustering, particles > {cfg.jet_input_min_pt} GeV", t_cut),
    ]
    for name, ms in rows:
        print(f"{name:>44}: {ms:7.3f} ms   ({ms / t_next:6.1%})")
    full, cut = np.concatenate(leading[0.0]), np.concatenate(leading[cfg.jet_input_min_pt])
    ok = full > 25.0
    print(f"leading-jet pT with the input cut / without (events with a jet > 25 GeV): median "
          f"{np.median(cut[ok] / full[ok]):.4f}, 5th percentile {np.percentile(cut[ok] / full[ok], 5):.4f}")


if __name__ == "__main__":
    main()
