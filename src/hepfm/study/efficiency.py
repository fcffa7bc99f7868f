"""Compute efficiency of fine-tuning (arXiv:2412.10665, Fig. 1 and the break-even task count), measured fairly:
see :func:`fair_efficiency` (optimizer steps to the baseline's first arrival at its final accuracy, not the
baseline's total training time).

A training history is a list of per-epoch dicts (one per row of the trainer's ``history.csv``) with at
least ``epoch``, ``wall_time_s`` (cumulative seconds since the start of training, at the end of that
epoch) and ``val_accuracy``. An optional ``best`` column flags the epoch(s) at which a new best
checkpoint was saved; the last flagged epoch is the one restored at the end of training.
"""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

REQUIRED = ("epoch", "wall_time_s", "val_accuracy")
_TRUE = {"1", "1.0", "true", "yes", "y", "t"}


def _parse(value: str):
    if value is None:
        return None
    text = value.strip()
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_history(path: str | Path) -> list[dict]:
    """Read a trainer ``history.csv`` into per-epoch dicts; numbers parsed, empty cells become None."""
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (have: {reader.fieldnames})")
        rows = [{k: _parse(v) for k, v in row.items() if k is not None} for row in reader]
    return _validated(rows, str(path))


def _validated(history, name: str = "history") -> list[dict]:
    rows = list(history)
    if not rows:
        raise ValueError(f"{name}: empty training history")
    for i, row in enumerate(rows):
        for key in REQUIRED:
            value = row.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
                raise ValueError(f"{name}: row {i} has no numeric {key!r} (got {value!r})")
    rows.sort(key=lambda r: r["epoch"])
    times = [r["wall_time_s"] for r in rows]
    if any(b < a for a, b in itertools.pairwise(times)):
        raise ValueError(f"{name}: wall_time_s must be cumulative (non-decreasing with epoch)")
    return rows


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return bool(value) and not (isinstance(value, float) and math.isnan(value))


def time_to_reach(history, target_accuracy: float) -> float | None:
    """Cumulative wall time at the end of the first epoch with ``val_accuracy >= target`` (None if never)."""
    for row in _validated(history):
        if row["val_accuracy"] >= target_accuracy:
            return float(row["wall_time_s"])
    return None


def final_accuracy(history, best_epoch: int | None = None) -> float:
    """Validation accuracy of the model a training run ends with (its restored best checkpoint).

    In order of precedence: the val_accuracy of epoch ``best_epoch`` if given (e.g. the trainer's
    ``FitResult.best_epoch``); else, if rows carry a ``best`` field, that of the last epoch flagged best;
    else (or if no epoch is flagged) the maximum val_accuracy over the history. The checkpoint is chosen
    on validation loss, so the maximum can slightly overstate the restored model's accuracy.
    """
    rows = _validated(history)
    if best_epoch is not None:
        match = [r for r in rows if r["epoch"] == best_epoch]
        if not match:
            raise ValueError(f"best_epoch {best_epoch} not in history (epochs {rows[0]['epoch']}..{rows[-1]['epoch']})")
        return float(match[-1]["val_accuracy"])
    flagged = [r for r in rows if _truthy(r.get("best"))]
    if flagged:
        return float(flagged[-1]["val_accuracy"])
    return float(max(r["val_accuracy"] for r in rows))


def total_time(history) -> float:
    """Total training wall time: the cumulative wall time of the last epoch (patience epochs included)."""
    return float(_validated(history)[-1]["wall_time_s"])


def break_even_tasks(pretrain_time_s: float, baseline_times_s: list, finetune_times_s: list) -> int | float:
    """Number of downstream tasks N at which pretraining + N fine-tunings costs no more than N trainings
    from scratch: ceil(pretrain / (mean baseline time - mean fine-tune time)); inf if fine-tuning saves
    nothing on average. Returns an int-valued number (or math.inf).

    Note: with the paper's averages (pretrain 45.5 GPU h, baseline 2.94 GPU h, fine-tune 38% of it) this
    gives 25; the paper quotes 41, which is what pretrain / (0.38 x 2.94) gives.
    """
    if pretrain_time_s < 0 or math.isnan(pretrain_time_s):
        raise ValueError(f"pretrain_time_s must be non-negative, got {pretrain_time_s}")
    if len(baseline_times_s) == 0 or len(finetune_times_s) == 0:
        raise ValueError("baseline_times_s and finetune_times_s must not be empty")
    if any(not t >= 0 for t in (*baseline_times_s, *finetune_times_s)):
        raise ValueError("training times must be non-negative numbers")
    saving = sum(baseline_times_s) / len(baseline_times_s) - sum(finetune_times_s) / len(finetune_times_s)
    if saving <= 0:
        return math.inf
    return math.ceil(pretrain_time_s / saving)


