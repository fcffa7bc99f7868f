"""Print the figures of the one GPU session lent so far (NVIDIA H100 80GB HBM3, 2026-11-26) from its files here.

    python results/gpu-h100/summarise.py

Files: env.json, throughput.json, trainer_eager.json, gpu_session.json (`TOTAL_S=240 bash
benchmarks/gpu_session.sh`: the compile parts did not fit the session and were skipped; the 6,000-event
generation ran out of its time, so the trainer read a synthetic store); study-1e5-partial/ (`bash
benchmarks/study_on_gpu.sh configs/study-foundation-1e5.yaml DIR OUT.tar.gz 12 490`: the H+ 1e5 study's first
wave, 12 tuning runs at once, stopped by its 490 s limit; the tuning histories, GPU utilisation sampled every
second, and the script's log).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
N_TRAIN = 200_000  # training events per run in configs/study-foundation-1e5.yaml (100,000 per class)
N_VAL = 50_000


def main() -> None:
    env = json.loads((HERE / "env.json").read_text())
    print(f"device: {env['device']}, torch {env['torch']}, CUDA {env['cuda']}")
    t = json.loads((HERE / "throughput.json").read_text())
    print(f"\nsynthetic events ({t['mean_objects']:.1f} objects, batch {t['batch']}, one process), "
          f"training events/s:")
    for m in t["models"]:
        print(f"  {m['model']:<16} {m['precision']}: {m['events_per_s']:>9,.0f}")
    peak = t["model_shaped_matmul_flop_per_s"]
    print(f"  model-shaped matmul: fp32 {peak['fp32'] / 1e12:.1f}, bf16 {peak['bf16'] / 1e12:.1f} TFLOP/s; "
          f"plain 4096^2: fp32 {t['matmul_peak_flop_per_s']['fp32'] / 1e12:.1f}, "
          f"bf16 {t['matmul_peak_flop_per_s']['bf16'] / 1e12:.1f} TFLOP/s")
    b = t["bf16_parity"]
    print(f"  bf16 parity, {b['steps']} steps from one initialisation: held-out accuracy fp32 {b['accuracy_fp32']:.4f},"
          f" bf16 {b['accuracy_bf16']:.4f} (n = {b['n_test']}), predictions agree on {b['prediction_agreement']:.1%}")
    trainer = json.loads((HERE / "trainer_eager.json").read_text())["trainer"]
    print("\nreal trainer (hepfm pretrain, multiclass, bf16, synthetic store of 100,000 events, 3 epochs):")
    for r in trainer["rows"]:
        print(f"  {r['pipeline']:<20} batch {r['batch']}: {r['train_events_per_s']:>9,.0f} ev/s in training steps, "
              f"{r['wall_events_per_s']:>8,.0f} wall, GPU busy {r['gpu_busy_fraction']:.0%}")

    part = HERE / "study-1e5-partial"
    samples = csv.DictReader(open(part / "gpu_utilisation.csv"))
    util = [int(r[" utilization.gpu [%]"].strip().rstrip(" %")) for r in samples]
    runs = defaultdict(list)
    for r in csv.DictReader(open(part / "tuning_histories.csv")):
        runs[(r["strategy"], r["point"])].append(r)
    wall = max(float(h[-1]["wall_time_s"]) for h in runs.values())
    epochs = sum(len(h) for h in runs.values())
    print(f"\nH+ at 1e5 per class, fp32, batch 1024, {len(runs)} tuning runs in 12 processes on the one GPU:")
    print(f"  GPU utilisation >= 95% in {sum(u >= 95 for u in util)} of {len(util)} one-second samples")
    print(f"  {epochs} epochs of {N_TRAIN:,} training events checkpointed in {wall:.0f} s: "
          f"{epochs * N_TRAIN / wall:,.0f} training events/s together "
          f"({epochs * (N_TRAIN + N_VAL) / wall:,.0f} with validation)")
    print("  per run (validation of the tuning seed; NOT test results, tuning unfinished):")
    for (strategy, point), h in sorted(runs.items()):
        best = min(h, key=lambda r: float(r["val_loss"]))
        done = len(h) - int(best["epoch"]) >= 10  # patience 10: this run had stopped
        print(f"    {strategy:<20} {point:<18} epochs {len(h):>2}, best {best['epoch']:>2}: val loss "
              f"{float(best['val_loss']):.4f}, accuracy {float(best['val_accuracy']):.4f}"
              f"{'  (stopped)' if done else ''}")


if __name__ == "__main__":
    main()
