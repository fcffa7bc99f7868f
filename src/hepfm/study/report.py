"""A study's results: Table I (gain from pretraining) with its errors, the chosen learning rates, collapse and
epoch-cap checks, compute efficiency, CKA (linear and RBF), the multilabel backbone's quality, plots and report.md.

Table I follows arXiv:2412.10665: for each task and training size, the baseline (scratch) mean over seeds and,
for each pretrained strategy, the gain (its mean minus the baseline mean). Errors: see hepfm.study.stats (seed
spread and test-sample error, combined in quadrature). The same table is made for ROC AUC.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from hepfm.eval import cka
from hepfm.study.config import BASELINE, STRATEGIES, StudyConfig
from hepfm.study.efficiency import baseline_events_for, break_even_tasks, fair_efficiency, read_history
from hepfm.study.layout import StudyLayout
from hepfm.study.stats import gain_test_error, single_test_error


def collect(cfg: StudyConfig, out: Path) -> list[dict]:
    """Results of every finished cell."""
    rows = []
    for t in cfg.tasks:
        for size in cfg.sizes:
            for s in cfg.strategies:
                for seed in range(cfg.seeds):
                    path = StudyLayout(out).cell(t.name, size, s, seed) / StudyLayout.RESULT
                    if path.exists():
                        rows.append(json.loads(path.read_text()))
    return rows


def _select(rows, task, size, strategy, healthy: bool = True):
    """A group's cells by seed; ``healthy``: without the collapsed ones (they are counted, not averaged)."""
    return sorted((r for r in rows if (r["task"], r["size"], r["strategy"]) == (task, size, strategy)
                   and not (healthy and r.get("collapsed"))), key=lambda r: r["seed"])


def _n_collapsed(rows, task, size, strategy) -> int:
    return sum(bool(r.get("collapsed")) for r in _select(rows, task, size, strategy, healthy=False))


def _stats(rows, task, size, strategy, metric):
    v = np.array([r[metric] for r in _select(rows, task, size, strategy)])
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)) if len(v) else None


def _scores(out: Path | None, rows) -> tuple[np.ndarray | None, list[np.ndarray]]:
    if out is None:
        return None, []
    layout = StudyLayout(out)
    loaded = [np.load(layout.cell(r["task"], r["size"], r["strategy"], r["seed"]) / layout.SCORES) for r in rows]
    return (loaded[0][0], [x[1] for x in loaded]) if loaded else (None, [])


def table_one(cfg: StudyConfig, rows: list[dict], metric: str, out: Path | None = None) -> list[dict]:
    """Rows of Table I for ``metric`` ('accuracy' or 'auc'): baseline mean ± seed std and test error; each gain
    with its seed error (RSS of the standard deviations), test error (paired bootstrap; needs the cells' scores
    under ``out``) and their quadrature sum ``gain_<s>_err`` (the seed error alone when there are no scores).
    Collapsed models are left out of every mean and counted (``baseline_collapsed``, ``<s>_collapsed``)."""
    table = []
    for t in cfg.tasks:
        for size in cfg.sizes:
            base = _stats(rows, t.name, size, BASELINE, metric)
            if base is None:
                if _n_collapsed(rows, t.name, size, BASELINE):
                    table.append({"task": t.name, "size": size, "baseline": math.nan, "baseline_std": math.nan,
                                  "n_seeds": 0, "baseline_test_err": math.nan,
                                  "baseline_collapsed": _n_collapsed(rows, t.name, size, BASELINE)})
                continue
            base_rows = _select(rows, t.name, size, BASELINE)
            y, base_scores = _scores(out, base_rows)
            row = {"task": t.name, "size": size, "baseline": base[0], "baseline_std": base[1], "n_seeds": base[2],
                   "baseline_test_err": single_test_error(base[0], y, metric) if y is not None else math.nan,
                   "baseline_collapsed": _n_collapsed(rows, t.name, size, BASELINE)}
            for s in cfg.strategies:
                if s == BASELINE:
                    continue
                st = _stats(rows, t.name, size, s, metric)
                if st is None:
                    continue
                other_rows = _select(rows, t.name, size, s)
                seeds_err = math.hypot(st[1], base[1])
                test_err = gain_test_error(y, base_scores, _scores(out, other_rows)[1], metric) \
                    if y is not None else math.nan
                row[f"gain_{s}"] = st[0] - base[0]
                row[f"gain_{s}_err_seeds"] = seeds_err
                row[f"gain_{s}_err_test"] = test_err
                row[f"gain_{s}_err"] = math.hypot(*(e for e in (seeds_err, test_err) if not math.isnan(e))) \
                    if not (math.isnan(seeds_err) and math.isnan(test_err)) else math.nan
                row[f"{s}_n_seeds"] = st[2]
                row[f"{s}_collapsed"] = _n_collapsed(rows, t.name, size, s)
            table.append(row)
    return table