def epoch_to_reach(history, target_accuracy: float) -> int | None:
    """The first epoch whose ``val_accuracy >= target`` (None if never)."""
    for row in _validated(history):
        if row["val_accuracy"] >= target_accuracy:
            return int(row["epoch"])
    return None


def chance_level(accuracy: float, n_val: int, sigmas: float = 2.0) -> bool:
    """Whether a validation accuracy on ``n_val`` balanced events is within ``sigmas`` binomial errors of 50%."""
    return accuracy - 0.5 < sigmas * math.sqrt(0.25 / max(n_val, 1))


def fair_efficiency(baseline: dict, finetuned: dict, fraction: float = 0.99) -> dict:
    """Fig. 1, fairly: the cost for a fine-tuned run to reach ``fraction`` x the baseline's final validation
    accuracy, against the cost at which the baseline *first* reached that final accuracy.

    ``baseline`` and ``finetuned`` hold ``history`` (per-epoch rows), ``best_epoch``, ``steps_per_epoch`` and
    ``n_train`` (events per epoch); the baseline also ``n_val``. Costs are optimizer steps, events seen and wall
    time (secondary: it depends on the machine's load). The reference is not the baseline's total training,
    whose patience epochs would flatter fine-tuning. ``reached`` is False when the fine-tuned run never gets
    there; ``meaningless`` is True when the baseline's final accuracy is at chance level (then any model
    reaches the target at once).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    base_hist, ft_hist = _validated(baseline["history"]), _validated(finetuned["history"])
    final = final_accuracy(base_hist, baseline["best_epoch"])
    ref_epoch = epoch_to_reach(base_hist, final)
    by_epoch = {r["epoch"]: r for r in base_hist}
    out = {"baseline_final_accuracy": final, "target": fraction * final,
           "meaningless": chance_level(final, baseline["n_val"]), "baseline_epoch": ref_epoch,
           "baseline_steps": ref_epoch * baseline["steps_per_epoch"],
           "baseline_events": ref_epoch * baseline["n_train"],
           "baseline_time_s": float(by_epoch[ref_epoch]["wall_time_s"])}
    epoch = epoch_to_reach(ft_hist, fraction * final)
    out["reached"] = epoch is not None
    if epoch is None:
        return {**out, "epoch": None, "steps": None, "events": None, "time_s": None,
                "step_fraction": None, "event_fraction": None, "time_fraction": None}
    row = {r["epoch"]: r for r in ft_hist}[epoch]
    steps, events = epoch * finetuned["steps_per_epoch"], epoch * finetuned["n_train"]
    time_s = float(row["wall_time_s"])
    return {**out, "epoch": epoch, "steps": steps, "events": events, "time_s": time_s,
            "step_fraction": steps / out["baseline_steps"], "event_fraction": events / out["baseline_events"],
            "time_fraction": time_s / out["baseline_time_s"] if out["baseline_time_s"] > 0 else None}


def baseline_events_for(sizes: list[int], baseline: list[float], target: float) -> tuple[str, float]:
    """Training events per class the baseline needs to reach accuracy ``target``, read off its curve.

    The curve (mean accuracy at each size) is made non-decreasing (the best accuracy reached at or below each
    size) and interpolated linearly in log(size). Returns ``("=", n)``, or ``("<=", smallest size)`` when the
    baseline already reaches ``target`` at its smallest size, or ``(">", largest size)`` when it never does.
    """
    if len(sizes) != len(baseline) or not sizes:
        raise ValueError("sizes and baseline must have the same, non-zero length")
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    xs = [math.log(sizes[i]) for i in order]
    ys = list(itertools.accumulate((baseline[i] for i in order), max))
    if target <= ys[0]:
        return "<=", float(sizes[order[0]])
    if target > ys[-1]:
        return ">", float(sizes[order[-1]])
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(xs, ys, strict=True)):
        if y0 < target <= y1:
            return "=", math.exp(x0 + (x1 - x0) * (target - y0) / (y1 - y0))
    raise AssertionError("unreachable: target lies within the curve")
