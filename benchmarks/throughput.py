"""Training throughput of GraphNet against PyTorch Geometric and dense padded versions of the same model.

    python benchmarks/throughput.py [--threads 2] [--batch 1024] [--store DIR] [--json OUT] [--quick]

One run measures, side by side and interleaved (so that load from other processes hits all alike),
training events/s — data pipeline + forward + backward + Adam step — of

* ``graphnet``: :class:`hepfm.models.GraphNet` with the paper's options (sum aggregation, no residual
  connections: the architecture the peers implement; the default adds a few elementwise ops) fed by
  :meth:`hepfm.data.datasets.EventData.batch`
  (slice the stored [N, M, 7] tensor, trim to the batch's largest multiplicity);
* ``pyg-list``: :class:`hepfm.testing.peers.PygGraphNet`, a ``torch_geometric.nn.MetaLayer`` model with the same
  MLPs and parameter count, fed the way a PyG user does it: one ``Data`` per event (rows + fully connected
  ``edge_index``, built once like a dataset's ``process()``), collated by ``Batch.from_data_list`` every step;
* ``pyg-vec``: the same PyG model on a batched ``edge_index`` built per batch, vectorised, with
  ``torch_geometric.utils.dense_to_sparse`` (a stronger PyG baseline);
* ``dense``: :class:`hepfm.testing.peers.DenseGraphNet`, edges as a padded [B, M, M, 64] tensor (M = the
  store's 20);
* ``graphnet-bf16``: GraphNet under bf16 autocast.

It also counts forward FLOPs per event (see :func:`forward_flops`), measures a large square matmul's
FLOP rate in the same run, reports each model's achieved rate as a fraction of it, checks that the
three implementations give the same outputs on the same weights, and trains GraphNet in fp32 and bf16
from one initialisation on a small synthetic two-class task to compare held-out accuracies
(``--parity-variant default`` or ``paper``).

``--trainer`` also times the real trainer — :func:`hepfm.train.workflows.pretrain` (multiclass, default
GraphNet) with its data pipeline, validation, checkpoints and final test evaluation — on ``--trainer-store``
or on a synthetic two-process store written to a temporary folder (``--trainer-events`` per process), three
ways: held in memory (on the device), streamed from disk with synchronous reads (``read_ahead=0``) and
streamed with the read-ahead thread. It reports the training events/s (the history's per-epoch rate, epoch 1
left out when there are more: compilation, caches) and the wall events/s of the whole command, and the time
per epoch extrapolated to 1M events. ``--trainer-only`` skips the synthetic figures.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# On a shared machine, OpenMP threads that spin-wait collapse when another process holds a core: measured
# here, 2 spinning threads ran a [1024, 64] x [64, 64] matmul at 1-3 GFLOP/s against 74 with passive waiting
# (and GraphNet training at 113 against 629 events/s). Passive waiting costs ~20% on an idle machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from hepfm.data.datasets import EventData
from hepfm.data.features import EDGE_INPUTS, GLOBAL_INPUTS, NODE_INPUTS, fit_scaling, mask_from_counts
from hepfm.models import GraphNet, count_parameters
from hepfm.models.graphnet import PAPER_OPTIONS
from hepfm.models.layers import LATENT_DIM
from hepfm.testing.events import synthetic_events, synthetic_store
from hepfm.testing.peers import DEPTH, N_BLOCKS, event_graphs, peers_from, vectorised_graph

PARITY_VARIANTS = {"default": {}, "paper": PAPER_OPTIONS}


# --------------------------------------------------------------------------------------------- inputs
def load_events(args, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """Events from ``--store`` (its first ``--events``) or synthetic ones, plus a description."""
    if args.store:
        from hepfm.io.store import EventStore

        arrays = EventStore(args.store).head(args.events, fields=("objects", "n_objects"))
        if not arrays:
            sys.exit(f"{args.store}: no events")
        return (np.ascontiguousarray(arrays["objects"], dtype=np.float32), arrays["n_objects"].astype(np.int64),
                f"event store {args.store}")
    objects, counts = synthetic_events(args.events, rng)
    return objects, counts, "synthetic events (3 + Poisson(7) objects, clipped to [3, 20])"


# --------------------------------------------------------------------------------------------- FLOPs
def forward_flops(n_events: int, n_nodes: int, n_edges: int, n_outputs: int, split: bool) -> int:
    """Forward FLOPs of the Linear layers (2 per multiply-add; bias, ReLU, LayerNorm, gathers, sums ignored).

    ``split`` counts GraphNet's split first layers: the node and global pieces of the edge MLP's input are
    multiplied once per node / event, the node MLP's global piece once per event.
    """
    w, rest = LATENT_DIM, (DEPTH - 1) * LATENT_DIM * LATENT_DIM
    b, n, e = n_events, n_nodes, n_edges
    macs = n * (NODE_INPUTS * w + rest) + e * (EDGE_INPUTS * w + rest) + b * (GLOBAL_INPUTS * w + rest)
    if split:
        block = (2 * n + e + b) * w * w + e * rest + (2 * n + b) * w * w + n * rest
    else:
        block = e * (4 * w * w + rest) + n * (3 * w * w + rest)
    block += b * (3 * w * w + rest)
    macs += N_BLOCKS * block + b * (w * w + rest) + b * w * n_outputs
    return 2 * macs


def matmul_rate(size: int, dtype: torch.dtype, device: torch.device, repeats: int = 3,
                rows: int | None = None) -> float:
    """FLOP/s of ``a @ b``: [size, size] x [size, size], or [rows, size] x [size, size] when ``rows`` is given."""
    a = torch.randn(rows or size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    times = []
    for k in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        if k:
            times.append(time.perf_counter() - start)
    return 2.0 * a.shape[0] * size * size / statistics.median(times)


# --------------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    """Wait for queued device work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on ``device`` when ``bf16``, else a disabled context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


