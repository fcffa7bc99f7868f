"""Does GraphNet collapse? The paper's architecture against the default (mean aggregation + residual blocks).

    python benchmarks/collapse.py [--steps 300] [--lrs 1e-4 3e-4 1e-3] [--variants paper default]
                                  [--seeds 0] [--jobs 2] [--bf16] [--device cpu] [--json OUT]

Each variant is trained with Adam at a constant learning rate on a synthetic two-class task that has to be
learned from the objects, not from their number: both classes have the same multiplicities (3 + Poisson(7),
clipped to [3, 20]), the second has harder jets and more b-tags (the task of ``throughput.py``'s bf16
parity run). For each variant x learning rate x seed the table gives the held-out accuracy, how many
distinct values the 2,048 held-out scores take, the share of the scores' variance explained by the object
count alone (1.00: the output is a function of the count), and the share of hidden ReLU units that are
off for every event of the last batch ("dead").

Variants (``GraphNet`` options): ``paper`` = aggregation=sum, residual=false (arXiv:2412.10665);
``mean`` = aggregation=mean, residual=false; ``residual`` = aggregation=sum, residual=true;
``default`` = aggregation=mean, residual=true.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch import nn

from hepfm.data.datasets import EventData
from hepfm.data.features import fit_scaling
from hepfm.models import GraphNet
from hepfm.testing import synthetic_events

VARIANTS = {"paper": dict(aggregation="sum", residual=False), "mean": dict(aggregation="mean", residual=False),
            "residual": dict(aggregation="sum", residual=True), "default": dict(aggregation="mean", residual=True)}


def task(n_train: int, n_test: int, seed: int = 7):
    """EventData of the two-class task, train and test indices, and the feature scaling fitted on train."""
    rng = np.random.default_rng(seed)
    parts = [synthetic_events(n_train + n_test, rng, jet_pt=pt, btag_rate=rate)
             for pt, rate in ((30.0, 0.1), (40.0, 0.3))]
    order = torch.from_numpy(rng.permutation(2 * (n_train + n_test)))
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))[order]
    n = torch.from_numpy(np.concatenate([p[1] for p in parts]))[order]
    y = torch.arange(2).repeat_interleave(n_train + n_test)[order]
    scaling = fit_scaling(x[:2 * n_train].numpy(), n[:2 * n_train].numpy())
    return EventData(x, n, y), torch.arange(2 * n_train), torch.arange(2 * n_train, len(y)), scaling


def count_share(scores: torch.Tensor, counts: torch.Tensor) -> float:
    """Share of the scores' variance explained by the object count alone (between-count / total variance)."""
    scores = scores.double()
    k = int(counts.max()) + 1
    means = torch.zeros(k, dtype=torch.double).index_add_(0, counts, scores)
    means /= torch.bincount(counts, minlength=k).clamp_min(1)
    total = scores.var()
    return float(means[counts].var() / total) if total > 0 else 1.0


def run(variant: str, lr: float, seed: int, steps: int, batch: int, bf16: bool, device: str,
        n_train: int = 2048, n_test: int = 1024) -> dict:
    """Train one variant at one learning rate; held-out accuracy and collapse figures."""
    torch.set_num_threads(1)
    dev = torch.device(device)
    data, train, test, scaling = task(n_train, n_test)
    data = data.to(dev)
    torch.manual_seed(seed)
    model = GraphNet(n_outputs=2, **VARIANTS[variant])
    model.scaling.set(*scaling)
    model.to(dev)
    dead: dict[str, float] = {}

    def hook(name):
        def record(module, inputs, output):
            dead[name] = float(((inputs[0] > 0).sum(0) == 0).float().mean())
        return record

    for name, module in model.named_modules():
        if name.endswith("linears.1") or name.endswith("linears.2") or name.endswith("linears.3"):
            module.register_forward_hook(hook(name))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(1000 + seed)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)
    start = time.perf_counter()
    for _ in range(steps):
        xb, mb, yb = data.batch(train[torch.randperm(len(train), generator=gen)[:batch]].to(dev))
        with autocast:
            loss = nn.functional.cross_entropy(model(xb, mb).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    dead_share = float(np.mean(list(dead.values())))
    model.eval()
    xt, mt, yt = data.batch(test.to(dev))
    with torch.no_grad(), autocast:
        out = model(xt, mt).float().cpu()
    score = out[:, 1] - out[:, 0]
    return dict(variant=variant, lr=lr, seed=seed, steps=steps, batch=batch, bf16=bf16,
                accuracy=float((out.argmax(1) == yt.cpu()).float().mean()), n_test=len(test),
                distinct=len(torch.unique(score)), count_share=count_share(score, mt.sum(1).cpu()),
                dead_relu=dead_share, final_loss=float(loss.detach()), seconds=seconds)


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the grid, print the table, return the rows."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    ap.add_argument("--variants", nargs="+", default=["paper", "default"], choices=sorted(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--jobs", type=int, default=2, help="processes (one torch thread each)")
    ap.add_argument("--bf16", action="store_true", help="train and evaluate under bf16 autocast")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args(argv)
    grid = [(v, lr, s) for v in args.variants for lr in args.lrs for s in args.seeds]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run, v, lr, s, args.steps, args.batch, args.bf16, args.device) for v, lr, s in grid]
        rows = [f.result() for f in futures]
    print(f"two-class task, same multiplicities; {args.steps} Adam steps x {args.batch} events at a constant lr, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, {rows[0]['n_test']} held-out events "
          f"(accuracy +-{0.5 / rows[0]['n_test'] ** 0.5:.3f})")
    print(f"{'variant':<9} {'lr':>7} {'seed':>4} {'accuracy':>8} {'distinct':>8} {'count R2':>8} {'dead ReLU':>9} "
          f"{'loss':>6}")
    for r in rows:
        print(f"{r['variant']:<9} {r['lr']:>7.0e} {r['seed']:>4} {r['accuracy']:>8.3f} {r['distinct']:>8d} "
              f"{r['count_share']:>8.2f} {r['dead_relu']:>9.2f} {r['final_loss']:>6.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
