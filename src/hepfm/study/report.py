"""A study's results: Table I (gain from pretraining), compute efficiency, CKA, plots and report.md.

Table I follows arXiv:2412.10665: for each task and training size, the baseline (scratch) mean ± std
over seeds, and for each pretrained strategy the gain (its mean minus the baseline mean) ± the root
sum of squares of the two ensemble standard deviations. The same table is made for ROC AUC.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from hepfm.eval import cka
from hepfm.study.config import BASELINE, STRATEGIES, StudyConfig
from hepfm.study.efficiency import break_even_tasks, read_history, relative_time_to_99, time_to_reach
from hepfm.study.efficiency import final_accuracy as baseline_final_accuracy
from hepfm.study.run import RESULT, cell_dir


def collect(cfg: StudyConfig, out: Path) -> list[dict]:
    """Results of every finished cell."""
    rows = []
    for t in cfg.tasks:
        for size in cfg.sizes:
            for s in cfg.strategies:
                for seed in range(cfg.seeds):
                    path = cell_dir(out, t.name, size, s, seed) / RESULT
                    if path.exists():
                        rows.append(json.loads(path.read_text()))
    return rows


def _stats(rows, task, size, strategy, metric):
    v = np.array([r[metric] for r in rows if (r["task"], r["size"], r["strategy"]) == (task, size, strategy)])
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)) if len(v) else None


def table_one(cfg: StudyConfig, rows: list[dict], metric: str) -> list[dict]:
    """Rows of Table I for ``metric`` ('accuracy' or 'auc'): baseline mean ± std, gains ± RSS error."""
    table = []
    for t in cfg.tasks:
        for size in cfg.sizes:
            base = _stats(rows, t.name, size, BASELINE, metric)
            if base is None:
                continue
            row = {"task": t.name, "size": size, "baseline": base[0], "baseline_std": base[1], "n_seeds": base[2]}
            for s in cfg.strategies:
                if s == BASELINE:
                    continue
                st = _stats(rows, t.name, size, s, metric)
                if st is not None:
                    row[f"gain_{s}"] = st[0] - base[0]
                    row[f"gain_{s}_err"] = math.hypot(st[1], base[1])
            table.append(row)
    return table


def table_markdown(cfg: StudyConfig, table: list[dict], metric: str) -> str:
    """Table I as markdown, gains in points (x100) like the paper."""
    others = [s for s in cfg.strategies if s != BASELINE]
    head = ["task", "size/class", f"baseline {metric} (%)"] + [f"gain {s} (pts)" for s in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        cells = [r["task"], f"{r['size']:,}", f"{100 * r['baseline']:.2f} ± {100 * r['baseline_std']:.2f}"]
        for s in others:
            g = r.get(f"gain_{s}")
            cells.append("–" if g is None else f"{100 * g:+.2f} ± {100 * r[f'gain_{s}_err']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_csv(path: Path, table: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in table for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(table)


def efficiency(cfg: StudyConfig, out: Path, pretrain_time_s: dict[str, float]) -> list[dict]:
    """Fig. 1: time for each pretrained strategy to reach 99% of the baseline's final validation accuracy,
    as a fraction of the baseline's training time (per task and size, mean over seeds), and break-even."""
    rows = []
    for t in cfg.tasks:
        for size in cfg.sizes:
            for s in cfg.strategies:
                if s == BASELINE:
                    continue
                fractions, base_times, ft_times = [], [], []
                for seed in range(cfg.seeds):
                    base_dir = cell_dir(out, t.name, size, BASELINE, seed)
                    ft_dir = cell_dir(out, t.name, size, s, seed)
                    if not ((base_dir / RESULT).exists() and (ft_dir / RESULT).exists()):
                        continue
                    base, ft = read_history(base_dir / "history.csv"), read_history(ft_dir / "history.csv")
                    frac = relative_time_to_99(ft, base)
                    fractions.append(math.nan if frac is None else frac)
                    base_times.append(float(base[-1]["wall_time_s"]))
                    reach = time_to_reach(ft, 0.99 * baseline_final_accuracy(base))
                    ft_times.append(float(ft[-1]["wall_time_s"]) if reach is None else reach)
                if not fractions:
                    continue
                reached = [f for f in fractions if not math.isnan(f)]
                pre = pretrain_time_s.get(STRATEGIES[s][0], math.nan)
                rows.append({"task": t.name, "size": size, "strategy": s,
                             "time_fraction": float(np.mean(reached)) if reached else math.nan,
                             "time_fraction_std": float(np.std(reached)) if reached else math.nan,
                             "reached": f"{len(reached)}/{len(fractions)}",
                             "baseline_time_s": float(np.mean(base_times)),
                             "break_even_tasks": break_even_tasks(pre, base_times, ft_times)
                             if not math.isnan(pre) else math.nan})
    return rows


