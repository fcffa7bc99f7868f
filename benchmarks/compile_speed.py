"""Eager against ``torch.compile`` GraphNet training steps: events/s, compile time and the break-even epochs.

    python benchmarks/compile_speed.py [--device cpu|cuda] [--batches 4096,16384,65536] [--precisions fp32,bf16]
                                       [--events N] [--steps K] [--json OUT] [--quick]

For each batch size and precision, the default GraphNet (12 outputs) trains on synthetic events
(:func:`throughput.synthetic_events`) the way the trainer's ``--compile`` does: inputs padded to a multiple
of 8 objects (:func:`hepfm.train.trainer.pad_width`), packed sizes bucketed (``bucket_shapes``),
``torch.compile(dynamic=False)``, Adam. Measured per configuration:

* the compiled model's first pass over every batch of the events (each new bucketed shape compiles
  there), the number of distinct bucketed shapes and of graphs dynamo compiled;
* eager and compiled events/s: median of ``--steps`` timed steps each, alternating eager and compiled
  step by step on the same batches (on the CPU also per second of process time, robust to other load);
* compile time = first pass - its batches at the compiled rate; break-even = the number of epochs of
  ``--epoch-events`` events after which compiling has paid for itself (compile time / time saved per
  epoch), or "never" when the compiled steps are not faster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from hepfm.data.datasets import EventData
from hepfm.data.features import fit_scaling
from hepfm.models import GraphNet
from hepfm.models.graphnet import PackedGraph
from hepfm.testing import synthetic_events
from hepfm.train.trainer import pad_width


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(scaling, device: torch.device) -> GraphNet:
    torch.manual_seed(0)
    model = GraphNet(n_outputs=12)
    model.scaling.set(*scaling)
    return model.to(device)


def _steps(net, opt, data: EventData, batches: list[torch.Tensor], bf16: bool, device: torch.device,
           clock=time.perf_counter) -> list[float]:
    """Seconds (of ``clock``) per training step on each batch of ``batches`` (synchronised)."""
    times = []
    for index in batches:
        t0 = clock()
        x, mask, y = data.batch(index)
        x, mask, _ = pad_width(x, mask)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            out = net(x, mask)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        times.append(clock() - t0)
    return times


def measure(data: EventData, scaling, batch: int, bf16: bool, steps: int, epoch_events: int,
            device: torch.device) -> dict:
    """Eager and compiled figures for one batch size and precision (see the module docstring)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(3)).to(device)
    epoch = [order[s:s + batch] for s in range(0, len(order) - batch + 1, batch)]  # full batches only
    timed = [epoch[k % len(epoch)] for k in range(steps)]
    shapes = set()
    for index in epoch:
        x, mask, _ = pad_width(*data.batch(index)[:2])
        g = PackedGraph(mask.bool(), bucket=True)
        shapes.add((tuple(x.shape[:2]), len(g.node_event), len(g.receiver)))

    eager_model = _model(scaling, device)
    eager_opt = torch.optim.Adam(eager_model.parameters(), lr=1e-4)
    _steps(eager_model, eager_opt, data, timed[:1], bf16, device)
    torch._dynamo.reset()
    counters.clear()
    model = _model(scaling, device)
    model.bucket_shapes = True
    compiled_net = torch.compile(model, dynamic=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    t0 = time.perf_counter()
    _steps(compiled_net, opt, data, epoch, bf16, device)
    first_pass = time.perf_counter() - t0
    graphs = int(counters["stats"].get("unique_graphs", 0))
    # Eager and compiled steps alternate, so that load from other processes hits both alike; on the CPU the
    # process time is reported too (what the step costs whatever else the machine runs).
    wall = {"eager": [], "compiled": []}
    cpu = {"eager": [], "compiled": []}
    for index in timed:
        for name, net, o in (("eager", eager_model, eager_opt), ("compiled", compiled_net, opt)):
            wall[name] += _steps(net, o, data, [index], bf16, device)
            if device.type == "cpu":
                cpu[name] += _steps(net, o, data, [index], bf16, device, clock=time.process_time)
    step_s = {k: statistics.median(v) for k, v in wall.items()}
    eager, compiled = batch / step_s["eager"], batch / step_s["compiled"]
    compile_s = max(first_pass - len(epoch) * step_s["compiled"], 0.0)
    saved_per_epoch = epoch_events / eager - epoch_events / compiled
    torch._dynamo.reset()
    row = dict(batch=batch, precision="bf16" if bf16 else "fp32", eager_events_per_s=eager,
               compiled_events_per_s=compiled, ratio=compiled / eager, first_pass_s=first_pass,
               first_pass_batches=len(epoch), compile_s=compile_s, distinct_shapes=len(shapes),
               dynamo_graphs=graphs, epoch_events=epoch_events,
               break_even_epochs=compile_s / saved_per_epoch if saved_per_epoch > 0 else None)
    if device.type == "cpu":
        rates = {k: batch / statistics.median(v) for k, v in cpu.items()}
        row.update(eager_events_per_cpu_s=rates["eager"], compiled_events_per_cpu_s=rates["compiled"],
                   cpu_ratio=rates["compiled"] / rates["eager"])
    return row


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison, print the table and return the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="4096,16384,65536", help="comma-separated batch sizes")
    ap.add_argument("--precisions", default="fp32,bf16", help="fp32, bf16 or both")
    ap.add_argument("--events", type=int, default=262144, help="synthetic events held (on the device)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per measurement (median)")
    ap.add_argument("--epoch-events", type=int, default=1_000_000, help="epoch size for the break-even count")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a CPU dry run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.batches, args.events, args.steps = "64", 512, 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    objects, counts = synthetic_events(args.events, np.random.default_rng(2024))
    scaling = fit_scaling(objects, counts)
    labels = torch.from_numpy(np.random.default_rng(5).integers(0, 12, len(counts)))
    data = EventData(torch.from_numpy(objects), torch.from_numpy(counts), labels).to(device)
    rows, result = [], {"rows": []}
    for batch in (int(b) for b in args.batches.split(",")):
        if batch > len(data):
            print(f"batch {batch}: more than the {len(data)} events held, skipped")
            continue
        for precision in args.precisions.split(","):
            row = measure(data, scaling, batch, precision == "bf16", args.steps, args.epoch_events, device)
            rows.append(row)
            _print_row(row)
            result = dict(device=str(device), device_name=torch.cuda.get_device_name(device)
                          if device.type == "cuda" else "cpu", threads=torch.get_num_threads(),
                          torch=torch.__version__, events=len(data), steps=args.steps, rows=rows, quick=args.quick)
            if args.json:  # after every row: a run cut short by a time limit keeps what it measured
                Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _print_row(r: dict) -> None:
    even = "never" if r["break_even_epochs"] is None else f"{r['break_even_epochs']:.2f}"
    print(f"batch {r['batch']:>6} {r['precision']}: eager {r['eager_events_per_s']:,.0f} ev/s, compiled "
          f"{r['compiled_events_per_s']:,.0f} ev/s (x{r['ratio']:.2f}"
          + (f"; per CPU second x{r['cpu_ratio']:.2f}" if "cpu_ratio" in r else "")
          + f"); compile {r['compile_s']:.1f} s "
          f"({r['distinct_shapes']} bucketed shapes, {r['dynamo_graphs']} graphs, first pass "
          f"{r['first_pass_s']:.1f} s over {r['first_pass_batches']} batches); break-even after {even} epochs "
          f"of {r['epoch_events']:,} events", flush=True)


if __name__ == "__main__":
    main()
