"""The scaling law: downstream gain of pretrained backbones as a function of the number of pretraining events.

One study (:mod:`hepfm.study.run`) per pretraining size N, in ``OUT/pretrain-<N>``, each pretraining its
backbones (e.g. masked and multiclass) on the first ``ceil(N / processes)`` events of every process of the
configuration's ``pretrain.data`` store, and fine-tuning them on the configuration's tasks and sizes. What
does not depend on N is made once and shared:

* the downstream stores (catalog tasks are generated once into ``OUT/stores/downstream``; every study then
  reads them as external tasks, so all sizes use the same training and test events);
* the scratch baseline: its tuning and cells are trained in the first study and linked into the others,
  which therefore skip them (the baseline of every row is the same models).

``OUT/scaling.csv`` and ``scaling.md`` hold, per pretraining size, task, training size and pretrained
strategy, the baseline and the gain with its error (as Table I: seed spread and test-sample error in
quadrature); ``scaling_<metric>_<task>.png`` plots the gains against N.
"""

from __future__ import annotations

import copy
import csv
import io
import math
from pathlib import Path

from rich.console import Console

from hepfm.data.datasets import open_source
from hepfm.errors import HepfmError, disk_error
from hepfm.io.atomic import atomic_write_text
from hepfm.io.locking import exclusive_lock
from hepfm.study.config import BASELINE, STRATEGIES, parse_config, show
from hepfm.study.layout import StudyLayout

SCALING_CSV = "scaling.csv"
SCALING_MD = "scaling.md"


def _external_tasks(raw: dict, cfg, out: Path) -> dict:
    """The configuration's tasks as external (store) tasks, catalog ones pointing at ``out/stores/downstream``."""
    tasks = {}
    for t in cfg.tasks:
        if t.external:
            tasks[t.name] = {"signal": t.signal, "background": t.background}
        else:
            root = StudyLayout(out).store("downstream")
            tasks[t.name] = {"signal": str(root / t.signal), "background": str(root / t.background)}
    return tasks


def per_process_events(data: str | Path, n_events: int) -> int:
    """Events per process of ``data`` that give ``n_events`` pretraining events in all."""
    store, processes = open_source(data)
    return math.ceil(n_events / len(processes or store.process_names))


