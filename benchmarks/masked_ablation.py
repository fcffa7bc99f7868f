"""Does kinematic regression, or do Lorentz augmentations, help the masked-object task and the downstream task?

For each variant of masked pretraining — ``base`` (type only), ``regress`` (type + the hidden object's
kinematics), ``augment`` (type, with phi rotation, eta flip and longitudinal boost) — this pretrains one
backbone per pretraining seed on the same events, reports its masked accuracy on the held-out pretraining
events (per class too), then fine-tunes it on a binary task at ``--train-size`` events per class for
``--seeds`` seeds (disjoint training events per seed, one fixed test set) next to a scratch baseline on the
same events. Errors: binomial for one accuracy, the standard error of the mean over seeds for means, and
the root-sum-square of the two standard errors for differences. Learning rates are fixed (no tuning), the
same for every variant.

    python benchmarks/masked_ablation.py --pretrain STORE --signal STORE/hplus_tb --background STORE/ttbar \
        --out runs/ablation [--max-events 1000] [--model transformer]

Rerunning reuses finished runs. The results go to OUT/ablation.json and are printed as tables.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from hepfm.data.datasets import BinarySplitPlan
from hepfm.models.saving import CONFIG, read_config
from hepfm.train.checkpoint import CHECKPOINT
from hepfm.train.trainer import TrainConfig
from hepfm.train.workflows import finetune, pretrain

VARIANTS = {"base": dict(regress=False, augment=()), "regress": dict(regress=True, augment=()),
            "augment": dict(regress=False, augment=("phi", "eta_flip", "boost"))}


def _done(folder: Path) -> bool:
    return (folder / CONFIG).exists() and not (folder / CHECKPOINT).exists()


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrain", required=True, help="Pretraining store (labels ignored).")
    ap.add_argument("--signal", required=True)
    ap.add_argument("--background", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="transformer")
    ap.add_argument("--max-events", type=int, default=1000, help="Pretraining events per process.")
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--pretrain-seeds", type=int, default=1)
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--test-size", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    out = Path(args.out)
    quiet = dict(progress=False, tensorboard=False)
    results: dict = {"settings": vars(args), "pretraining": {}, "downstream": {}}

    for name in args.variants:
        for ps in range(args.pretrain_seeds):
            folder = out / "pretrained" / f"{name}-seed{ps}"
            if not _done(folder):
                pretrain(args.pretrain, folder, "masked", model=args.model, lr=1e-3, max_events=args.max_events,
                         regress=VARIANTS[name]["regress"], device=args.device,
                         cfg=TrainConfig(epochs=args.pretrain_epochs, batch_size=256, patience=5, seed=ps,
                                         augment=VARIANTS[name]["augment"], **quiet))
            test = read_config(folder)["training"]["test"]
            n_test = read_config(folder)["training"]["n_test"]
            results["pretraining"][f"{name}-seed{ps}"] = {**test, "n_test_events": n_test}

    def downstream(label: str, strategy: str, init_from: Path | None) -> list[dict]:
        rows = []
        for seed in range(args.seeds):
            folder = out / "downstream" / label / f"seed{seed}"
            plan = BinarySplitPlan(train_size=args.train_size, test_size=args.test_size, seed=seed, block=seed)
            if not _done(folder):
                finetune(args.signal, args.background, folder, strategy, init_from=init_from, model=args.model,
                         plan=plan, lr=1e-3, backbone_lr=1e-4, device=args.device,
                         cfg=TrainConfig(epochs=args.epochs, batch_size=256, patience=5, seed=seed, **quiet))
            rows.append(read_config(folder)["training"]["test"])
        return rows

    results["downstream"]["scratch"] = downstream("scratch", "scratch", None)
    for name in args.variants:
        for ps in range(args.pretrain_seeds):
            key = f"{name}-seed{ps}"
            results["downstream"][key] = downstream(key, "finetune", out / "pretrained" / key)

    (out / "ablation.json").write_text(json.dumps(results, indent=1))
    print(f"masked pretraining ({args.model}, {args.max_events} events per process of {args.pretrain}); "
          "held-out masked accuracy ± binomial error")
    for key, t in results["pretraining"].items():
        err = math.sqrt(t["accuracy"] * (1 - t["accuracy"]) / max(t["n_test_events"], 1))
        per_class = ", ".join(f"{k[9:]} {v:.3f}" for k, v in t.items() if k.startswith("accuracy_"))
        extra = f", kinematics MSE {t['kinematics_mse']:.3f}" if "kinematics_mse" in t else ""
        print(f"  {key:16s} accuracy {t['accuracy']:.4f} ± {err:.4f} (chance {t['chance']:.4f}; "
              f"{t['n_test_events']} events){extra}; {per_class}")
    print(f"downstream {Path(args.signal).name} vs {Path(args.background).name}, {args.train_size} per class, "
          f"{args.seeds} seeds (disjoint training events), {args.test_size} test events per class; mean ± s.e.m. over "
          "seeds; differences are paired by seed (same training events)")
    for key, rows in results["downstream"].items():
        acc, auc = _mean_se([r["accuracy"] for r in rows]), _mean_se([r["auc"] for r in rows])
        line = f"  {key:16s} accuracy {acc[0]:.4f} ± {acc[1]:.4f}   AUC {auc[0]:.4f} ± {auc[1]:.4f}"
        refs = ["scratch"] + ([f"base-{key.split('-', 1)[1]}"] if key.startswith(("regress", "augment")) else [])
        for ref in refs:
            if key == ref or ref not in results["downstream"]:
                continue
            pairs = list(zip(rows, results["downstream"][ref], strict=True))
            da = _mean_se([a["accuracy"] - b["accuracy"] for a, b in pairs])
            du = _mean_se([a["auc"] - b["auc"] for a, b in pairs])
            line += f"   vs {ref.split('-')[0]}: accuracy {da[0]:+.4f} ± {da[1]:.4f}, AUC {du[0]:+.4f} ± {du[1]:.4f}"
        print(line)


if __name__ == "__main__":
    main()