def cross_model(cfg: StudyConfig, out: Path, task: str, size: int) -> dict | None:
    """Ensemble-averaged CKA between the latents of the strategies' models (Table III), both kernels."""
    latents = {}
    for s in cfg.strategies:
        files = [cell_dir(out, task, size, s, seed) / "latent.npy" for seed in range(cfg.seeds)]
        members = [np.load(f) for f in files if f.exists()]
        if members:
            latents[s] = members
    if not latents or (len(latents) < 2 and all(len(v) < 2 for v in latents.values())):
        return None
    result = {}
    for kernel in ("linear", "rbf"):
        mean, std, names = cka.cross_model_cka(latents, kernel=kernel)
        result[kernel] = {"mean": mean.tolist(), "std": std.tolist(), "names": names}
    return result


def _fmt(v, pct=False) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "–" if v is None or math.isnan(v) else "∞"
    return f"{100 * v:.0f}%" if pct else (f"{v:.0f}" if isinstance(v, (int, float)) else str(v))


def write_report(cfg: StudyConfig, out: str | Path, timing: dict | None = None) -> Path:
    """Write Table I (md + csv, accuracy and AUC), efficiency, CKA, plots and report.md into ``out``."""
    from hepfm.eval import plots

    out = Path(out)
    timing = timing or (json.loads((out / "timing.json").read_text()) if (out / "timing.json").exists() else {})
    rows = collect(cfg, out)
    _write_csv(out / "cells.csv", rows)
    md = [f"# hepfm study report\n\nConfiguration: `{cfg.source}`; {len(rows)} finished cells "
          f"({len(cfg.tasks)} tasks x {len(cfg.sizes)} sizes x {len(cfg.strategies)} strategies x {cfg.seeds} seeds). "
          f"Each task is evaluated on one fixed test set of {cfg.test_size} events per class.\n"]
    for metric, title in (("accuracy", "accuracy (threshold 0.5)"), ("auc", "ROC AUC")):
        table = table_one(cfg, rows, metric)
        _write_csv(out / f"table1_{metric}.csv", table)
        text = table_markdown(cfg, table, metric)
        (out / f"table1_{metric}.md").write_text(text + "\n")
        md += [f"## Table I — {title}\n", "Gains are the pretrained strategy's mean minus the baseline mean, "
               "in points; errors are the root sum of squares of the ensemble standard deviations.\n", text, ""]
    figures = []
    for t in cfg.tasks:
        for metric in ("accuracy", "auc"):
            series = {}
            for s in cfg.strategies:
                pts = [(size, *st[:2]) for size in cfg.sizes
                       if (st := _stats(rows, t.name, size, s, metric)) is not None]
                if pts:
                    series[s] = pts
            if series:
                figures.append(plots.metric_vs_size(series, out / "plots" / f"{metric}_vs_size_{t.name}.png",
                                                    metric, t.name))
        curves = _roc_curves(cfg, out, t.name, min(cfg.sizes))
        if curves:
            figures.append(plots.roc_plot(curves, out / "plots" / f"roc_{t.name}.png",
                                          f"{t.name}, {min(cfg.sizes):,} events/class, seed 0"))
    eff = efficiency(cfg, out, timing.get("pretrain_time_s", {}))
    if eff:
        _write_csv(out / "efficiency.csv", eff)
        md += ["## Compute efficiency (Fig. 1)\n", "Wall time for the pretrained strategy to reach 99% of the "
               "baseline's final validation accuracy, as a fraction of the baseline's training time (mean over the "
               "seeds that reach it); break-even = number of tasks after which pretraining pays for itself.\n",
               "| task | size/class | strategy | time fraction | reached | baseline time (s) | break-even tasks |",
               "|---|---|---|---|---|---|---|"]
        md += [f"| {r['task']} | {r['size']:,} | {r['strategy']} | {_fmt(r['time_fraction'], True)} | {r['reached']} | "
               f"{r['baseline_time_s']:.0f} | {_fmt(r['break_even_tasks'])} |" for r in eff]
        md.append("")
    md += ["## CKA sanity check (Table II)\n", cka.format_markdown(cka.sanity_table()), ""]
    size = cfg.cka_size or min(cfg.sizes)
    for t in cfg.tasks:
        res = cross_model(cfg, out, t.name, size)
        if res is None:
            continue
        (out / f"cka_{t.name}.json").write_text(json.dumps(res, indent=1))
        for kernel, r in res.items():
            path = plots.cka_heatmap(np.array(r["mean"]), np.array(r["std"]), r["names"],
                                     out / "plots" / f"cka_{kernel}_{t.name}.png",
                                     f"{kernel} CKA, {t.name}, {size:,} events/class")
            figures.append(path)
    md += ["## Figures\n"] + [f"![{p.stem}]({p.relative_to(out)})" for p in figures]
    failures = json.loads((out / "failures.json").read_text()) if (out / "failures.json").exists() else []
    if failures:
        md += ["\n## Failed cells\n"] + [f"- {f['cell']}: {f['error']}" for f in failures]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


def _roc_curves(cfg: StudyConfig, out: Path, task: str, size: int) -> dict:
    from hepfm.eval.metrics import roc_auc, roc_curve

    curves = {}
    for s in cfg.strategies:
        folder = cell_dir(out, task, size, s, 0)
        if not (folder / "scores.npy").exists():
            continue
        y, scores = np.load(folder / "scores.npy")
        fpr, tpr, _ = roc_curve(y, scores)
        curves[s] = (fpr, tpr, roc_auc(y, scores))
    return curves