def run_scaling(raw: dict, out: str | Path, pretrain_events: list[int], source: str = "<dict>",
                pretrain_data: str | Path | None = None, device: str = "auto", bf16: bool | None = None,
                progress: bool = True, console: Console | None = None, reports: bool = True) -> list[dict]:
    """Run (or resume) the scaling study of the study configuration ``raw`` into ``out``; returns its table rows.

    ``pretrain_data`` replaces the configuration's ``pretrain.data``; ``reports``: also write each size's full
    study report (Table I, CKA, plots: ``hepfm study --report-only`` on its folder does the same later).
    """
    console = console or Console()
    out = Path(out)
    if (not pretrain_events or len(pretrain_events) > 100
            or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in pretrain_events)):
        raise HepfmError(f"pretraining sizes must be (at most 100) positive event counts, got "
                         f"{show(pretrain_events)}")
    if not isinstance(raw, dict):
        raise HepfmError(f"{source}: a study configuration must be a mapping, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    if raw.get("pretrain") is not None and not isinstance(raw["pretrain"], dict):
        raise HepfmError(f"{source}: 'pretrain' must be a mapping, got {show(raw['pretrain'])}")
    if raw.get("pretrain") is None:
        raw["pretrain"] = {}
    if pretrain_data is not None:
        raw["pretrain"]["data"] = str(pretrain_data)
    if not raw["pretrain"].get("data"):
        raise HepfmError(f"{source}: a scaling study needs pretrain.data (the store whose events it subsamples)")
    cfg = parse_config(raw, source)
    pretrained = [s for s in cfg.strategies if STRATEGIES[s][0] is not None]
    if not pretrained:
        raise HepfmError(f"{source}: a scaling study needs at least one pretrained strategy beside {BASELINE}")
    if cfg.pretrained:
        raise HepfmError(f"{source}: a scaling study pretrains its own backbones; remove pretrain."
                         f"{', pretrain.'.join(cfg.pretrained)}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, out) or HepfmError(f"{out}: cannot create the scaling folder "
                                                 f"({exc.strerror or exc})") from None
    with exclusive_lock(out, "scaling folder"):  # each size's study locks its own folder inside
        return _run_sizes(raw, cfg, out, sorted(set(pretrain_events)), source, device, bf16, progress, console,
                          reports, pretrained)


def _run_sizes(raw: dict, cfg, out: Path, sizes: list[int], source: str, device: str, bf16: bool | None,
               progress: bool, console: Console, reports: bool, pretrained: list[str]) -> list[dict]:
    from hepfm.study.report import write_report
    from hepfm.study.run import generate_stores, run_study

    generate_stores(cfg, out, console, progress)  # the downstream stores, once (pretrain.data is given)
    tasks = _external_tasks(raw, cfg, out)
    first = out / f"pretrain-{sizes[0]}"
    rows = []
    for n in sizes:
        here = out / f"pretrain-{n}"
        sized = copy.deepcopy(raw)
        sized["tasks"] = tasks
        sized.setdefault("pretrain", {})["max_events"] = per_process_events(cfg.pretrain_data, n)
        sized_cfg = parse_config(sized, f"{source} (pretraining size {n})")
        sized_cfg.device, sized_cfg.bf16 = device, bf16
        if n != sizes[0]:
            StudyLayout(here).link_from(StudyLayout(first), tasks, cfg.sizes, [BASELINE])
        console.print(f"[bold]pretraining size {n}[/] ({sized['pretrain']['max_events']} events per process)")
        state = run_study(sized_cfg, here, progress=progress, console=console)
        if state.failures:
            raise HepfmError(f"{len(state.failures)} cell(s) of pretraining size {n} failed (see {here}); rerun to "
                             "retry them")
        if reports:
            write_report(sized_cfg, here)
        rows += scaling_rows(sized_cfg, here, n, pretrained)
    write_scaling(rows, out)
    return rows


def scaling_rows(cfg, folder: Path, pretrain_events: int, strategies) -> list[dict]:
    """One pretraining size's study (``cfg`` run into ``folder``) as rows of the scaling table: each strategy's
    gain over the baseline, with its error, per metric, task and training size."""
    from hepfm.study.report import collect, table_one

    cells = collect(cfg, folder)
    rows = []
    for metric in ("accuracy", "auc"):
        for row in table_one(cfg, cells, metric, folder):
            for s in strategies:
                if f"gain_{s}" in row:
                    rows.append({"pretrain_events": pretrain_events, "task": row["task"], "size": row["size"],
                                 "metric": metric, "strategy": s, "baseline": row["baseline"],
                                 "baseline_std": row["baseline_std"], "gain": row[f"gain_{s}"],
                                 "gain_err": row[f"gain_{s}_err"], "n_seeds": row[f"{s}_n_seeds"]})
    return rows


def write_scaling(rows: list[dict], out: Path) -> None:
    """``scaling.csv``, ``scaling.md`` and one plot per (metric, task, training size) of the gains against N."""
    from hepfm.eval.plots import gain_vs_pretraining_size

    if not rows:
        return
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / SCALING_CSV, text.getvalue())
    lines = ["| metric | task | size/class | pretraining events | strategy | baseline (%) | gain (pts) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['metric']} | {r['task']} | {r['size']} | {r['pretrain_events']:,} | {r['strategy']} | "
                     f"{100 * r['baseline']:.2f} ± {100 * r['baseline_std']:.2f} | "
                     f"{100 * r['gain']:+.2f} ± {100 * r['gain_err']:.2f} |")
    atomic_write_text(out / SCALING_MD, "\n".join(lines) + "\n")
    for metric in {r["metric"] for r in rows}:
        for task, size in {(r["task"], r["size"]) for r in rows}:
            series: dict[str, list[tuple]] = {}
            for r in rows:
                if (r["metric"], r["task"], r["size"]) == (metric, task, size):
                    series.setdefault(r["strategy"], []).append((r["pretrain_events"], r["gain"], r["gain_err"]))
            gain_vs_pretraining_size(series, out / f"scaling_{metric}_{task}_{size}.png", metric,
                                     f"{task}, {size} events per class")