class Runner:
    """One model with its optimiser and data pipeline; :meth:`step` does one full training step."""

    def __init__(self, name: str, model: nn.Module, forward, bf16: bool, device: torch.device):
        self.name, self.model, self.forward, self.bf16, self.device = name, model, forward, bf16, device
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.rates: list[float] = []

    def step(self, index: torch.Tensor) -> None:
        """Pipeline + forward + loss + backward + optimiser step on the events at ``index``."""
        with autocast(self.device, self.bf16):
            out, y = self.forward(self.model, index)
            loss = nn.functional.cross_entropy(out.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def timed(self, batches: list[torch.Tensor]) -> None:
        """Run the batches and record events/s."""
        sync(self.device)
        start = time.perf_counter()
        for index in batches:
            self.step(index)
        sync(self.device)
        self.rates.append(sum(len(i) for i in batches) / (time.perf_counter() - start))


def build_runners(data: EventData, graphs: list[Data], n_outputs: int, device: torch.device,
                  scaling: tuple[np.ndarray, np.ndarray]) -> list[Runner]:
    """The five configurations, all starting from the same weights."""
    torch.manual_seed(0)
    graphnet = GraphNet(n_outputs=n_outputs, **PAPER_OPTIONS)  # the architecture the peers implement
    graphnet.scaling.set(*scaling)
    pyg, dense = peers_from(graphnet)
    dense_width = data.x.shape[1]

    def graphnet_fwd(model, index):
        x, mask, y = data.batch(index)
        return model(x, mask), y

    def pyg_list_fwd(model, index):
        graph = Batch.from_data_list([graphs[k] for k in index.tolist()]).to(device)
        return model.forward_batch(graph), graph.y

    def pyg_vec_fwd(model, index):
        rows, edge_index, batch, n_objects, y = vectorised_graph(data, index)
        return model(rows, edge_index, batch, n_objects), y

    def dense_fwd(model, index):
        n = data.n_objects[index]
        return model(data.x[index], mask_from_counts(n, dense_width)), data.y[index]

    return [
        Runner("graphnet", graphnet.to(device), graphnet_fwd, False, device),
        Runner("graphnet-bf16", copy.deepcopy(graphnet).to(device), graphnet_fwd, True, device),
        Runner("pyg-list", pyg.to(device), pyg_list_fwd, False, device),
        Runner("pyg-vec", copy.deepcopy(pyg).to(device), pyg_vec_fwd, False, device),
        Runner("dense", dense.to(device), dense_fwd, False, device),
    ]


# --------------------------------------------------------------------------------------------- checks
def equivalence(data: EventData, n_events: int, device: torch.device, scaling) -> dict[str, float]:
    """Max |output difference| of the PyG and dense peers against GraphNet, same weights, one batch."""
    torch.manual_seed(1)
    graphnet = GraphNet(n_outputs=12, **PAPER_OPTIONS)
    graphnet.scaling.set(*scaling)
    pyg, dense = peers_from(graphnet)
    index = torch.arange(min(n_events, len(data)), device=device)
    x, mask, _ = data.batch(index)
    with torch.no_grad():
        ref = graphnet.to(device)(x, mask)
        rows, edge_index, batch, n_objects, _ = vectorised_graph(data, index)
        out_pyg = pyg.to(device)(rows, edge_index, batch, n_objects)
        out_dense = dense.to(device)(data.x[index], mask_from_counts(data.n_objects[index], data.x.shape[1]))
    return {"pyg": float((out_pyg - ref).abs().max()), "dense": float((out_dense - ref).abs().max()),
            "output_scale": float(ref.abs().max())}


def bf16_parity(steps: int, n_train: int, n_test: int, batch: int, device: torch.device,
                variant: str = "default", lr: float = 3e-4) -> dict[str, float]:
    """Train GraphNet in fp32 and under bf16 autocast from one init on the same batches; held-out accuracies.

    ``variant``: ``default`` (GraphNet's defaults: mean aggregation, residual blocks) or ``paper``
    (the published architecture: sum aggregation, no residual connections).

    Task: two classes of synthetic events with the same multiplicities, the second with more b-tagged and
    harder jets (so the model has to learn from the objects, not from their count).
    """
    rng = np.random.default_rng(7)
    parts = [synthetic_events(n_train + n_test, rng, jet_pt=pt, btag_rate=rate) for pt, rate in ((30.0, 0.1),
                                                                                                 (40.0, 0.3))]
    order = torch.from_numpy(rng.permutation(2 * (n_train + n_test)))
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))[order]
    n = torch.from_numpy(np.concatenate([p[1] for p in parts]))[order]
    y = torch.arange(2).repeat_interleave(n_train + n_test)[order]
    data = EventData(x, n, y).to(device)
    train, test = torch.arange(2 * n_train, device=device), torch.arange(2 * n_train, len(data), device=device)
    scaling = fit_scaling(x[:2 * n_train].numpy(), n[:2 * n_train].numpy())

    torch.manual_seed(3)
    init = GraphNet(n_outputs=2, **PARITY_VARIANTS[variant])
    init.scaling.set(*scaling)
    gen = torch.Generator().manual_seed(5)
    batches = [train[torch.randperm(len(train), generator=gen)[:batch].to(device)] for _ in range(steps)]
    result, predictions = {}, []
    for label, bf16 in (("fp32", False), ("bf16", True)):
        model = copy.deepcopy(init).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        # Decay to zero, so that both runs end settled rather than at a random point of a noisy trajectory.
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 - k / steps)
        for index in batches:
            xb, mb, yb = data.batch(index)
            with autocast(device, bf16):
                loss = nn.functional.cross_entropy(model(xb, mb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        xt, mt, yt = data.batch(test)
        with torch.no_grad(), autocast(device, bf16):
            pred = model(xt, mt).float().argmax(dim=1)
        result[f"accuracy_{label}"] = float((pred == yt).float().mean())
        predictions.append(pred)
        if not bf16:
            with torch.no_grad():
                ref = model(xt, mt)
                with autocast(device, True):
                    low = model(xt, mt).float()
            result["max_logit_diff"] = float((low - ref).abs().max())
            result["max_logit"] = float(ref.abs().max())
    result.update(steps=steps, batch=batch, n_test=len(test), variant=variant, lr=lr,
                  prediction_agreement=float((predictions[0] == predictions[1]).float().mean()))
    return result


# --------------------------------------------------------------------------------------- real trainer
class GpuBusy:
    """GPU busy fraction while the block runs: ``nvidia-smi`` utilisation (the share of time a kernel ran)
    sampled every 100 ms; ``fraction`` stays None without nvidia-smi or on the CPU."""

    def __init__(self, device: torch.device):
        self.device, self.proc, self.fraction, self.samples = device, None, None, 0

    def __enter__(self):
        import shutil
        import subprocess

        if self.device.type == "cuda" and shutil.which("nvidia-smi"):
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self.proc = subprocess.Popen(["nvidia-smi", "-i", str(index), "--query-gpu=utilization.gpu",
                                          "--format=csv,noheader,nounits", "-lms", "100"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc):
        if self.proc is None:
            return False
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        values = [float(v) for v in out.split() if v.replace(".", "", 1).isdigit()]
        self.samples = len(values)
        self.fraction = sum(values) / (100 * len(values)) if values else None
        return False


def trainer_throughput(store: Path, device: torch.device, batch: int, epochs: int, compile_: bool,
                       bf16: bool | None, work: Path) -> list[dict]:
    """Events/s of ``hepfm pretrain`` on ``store``: in memory, streamed synchronously, streamed with read-ahead."""
    from hepfm.train.trainer import TrainConfig
    from hepfm.train.workflows import pretrain

    rows = []
    for name, stream, read_ahead in (("in-memory", False, 0), ("streamed-sync", True, 0),
                                     ("streamed-read-ahead", True, 2)):
        cfg = TrainConfig(epochs=epochs, batch_size=batch, patience=epochs + 1, compile=compile_, bf16=bf16,
                          read_ahead=read_ahead, progress=False, tensorboard=False)
        t0 = time.perf_counter()
        with GpuBusy(device) as busy:
            summary = pretrain(store, work / name, "multiclass", cfg=cfg, device=str(device), overwrite=True,
                               stream=stream)
        wall = time.perf_counter() - t0
        with open(work / name / "history.csv") as f:
            rates = [float(r["events_per_s"]) for r in csv.DictReader(f)]
        steady = rates[1:] if len(rates) > 1 else rates
        n_train = summary["n_train"]
        train_rate = statistics.median(steady)
        rows.append(dict(pipeline=name, compile=compile_, bf16=bf16 if bf16 is not None else device.type == "cuda",
                         batch=batch, epochs=len(rates), n_train=n_train, train_events_per_s=train_rate,
                         first_epoch_events_per_s=rates[0], wall_s=wall,
                         wall_events_per_s=n_train * len(rates) / wall,
                         epoch_s_per_1M_events=1e6 / train_rate, gpu_busy_fraction=busy.fraction,
                         gpu_busy_samples=busy.samples))
    return rows


def print_trainer(rows: list[dict], device: str, source: str) -> None:
    """The real trainer's table."""
    print(f"real trainer (hepfm pretrain, default GraphNet, multiclass) on {device}, {source}:")
    print(f"{'pipeline':<20} {'compile':<7} {'bf16':<5} {'batch':>6} {'train ev/s':>11} {'epoch 1 ev/s':>13} "
          f"{'wall ev/s':>10} {'s/epoch @1M':>12} {'GPU busy':>9}")
    for r in rows:
        print(f"{r['pipeline']:<20} {r['compile']!s:<7} {r['bf16']!s:<5} {r['batch']:>6} "
              f"{r['train_events_per_s']:>11,.0f} {r['first_epoch_events_per_s']:>13,.0f} "
              f"{r['wall_events_per_s']:>10,.0f} {r['epoch_s_per_1M_events']:>12,.1f} "
              f"{'-' if r['gpu_busy_fraction'] is None else format(r['gpu_busy_fraction'], '.0%'):>9}")
    by = {r["pipeline"]: r["train_events_per_s"] for r in rows}
    if "streamed-sync" in by and "streamed-read-ahead" in by:
        print(f"read-ahead / synchronous streamed: {by['streamed-read-ahead'] / by['streamed-sync']:.2f}x")


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table and return the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--events", type=int, default=32768, help="events held in memory (synthetic or from --store)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per model; the median is reported")
    ap.add_argument("--steps", type=int, default=2, help="training steps per timed repeat")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    ap.add_argument("--matmul", type=int, default=4096, help="side of the square matmul giving peak FLOP/s")
    ap.add_argument("--parity-steps", type=int, default=600)
    ap.add_argument("--parity-variant", default="default", choices=sorted(PARITY_VARIANTS),
                    help="GraphNet trained in the bf16 parity run: default (mean, residual) or paper")
    ap.add_argument("--parity-lr", type=float, default=3e-4, help="Adam learning rate of the parity run (decayed to 0)")
    ap.add_argument("--store", help="read events from this event store instead of synthesising them")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a few seconds")
    ap.add_argument("--trainer", action="store_true", help="also time the real trainer (hepfm pretrain)")
    ap.add_argument("--trainer-only", action="store_true", help="time the real trainer only")
    ap.add_argument("--trainer-store", help="event store for --trainer (default: a synthetic one, written to a "
                    "temporary folder)")
    ap.add_argument("--trainer-events", type=int, default=20000, help="events per process of the synthetic store")
    ap.add_argument("--trainer-epochs", type=int, default=3)
    ap.add_argument("--trainer-batch", type=int, help="trainer batch size (default --batch)")
    ap.add_argument("--compile", action="store_true", help="--trainer: torch.compile the model")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="--trainer: bf16 autocast (default: on for CUDA, off on the CPU)")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.events, args.repeats, args.steps, args.warmup = 128, 512, 1, 1, 1
        args.matmul, args.parity_steps = 256, 4
        args.trainer_events, args.trainer_epochs = min(args.trainer_events, 600), min(args.trainer_epochs, 2)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here; GPU throughput (goal: >= 500k training events/s on one "
                 "H100) not measured")
    torch.set_num_threads(args.threads)
    trainer = None
    if args.trainer or args.trainer_only:
        with tempfile.TemporaryDirectory(prefix="hepfm-throughput-") as work:
            work = Path(work)
            store = Path(args.trainer_store) if args.trainer_store else synthetic_store(work / "store",
                                                                                         args.trainer_events)
            source = f"store {args.trainer_store}" if args.trainer_store else (
                f"synthetic store, 2 x {args.trainer_events} events")
            trainer = dict(source=source, rows=trainer_throughput(store, device, args.trainer_batch or args.batch,
                                                                  args.trainer_epochs, args.compile, args.bf16, work))
        if args.trainer_only:
            print_trainer(trainer["rows"], str(device), trainer["source"])
            result = dict(device=str(device), device_name=_device_name(device), trainer=trainer, quick=args.quick)
            if args.json:
                Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
            return result

    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(2024)
    objects, counts, source = load_events(args, rng)
    labels = torch.from_numpy(rng.integers(0, 12, len(counts)))
    scaling = fit_scaling(objects, counts)
    x_cpu, n_cpu = torch.from_numpy(objects), torch.from_numpy(counts)
    data = EventData(x_cpu, n_cpu, labels).to(device)
    graphs = event_graphs(x_cpu, n_cpu, labels)  # the PyG dataset: built once, like process(), not timed

    eq = equivalence(data, 256, device, scaling)
    runners = build_runners(data, graphs, 12, device, scaling)
    n_params = {r.name: count_parameters(r.model) for r in runners}
    if len(set(n_params.values())) != 1:
        raise AssertionError(f"parameter counts differ: {n_params}")

    gen = torch.Generator().manual_seed(11)
    order = torch.randperm(len(data), generator=gen).to(device)
    if len(order) < args.batch:
        sys.exit(f"need at least --batch ({args.batch}) events, have {len(order)}")

    def batches(r: int) -> list[torch.Tensor]:
        starts = ((r * args.steps + k) * args.batch % (len(order) - args.batch + 1) for k in range(args.steps))
        return [order[s:s + args.batch] for s in starts]

    warm = [order[:args.batch]] * args.warmup
    for runner in runners:
        for index in warm:
            runner.step(index)
    for r in range(args.repeats):
        for runner in runners:  # interleaved, so that background load hits all models alike
            runner.timed(batches(r))
    rates = {r.name: statistics.median(r.rates) for r in runners}

    timed = torch.cat([torch.cat(batches(r)) for r in range(args.repeats)]).cpu()
    n_nodes = int(n_cpu[timed].sum())
    n_edges = int((n_cpu[timed] * (n_cpu[timed] - 1)).sum())
    n_ev = len(timed)
    m = data.x.shape[1]
    flops = {"graphnet": forward_flops(n_ev, n_nodes, n_edges, 12, split=True) / n_ev,
             "unsplit": forward_flops(n_ev, n_nodes, n_edges, 12, split=False) / n_ev,
             "dense": forward_flops(n_ev, n_ev * m, n_ev * m * m, 12, split=False) / n_ev}
    model_flops = {"graphnet": flops["graphnet"], "graphnet-bf16": flops["graphnet"], "pyg-list": flops["unsplit"],
                   "pyg-vec": flops["unsplit"], "dense": flops["dense"]}
    peak = {"fp32": matmul_rate(args.matmul, torch.float32, device), "bf16": matmul_rate(args.matmul, torch.bfloat16,
                                                                                          device)}
    shaped = {"fp32": matmul_rate(LATENT_DIM, torch.float32, device, rows=n_edges // (args.repeats * args.steps)),
              "bf16": matmul_rate(LATENT_DIM, torch.bfloat16, device, rows=n_edges // (args.repeats * args.steps))}
    parity = bf16_parity(args.parity_steps, 2048 if not args.quick else 128, 1024 if not args.quick else 128,
                         256 if not args.quick else 32, device, args.parity_variant, args.parity_lr)

    rows = []
    for name, rate in rates.items():
        precision = "bf16" if name.endswith("bf16") else "fp32"
        achieved = 3 * model_flops[name] * rate
        rows.append(dict(model=name, precision=precision, events_per_s=rate, vs_pyg_list=rate / rates["pyg-list"],
                         vs_pyg_vec=rate / rates["pyg-vec"], fwd_mflop_per_event=model_flops[name] / 1e6,
                         train_gflop_per_s=achieved / 1e9, fraction_of_matmul_peak=achieved / peak[precision]))
    result = dict(
        device=str(device), threads=args.threads, batch=args.batch, source=source, events=len(data),
        mean_objects=n_nodes / n_ev, mean_edges=n_edges / n_ev, dense_width=m, parameters=n_params["graphnet"],
        repeats=args.repeats, steps_per_repeat=args.steps, models=rows, flops_per_event=flops,
        matmul_peak_flop_per_s=peak, matmul_size=args.matmul, model_shaped_matmul_flop_per_s=shaped,
        equivalence=eq, bf16_parity=parity, quick=args.quick, device_name=_device_name(device), trainer=trainer,
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "unset"),
        load_average_before_after=(load_before, os.getloadavg()[0]))
    print_report(result)
    if trainer is not None:
        print()
        print_trainer(trainer["rows"], str(device), trainer["source"])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def print_report(r: dict) -> None:
    """The human-readable table."""
    print(f"device {r['device']}, {r['threads']} threads, batch {r['batch']}, {r['source']}: {r['events']} events, "
          f"{r['mean_objects']:.2f} objects and {r['mean_edges']:.1f} edges per event on average "
          f"(dense pads to {r['dense_width']}); {r['parameters']:,} parameters in every model")
    print(f"OMP_WAIT_POLICY={r['omp_wait_policy']}; 1-min load average {r['load_average_before_after'][0]:.2f} "
          f"before, {r['load_average_before_after'][1]:.2f} after (this process counts ~{r['threads']})")
    print(f"median of {r['repeats']} repeats x {r['steps_per_repeat']} steps, models interleaved; "
          "training = pipeline + forward + backward + Adam step; FLOPs: Linear layers only, 2 per multiply-add, "
          "training = 3 x forward")
    print()
    print(f"{'model':<14} {'prec':<5} {'events/s':>10} {'/pyg-list':>9} {'/pyg-vec':>9} {'fwd MFLOP/ev':>13} "
          f"{'train GFLOP/s':>14} {'of matmul peak':>15}")
    for m in r["models"]:
        print(f"{m['model']:<14} {m['precision']:<5} {m['events_per_s']:>10,.0f} {m['vs_pyg_list']:>8.2f}x "
              f"{m['vs_pyg_vec']:>8.2f}x {m['fwd_mflop_per_event']:>13.2f} {m['train_gflop_per_s']:>14.1f} "
              f"{m['fraction_of_matmul_peak']:>14.1%}")
    f = r["flops_per_event"]
    print()
    print(f"forward FLOPs per event: GraphNet (split first layers) {f['graphnet'] / 1e6:.2f} M, unsplit "
          f"{f['unsplit'] / 1e6:.2f} M ({1 - f['graphnet'] / f['unsplit']:.0%} fewer), dense padded "
          f"{f['dense'] / 1e6:.2f} M")
    p, s = r["matmul_peak_flop_per_s"], r["model_shaped_matmul_flop_per_s"]
    print(f"matmul peak ({r['matmul_size']}x{r['matmul_size']} square): fp32 {p['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {p['bf16'] / 1e9:.0f} GFLOP/s; model-shaped [E, 64] x [64, 64]: fp32 {s['fp32'] / 1e9:.0f}, "
          f"bf16 {s['bf16'] / 1e9:.0f} GFLOP/s")
    e = r["equivalence"]
    print(f"same weights, same batch: max |output - GraphNet| PyG {e['pyg']:.1e}, dense {e['dense']:.1e} "
          f"(outputs up to {e['output_scale']:.2f})")
    b = r["bf16_parity"]
    err = (b["accuracy_fp32"] * (1 - b["accuracy_fp32"]) / b["n_test"]) ** 0.5
    print(f"bf16 parity (GraphNet {b['variant']}, Adam {b['lr']:.0e} decayed to 0 over {b['steps']} steps x "
          f"{b['batch']} events, {b['n_test']} held out): accuracy fp32 "
          f"{b['accuracy_fp32']:.4f}, bf16 autocast {b['accuracy_bf16']:.4f} (+-{err:.4f} each; same class for "
          f"{b['prediction_agreement']:.1%} of events); fp32 weights run under bf16: "
          f"max |logit diff| {b['max_logit_diff']:.3f} (logits up to {b['max_logit']:.2f})")
    if r["device"] == "cpu":
        print("GPU: not measured in this run (goal: >= 500k training events/s on one H100); use --device cuda")
    if r["quick"]:
        print("(--quick: smoke-run sizes, the figures mean nothing)")


if __name__ == "__main__":
    main()