def table_markdown(cfg: StudyConfig, table: list[dict], metric: str) -> str:
    """Table I as markdown, in points (x100) like the paper: baseline mean ± seed std (test error); gains
    ± combined error (seed part, test part). Cells with collapsed models are marked."""
    others = [s for s in cfg.strategies if s != BASELINE]
    head = ["task", "size/class", f"baseline {metric} (%)"] + [f"gain {s} (pts)" for s in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def flag(n):
        return f" ⚠ {n} collapsed seed(s) excluded" if n else ""

    for r in table:
        test = r.get("baseline_test_err", math.nan)
        if r["n_seeds"] == 0:
            lines.append(f"| {r['task']} | {r['size']:,} | every seed collapsed |" + " – |" * len(others))
            continue
        spread = "(1 seed)" if math.isnan(r["baseline_std"]) else f"± {100 * r['baseline_std']:.2f}"
        cells = [r["task"], f"{r['size']:,}", f"{100 * r['baseline']:.2f} {spread}"
                 + ("" if math.isnan(test) else f" (test ± {100 * test:.2f})") + flag(r.get("baseline_collapsed"))]
        for s in others:
            g = r.get(f"gain_{s}")
            if g is None:
                cells.append("–")
                continue
            seeds_err = r[f"gain_{s}_err_seeds"]
            parts = "seeds n/a: 1 seed" if math.isnan(seeds_err) else f"seeds {100 * seeds_err:.2f}"
            if not math.isnan(r[f"gain_{s}_err_test"]):
                parts += f", test {100 * r[f'gain_{s}_err_test']:.2f}"
            err = "" if math.isnan(r[f"gain_{s}_err"]) else f" ± {100 * r[f'gain_{s}_err']:.2f}"
            cells.append(f"{100 * g:+.2f}{err} ({parts}){flag(r.get(f'{s}_collapsed'))}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_csv(path: Path, table: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in table for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(table)


def _history(out: Path, result: dict) -> dict:
    return {"history": read_history(out / result["run"] / "history.csv"), **result}


def efficiency(cfg: StudyConfig, out: Path, pretrain_time_s: dict[str, float], rows: list[dict]) -> list[dict]:
    """Fig. 1, fairly (hepfm.study.efficiency.fair_efficiency), per task, size and pretrained strategy over the
    seeds: optimizer steps, events and wall time to reach 99% of the baseline's final validation accuracy, as
    fractions of the baseline's cost to first reach it. Means are given only when every seed reached the
    target; a target at chance level is flagged meaningless. Break-even (wall time): pretraining time / the
    mean time saved per task, when every seed reached the target."""
    table = []
    for t in cfg.tasks:
        for size in cfg.sizes:
            # Results written before the fair measure (no "run" folder recorded) are left out.
            base_rows = {r["seed"]: r for r in _select(rows, t.name, size, BASELINE) if "run" in r}
            for s in cfg.strategies:
                if s == BASELINE:
                    continue
                pairs = [fair_efficiency(_history(out, base_rows[r["seed"]]), _history(out, r))
                         for r in _select(rows, t.name, size, s, healthy=False) if r["seed"] in base_rows
                         and "run" in r and not r.get("collapsed")]
                excluded = len(_select(rows, t.name, size, s, healthy=False)) - len(pairs)
                if not pairs:
                    continue
                reached = [p for p in pairs if p["reached"]]
                every = len(reached) == len(pairs)

                def mean(key, ok=every, ps=pairs):
                    return float(np.mean([p[key] for p in ps])) if ok else math.nan

                def std(key, ok=every, ps=pairs):
                    return float(np.std([p[key] for p in ps])) if ok and len(ps) > 1 else math.nan

                pre = pretrain_time_s.get(STRATEGIES[s][0], math.nan)
                table.append({"task": t.name, "size": size, "strategy": s, "reached": f"{len(reached)}/{len(pairs)}",
                              "excluded_collapsed": excluded, "meaningless": any(p["meaningless"] for p in pairs),
                              "baseline_final_val_accuracy": mean("baseline_final_accuracy", True),
                              "step_fraction": mean("step_fraction"), "step_fraction_std": std("step_fraction"),
                              "event_fraction": mean("event_fraction"), "time_fraction": mean("time_fraction"),
                              "baseline_steps": mean("baseline_steps", True), "steps": mean("steps"),
                              "baseline_time_s": mean("baseline_time_s", True),
                              "break_even_tasks": break_even_tasks(pre, [p["baseline_time_s"] for p in pairs],
                                                                   [p["time_s"] for p in pairs])
                              if every and not math.isnan(pre) else math.nan})
    return table


def data_efficiency(cfg: StudyConfig, rows: list[dict]) -> list[dict]:
    """For each strategy and size: the events per class the baseline needs for the strategy's accuracy, and that
    number over the strategy's own (the "x fewer events" of arXiv:2401.13536), with the range that the strategy's error
    (seed standard error and binomial test error in quadrature) spans. The baseline curve's own error is not
    propagated; a ratio beyond the largest size studied is a lower bound (">")."""
    table = []
    for t in cfg.tasks:
        curve = [(size, st[0]) for size in cfg.sizes if (st := _stats(rows, t.name, size, BASELINE, "accuracy"))]
        if len(curve) < 2:
            continue
        sizes, means = [c[0] for c in curve], [c[1] for c in curve]
        for s in cfg.strategies:
            if s == BASELINE:
                continue
            for size in cfg.sizes:
                st = _stats(rows, t.name, size, s, "accuracy")
                if st is None:
                    continue
                mean, std, n = st
                n_test = _select(rows, t.name, size, s)[0]["n_test"]
                err = math.hypot(0.0 if math.isnan(std) else std / math.sqrt(n),
                                 math.sqrt(mean * (1 - mean) / n_test))
                need = {k: baseline_events_for(sizes, means, v) for k, v in
                        (("central", mean), ("low", mean - err), ("high", mean + err))}
                table.append({"task": t.name, "size": size, "strategy": s, "accuracy": mean, "accuracy_err": err,
                              "baseline_events": need["central"][1], "bound": need["central"][0],
                              "ratio": need["central"][1] / size, "ratio_low": need["low"][1] / size,
                              "ratio_high": need["high"][1] / size, "bound_high": need["high"][0]})
    return table


_BOUND = {"=": "", "<=": "≤ ", ">": "> "}  # how baseline_events_for's kind of answer is printed


def _ratio_text(r: dict) -> str:
    sign = _BOUND[r["bound"]]
    high = ("> " if r["bound_high"] == ">" else "") + f"{r['ratio_high']:.2g}"
    return f"{sign}{r['ratio']:.2g} ({r['ratio_low']:.2g} to {high})"


def cross_model(cfg: StudyConfig, out: Path, task: str, size: int) -> dict | None:
    """Ensemble-averaged CKA between the latents of the strategies' (healthy) models (Table III), both kernels."""
    latents = {}
    layout = StudyLayout(out)
    for s in cfg.strategies:
        folders = [layout.cell(task, size, s, seed) for seed in range(cfg.seeds)]
        members = [np.load(f / layout.LATENT) for f in folders
                   if (f / layout.LATENT).exists() and (f / layout.RESULT).exists()
                   and not json.loads((f / layout.RESULT).read_text()).get("collapsed")]  # collapsed models left out
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


CELL_COLUMNS = ("task", "size", "strategy", "seed", "accuracy", "accuracy_err", "auc", "auc_err", "lr", "backbone_lr",
                "tuned", "chosen", "collapsed", "retries", "epochs_run", "best_epoch", "epoch_cap_hit",
                "disjoint_events", "train_time_s", "run")


def cells_table(rows: list[dict]) -> list[dict]:
    """One row per cell: task, size, strategy, seed, accuracy and AUC with test errors, the rates used, flags."""
    out = []
    for r in rows:
        row = {k: r.get(k) for k in CELL_COLUMNS}
        row["retries"] = ";".join(f"{x['point']}{'(collapsed)' if x.get('collapsed_on_validation') else ''}"
                                  for x in r.get("retries", []))
        row["chosen"] = r.get("chosen")
        out.append(row)
    return out


def tuning_table(cfg: StudyConfig, out: Path) -> list[dict]:
    """Every tuning point: its rates, validation loss/accuracy/AUC, epochs, cap, collapse, and the choice."""
    layout = StudyLayout(out)
    table = []
    for t in cfg.tasks:
        for size in cfg.sizes:
            for s in cfg.strategies:
                path = layout.tuning(t.name, size, s) / layout.TUNING
                if not path.exists():
                    continue
                tuning = json.loads(path.read_text())
                for p in tuning["grid"]:
                    table.append({"task": t.name, "size": size, "strategy": s, "point": p["point"], "lr": p["lr"],
                                  "backbone_lr": p["backbone_lr"], "val_loss": p["val_loss"],
                                  "val_accuracy": p.get("val_accuracy"), "val_auc": p.get("val_auc"),
                                  "epochs_run": p.get("epochs_run"), "epoch_cap_hit": p.get("epoch_cap_hit"),
                                  "collapsed": p["collapsed"], "error": p.get("error", ""),
                                  "chosen": p["point"] == tuning["chosen"]})
    return table


def _num(v, fmt=".4f") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _tuning_markdown(table: list[dict]) -> list[str]:
    lines = ["| task | size/class | strategy | lr | backbone lr | val loss | val accuracy | epochs | cap | collapsed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        mark = "**" if r["chosen"] else ""
        lines.append(f"| {r['task']} | {r['size']:,} | {r['strategy']} | {mark}{r['lr']:g}{mark} | "
                     f"{'–' if r['backbone_lr'] is None else format(r['backbone_lr'], 'g')} | {_num(r['val_loss'])} | "
                     f"{_num(r['val_accuracy'])} | {r['epochs_run'] or '–'} | "
                     f"{'yes' if r['epoch_cap_hit'] else 'no'} | "
                     f"{'**yes**' if r['collapsed'] else 'no'} |")
    return lines


def _cka_markdown(res: dict) -> list[str]:
    names = res["linear"]["names"]
    lines = ["| model A | model B | linear CKA | RBF CKA |", "|---|---|---|---|"]
    for i, a in enumerate(names):
        for j in range(i, len(names)):
            cells = []
            for kernel in ("linear", "rbf"):
                m, sd = res[kernel]["mean"][i][j], res[kernel]["std"][i][j]
                cells.append("n/a" if m is None or (isinstance(m, float) and math.isnan(m)) else f"{m:.2f} ± {sd:.2f}")
            lines.append(f"| {a} | {names[j]} | {cells[0]} | {cells[1]} |")
    return lines


def _quality_markdown(quality: dict) -> list[str]:
    lines = [f"Held-out label accuracy over the {len(quality['labels'])} binary truth flags "
             f"({quality['n_test']} events): model **{quality['label_accuracy']:.4f}**, predicting every flag absent "
             f"{quality['all_absent_accuracy']:.4f}, predicting each flag's training-set majority "
             f"{quality['prior_accuracy']:.4f}.\n", "| label | test rate | accuracy | AUC |", "|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['test_rate']:.3f} | {r['accuracy']:.3f} | {_num(r['auc'], '.3f')} |"
              for r in quality["labels"]]
    return lines


def write_report(cfg: StudyConfig, out: str | Path, timing: dict | None = None) -> Path:
    """Write Table I (md + csv, accuracy and AUC), cells.csv, tuning.csv, efficiency, CKA, plots and report.md."""
    from hepfm.eval import plots
    out = Path(out)
    layout = StudyLayout(out)
    if timing is None:  # a whole run's timing.json, else that of any part run on its own (same pretraining)
        found = layout.all_timings()
        timing = json.loads(found[0].read_text()) if found else {}
    rows = collect(cfg, out)
    _write_csv(out / layout.CELLS_CSV, cells_table(rows))
    md = [f"# hepfm study report\n\nConfiguration: `{cfg.source}`; {len(rows)} finished cells "
          f"({len(cfg.tasks)} tasks x {len(cfg.sizes)} sizes x {len(cfg.strategies)} strategies x {cfg.seeds} seeds). "
          f"Each task is evaluated on one fixed test set of {cfg.test_size} events per class.\n"]
    shared = sorted({(r["task"], r["size"]) for r in rows if not r.get("disjoint_events", False)})
    md.append("Seeds train and validate on disjoint events" + (
        "." if not shared else " except at " + ", ".join(f"{t} {s:,}" for t, s in shared)
        + " (the pool is too small: seeds draw random, overlapping subsets).") + "\n")
    for metric, title in (("accuracy", "accuracy (threshold 0.5)"), ("auc", "ROC AUC")):
        table = table_one(cfg, rows, metric, out)
        _write_csv(layout.table1(metric, ".csv"), table)
        text = table_markdown(cfg, table, metric)
        layout.table1(metric, ".md").write_text(text + "\n")
        md += [f"## Table I — {title}\n", "Baseline: mean ± standard deviation over seeds (test: the test-sample "
               "error of one model, binomial or Hanley-McNeil). Gains: the strategy's mean minus the baseline's, in "
               "points, ± the quadrature sum of the seed error (root sum of squares of the two standard deviations) "
               "and the test-sample error (paired bootstrap over the shared test events).\n", text, ""]
    tuning = tuning_table(cfg, out)
    if tuning:
        _write_csv(out / layout.TUNING_CSV, tuning)
        md += ["## Learning rates (tuned on validation data, seed 0)\n",
               "Each strategy chose its rate(s) by validation loss; the chosen point is in bold. Points whose "
               "validation scores collapsed onto the object multiplicity rank last.\n", *_tuning_markdown(tuning), ""]
    cap = [r for r in rows if r.get("epoch_cap_hit")]
    cap_t = [r for r in tuning if r["epoch_cap_hit"]]
    md += ["## Training checks\n",
           f"- Epoch cap: early stopping ended training in {len(rows) - len(cap)} of {len(rows)} cells and "
           f"{len(tuning) - len(cap_t)} of {len(tuning)} tuning runs; the cap was hit in {len(cap)} cells"
           + (": " + ", ".join(f"{r['task']} {r['size']} {r['strategy']} seed {r['seed']}" for r in cap) if cap else "")
           + f" and {len(cap_t)} tuning runs"
           + (": " + ", ".join(f"{r['task']} {r['size']} {r['strategy']} {r['point']}" for r in cap_t) if cap_t else "")
           + "."]
    collapsed = [r for r in rows if r.get("collapsed")]
    retried = [r for r in rows if r.get("retries")]
    md.append(f"- Collapse (test scores a function of the object multiplicity alone): {len(collapsed)} of {len(rows)} "
              f"final models collapsed" + (": " + ", ".join(f"{r['task']} {r['size']} {r['strategy']} seed {r['seed']}"
                                                          for r in collapsed) if collapsed else "")
              + f"; {len(retried)} cells retried at their next-best rates.\n")
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
                figures.append(plots.metric_vs_size(series, layout.plot(f"{metric}_vs_size_{t.name}.png"),
                                                    metric, t.name))
        curves = _roc_curves(cfg, out, t.name, min(cfg.sizes))
        if curves:
            figures.append(plots.roc_plot(curves, layout.plot(f"roc_{t.name}.png"),
                                          f"{t.name}, {min(cfg.sizes):,} events/class, seed 0"))
    eff = efficiency(cfg, out, timing.get("pretrain_time_s", {}), rows)
    if eff:
        _write_csv(out / layout.EFFICIENCY_CSV, eff)
        md += ["## Compute efficiency (Fig. 1)\n", "Optimizer steps (and events, wall time) for the pretrained "
               "strategy to reach 99% of the baseline's final validation accuracy, as a fraction of the steps the "
               "baseline took to *first* reach that accuracy (its patience epochs are not counted). Seeds are paired "
               "(same validation events) and pairs with a collapsed model are left out; a mean is given only when "
               "every remaining seed reached the target. A baseline at "
               "chance level (within 2 binomial errors of 50%) makes the comparison meaningless. Break-even (wall "
               "time) = tasks after which pretraining pays for itself.\n",
               "| task | size/class | strategy | baseline val acc | steps fraction | events fraction | time fraction | "
               "reached | baseline steps | break-even tasks |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in eff:
            sf = "meaningless (baseline at chance)" if r["meaningless"] else (
                _fmt(r["step_fraction"], True) + ("" if math.isnan(r["step_fraction_std"])
                                                  else f" ± {100 * r['step_fraction_std']:.0f}%"))
            md.append(f"| {r['task']} | {r['size']:,} | {r['strategy']} | {r['baseline_final_val_accuracy']:.3f} | "
                      f"{sf} | {_fmt(r['event_fraction'], True)} | {_fmt(r['time_fraction'], True)} | {r['reached']}"
                      f"{f' ({excl} collapsed pairs left out)' if (excl := r['excluded_collapsed']) else ''} | "
                      f"{r['baseline_steps']:.0f} | {_fmt(r['break_even_tasks'])} |")
        md.append("")
    events = data_efficiency(cfg, rows)
    if events:
        _write_csv(out / layout.DATA_EFFICIENCY_CSV, events)
        md += ["## Data efficiency (events the baseline needs)\n",
               "For each strategy's mean test accuracy, the training events per class at which the baseline "
               "reaches it (its curve over the sizes studied, interpolated in log size), and that number over the "
               "strategy's own: \"x fewer events\" (below 1: the strategy needs more). In brackets, the range its "
               "error spans. Beyond the largest size the figure is a lower bound, at the smallest an upper one.\n",
               "| task | size/class | strategy | accuracy | baseline needs (events/class) | ratio |",
               "|---|---|---|---|---|---|"]
        for r in events:
            need = _BOUND[r["bound"]] + f"{r['baseline_events']:,.0f}"
            md.append(f"| {r['task']} | {r['size']:,} | {r['strategy']} | {r['accuracy']:.4f} ± "
                      f"{r['accuracy_err']:.4f} | {need} | {_ratio_text(r)} |")
        md.append("")
    quality_path = layout.pretrained("multilabel") / layout.QUALITY
    if quality_path.exists():
        md += ["## Multilabel backbone against trivial predictors\n",
               *_quality_markdown(json.loads(quality_path.read_text())), ""]
    md += ["## CKA sanity check (Table II)\n", cka.format_markdown(cka.sanity_table()), ""]
    size = cfg.cka_size or min(cfg.sizes)
    for t in cfg.tasks:
        res = cross_model(cfg, out, t.name, size)
        if res is None:
            continue
        layout.cka(t.name).write_text(json.dumps(res, indent=1))
        md += [f"## CKA between strategies, {t.name} ({size:,} events/class; mean ± std over seed pairs)\n",
               *_cka_markdown(res), ""]
        for kernel, r in res.items():
            path = plots.cka_heatmap(np.array(r["mean"]), np.array(r["std"]), r["names"],
                                     layout.plot(f"cka_{kernel}_{t.name}.png"),
                                     f"{kernel} CKA, {t.name}, {size:,} events/class")
            figures.append(path)
    md += ["## Figures\n"] + [f"![{p.stem}]({p.relative_to(out)})" for p in figures]
    # A cell can be listed by a whole run and by a part run: once per cell.
    failures = list({tuple(f.get("key", ())) or f["cell"]: f for path in layout.all_failures()
                     for f in json.loads(path.read_text())}.values())
    done = {(r["task"], r["size"], r["strategy"], r["seed"]) for r in rows}
    failures = [f for f in failures if tuple(f.get("key", ())) not in done]  # since retried successfully
    if failures:
        md += ["\n## Failed cells\n"] + [f"- {f['cell']}: {f['error']}" for f in failures]
    path = out / layout.REPORT
    path.write_text("\n".join(md) + "\n")
    return path


def _roc_curves(cfg: StudyConfig, out: Path, task: str, size: int) -> dict:
    from hepfm.eval.metrics import roc_auc, roc_curve

    curves = {}
    for s in cfg.strategies:
        folder = StudyLayout(out).cell(task, size, s, 0)
        if not (folder / StudyLayout.SCORES).exists():
            continue
        y, scores = np.load(folder / StudyLayout.SCORES)
        fpr, tpr, _ = roc_curve(y, scores)
        curves[s] = (fpr, tpr, roc_auc(y, scores))
    return curves
